"""The trading mode machine: every transition, the FAILSAFE latch and the degradation rule.

This file is the one statement of how the mode moves. ``TRANSITIONS`` lists every allowed
transition; ``ModeMachine`` applies them and holds the rules that decide them:

- Start: STARTUP goes to READY, unless the journal's last transition left FAILSAFE latched
  (the last mode was FAILSAFE, or SHUTDOWN straight from FAILSAFE); then STARTUP goes to
  FAILSAFE and the flatten procedure runs again.
- Restart: a machine rebuilt after its actor crashed (the process still running) never
  comes back more permissive than it was (``restore``): FAILSAFE latched stays FAILSAFE,
  DEGRADED comes back DEGRADED (STARTUP -> DEGRADED) with the degradations still in the
  window, LIVE and READY come back READY (LIVE again only once the venues are ready).
- READY goes to LIVE as soon as the venues are ready (``core.venues.VenueBook.ready``: by
  default at least one venue connected and reconciled).
- Degradation: in LIVE or DEGRADED, each degradation (one incident, see ``core.incidents``)
  is counted in a sliding window of ``degradation_window_s``; the
  ``degradations_to_failsafe``-th within the window goes to FAILSAFE, any other one takes
  LIVE to DEGRADED (and is only noted while DEGRADED). An incident that only halts its own
  venue (an outage) is counted without leaving LIVE (``enter=False``). In any other mode a
  degradation is ignored.
- Venues lost: LIVE goes to DEGRADED, without counting, when the venues stop being ready.
- Recovery: DEGRADED returns to LIVE once the venues are ready, none is unreconciled, and no
  degradation came for ``recover_after_s``.
- The latch: FAILSAFE is entered from every mode but SHUTDOWN (from STARTUP and READY too:
  an emergency before trading starts still latches it). Once latched, a further trigger
  changes nothing but may re-run the flatten procedure when asked to (an operator).
- The reset rule: only an operator reset leaves FAILSAFE, only to READY, and only once the
  failsafe has reported every venue flat after the latch was set. A reset clears the
  degradation window.
- SHUTDOWN is reachable from every mode and leads nowhere.

Time is passed in (monotonic seconds); the machine has no clock, no I/O and no actors. The
caller journals, logs and publishes each ``ModeChange`` it returns, in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from messages import Mode, ModeChanged

TRANSITIONS: Mapping[Mode, frozenset[Mode]] = {
    Mode.STARTUP: frozenset({Mode.READY, Mode.DEGRADED, Mode.FAILSAFE, Mode.SHUTDOWN}),
    Mode.READY: frozenset({Mode.LIVE, Mode.FAILSAFE, Mode.SHUTDOWN}),
    Mode.LIVE: frozenset({Mode.DEGRADED, Mode.FAILSAFE, Mode.SHUTDOWN}),
    Mode.DEGRADED: frozenset({Mode.LIVE, Mode.FAILSAFE, Mode.SHUTDOWN}),
    Mode.FAILSAFE: frozenset({Mode.READY, Mode.SHUTDOWN}),
    Mode.SHUTDOWN: frozenset(),
}
"""Every allowed transition: ``TRANSITIONS[a]`` holds the modes reachable from ``a``.
STARTUP -> FAILSAFE restores a latch found in the journal; STARTUP -> DEGRADED restores
DEGRADED after a restart of the governing actor (``ModeMachine.restore``); READY -> FAILSAFE is an
emergency before any venue is up; FAILSAFE -> READY is the operator reset (see
``ModeMachine.reset``)."""

TRADING_MODES: frozenset[Mode] = frozenset({Mode.LIVE, Mode.DEGRADED})
"""Modes in which strategies' orders may pass (DEGRADED: only those that reduce)."""


class ForbiddenTransition(ValueError):
    """A transition ``TRANSITIONS`` does not allow."""


@dataclass(frozen=True, slots=True)
class ModeChange:
    """One transition made: to be journaled, logged and published, in order."""

    previous: Mode
    """Mode before."""
    current: Mode
    """Mode after."""
    reason: str
    """Why, in words."""


@dataclass(frozen=True, slots=True)
class ModeRules:
    """The numbers of the degradation rule. A ``degradations_to_failsafe`` of 0 never
    escalates."""

    degradations_to_failsafe: int = 3
    """Degradations within the window that go to FAILSAFE."""
    degradation_window_s: float = 300.0
    """Window of the degradation count, seconds (inclusive)."""
    recover_after_s: float = 10.0
    """Quiet time before DEGRADED returns to LIVE, seconds."""


@dataclass(slots=True)
class Degradation:
    """What one degradation did."""

    change: ModeChange | None = None
    """LIVE -> DEGRADED, when it happened."""
    escalate: str = ""
    """Non-empty: the window is full; the caller enters FAILSAFE with this reason."""
    noted: bool = False
    """Counted while already DEGRADED (no transition)."""


@dataclass(slots=True)
class FailsafeEntry:
    """What a FAILSAFE trigger did."""

    change: ModeChange | None = None
    """The transition into FAILSAFE, when the latch was newly set."""
    flatten: bool = False
    """True: the caller asks the failsafe to run its procedure."""
    already: bool = False
    """True: FAILSAFE was already latched."""


@dataclass(slots=True)
class Reset:
    """The answer to an operator reset."""

    change: ModeChange | None
    """FAILSAFE -> READY when the reset was allowed."""
    refusal: str = ""
    """Why the reset was refused, when it was."""


def latched_in(last: ModeChanged | None) -> bool:
    """True when ``last`` (the journal's last transition) leaves FAILSAFE latched: the mode
    was FAILSAFE, or the service stopped straight from FAILSAFE."""
    if last is None:
        return False
    return last.current is Mode.FAILSAFE or (last.current is Mode.SHUTDOWN and last.previous is Mode.FAILSAFE)


@dataclass(slots=True)
class ModeMachine:
    """The trading mode and the rules that move it (see the module text)."""

    rules: ModeRules = field(default_factory=ModeRules)
    """The degradation rule's numbers."""
    mode: Mode = Mode.STARTUP
    """The current mode."""
    failsafe_flat: bool = False
    """True once the failsafe reported every venue flat since FAILSAFE was last entered."""
    _degradations: deque[float] = field(default_factory=deque)
    _last_degradation: float = 0.0

    @property
    def latched(self) -> bool:
        """True while FAILSAFE holds."""
        return self.mode is Mode.FAILSAFE

    @property
    def degradations_in_window(self) -> int:
        """Degradations counted in the current window (as of the last one)."""
        return len(self._degradations)

    def can(self, target: Mode) -> bool:
        """True when the table allows the current mode -> ``target``."""
        return target in TRANSITIONS[self.mode]

    def transition(self, target: Mode, reason: str) -> ModeChange:
        """Move to ``target``; ``ForbiddenTransition`` when the table does not allow it."""
        if target not in TRANSITIONS[self.mode]:
            raise ForbiddenTransition(f"mode transition {self.mode} -> {target} is not allowed ({reason})")
        change = ModeChange(previous=self.mode, current=target, reason=reason)
        self.mode = target
        if target is Mode.FAILSAFE:
            self.failsafe_flat = False
        return change

    def start(self, last: ModeChanged | None) -> ModeChange:
        """Leave STARTUP: to FAILSAFE when ``last`` leaves the latch set, else to READY."""
        if latched_in(last):
            return self.transition(Mode.FAILSAFE, "restored: FAILSAFE is latched until an operator reset")
        return self.transition(Mode.READY, "started")

    def restore(self, last: ModeChanged | None, degradations: Sequence[float] = (),
                last_degradation: float | None = None, why: str = "restarted") -> ModeChange:
        """Leave STARTUP after a restart of the governing actor within the running process:
        back to the mode ``last`` (the journal's last transition) left, never a more
        permissive one. FAILSAFE latched stays FAILSAFE; DEGRADED stays DEGRADED; SHUTDOWN
        stays SHUTDOWN; LIVE, READY and anything else go to READY (LIVE again once the
        venues are ready). ``degradations`` (monotonic times, oldest first) are the ones
        still counted in the window, ``last_degradation`` the time of the last one (the
        recovery quiet time runs from it)."""
        self._degradations.extend(sorted(degradations))
        if last_degradation is not None:
            self._last_degradation = last_degradation
        elif self._degradations:
            self._last_degradation = self._degradations[-1]
        before = last.current if last is not None else None
        if latched_in(last):
            return self.transition(Mode.FAILSAFE, f"{why}: FAILSAFE is latched until an operator reset")
        if before is Mode.DEGRADED:
            return self.transition(Mode.DEGRADED, f"{why}: restored DEGRADED "
                                                  f"({len(self._degradations)} degradation(s) in the window)")
        if before is Mode.SHUTDOWN:
            return self.transition(Mode.SHUTDOWN, f"{why}: the service was stopping")
        was = f" (was {before})" if before is not None else ""
        return self.transition(Mode.READY, f"{why}: READY until the venues are ready again{was}")

    def venues_up(self, ready: bool, why: str = "venues connected and reconciled") -> ModeChange | None:
        """READY -> LIVE once the venues are ``ready``."""
        if self.mode is Mode.READY and ready:
            return self.transition(Mode.LIVE, why)
        return None

    def venues_lost(self, reason: str) -> ModeChange | None:
        """LIVE -> DEGRADED when the venues are no longer ready (not a counted degradation)."""
        if self.mode is Mode.LIVE:
            return self.transition(Mode.DEGRADED, reason)
        return None

    def degrade(self, reason: str, now: float, *, enter: bool = True) -> Degradation:
        """Count one degradation at ``now`` (see the degradation rule); ``enter=False``
        counts it (and may escalate) without taking LIVE to DEGRADED."""
        if self.mode not in TRADING_MODES:
            return Degradation()
        escalate = self._count(reason, now)
        if escalate:
            return Degradation(escalate=escalate)
        if self.mode is Mode.LIVE and enter:
            return Degradation(change=self.transition(Mode.DEGRADED, reason))
        return Degradation(noted=True)

    def degrade_restart(self, reason: str, now: float, *, trading: bool) -> Degradation:
        """Count a core actor restart at ``now`` as one degradation, without changing the
        mode (as ``degrade(enter=False)``), when trading was under way before it:
        ``trading`` says the mode before the restart was LIVE or DEGRADED (a restored
        machine may be READY meanwhile). Outside trading it is not counted."""
        if not trading and self.mode not in TRADING_MODES:
            return Degradation()
        if self.mode not in TRADING_MODES | {Mode.READY}:
            return Degradation()
        escalate = self._count(reason, now)
        return Degradation(escalate=escalate) if escalate else Degradation(noted=True)

    def _count(self, reason: str, now: float) -> str:
        """Add a degradation at ``now`` to the window; the escalation reason when full."""
        self._last_degradation = now
        window = self._degradations
        window.append(now)
        while window and now - window[0] > self.rules.degradation_window_s:
            window.popleft()
        limit = self.rules.degradations_to_failsafe
        if limit > 0 and len(window) >= limit:
            return f"{len(window)} degradations within {self.rules.degradation_window_s}s; last: {reason}"
        return ""

    def recover(self, now: float, ready: bool) -> ModeChange | None:
        """DEGRADED -> LIVE when the venues are ``ready`` (the caller also requires none
        unreconciled) and no degradation came for ``recover_after_s``."""
        if (self.mode is Mode.DEGRADED and ready
                and now - self._last_degradation >= self.rules.recover_after_s):
            return self.transition(Mode.LIVE, f"no degradation for {self.rules.recover_after_s}s")
        return None

    def enter_failsafe(self, reason: str, *, notify: bool = True, rerun: bool = False) -> FailsafeEntry:
        """Latch FAILSAFE. ``notify``: the flatten procedure should run (newly latched, or
        ``rerun`` asked for); nothing happens in SHUTDOWN."""
        if self.mode is Mode.SHUTDOWN:
            return FailsafeEntry()
        if self.mode is Mode.FAILSAFE:
            return FailsafeEntry(flatten=notify and rerun, already=True)
        return FailsafeEntry(change=self.transition(Mode.FAILSAFE, reason), flatten=notify)

    def on_failsafe_report(self, flat: bool) -> None:
        """The failsafe's latest outcome: every venue flat or not."""
        self.failsafe_flat = flat

    def reset(self, operator: str) -> Reset:
        """The reset rule: FAILSAFE -> READY only once every venue was reported flat."""
        if self.mode is not Mode.FAILSAFE:
            return Reset(None, f"nothing to reset: mode is {self.mode}")
        if not self.failsafe_flat:
            return Reset(None, "refused: the venues are not confirmed flat yet")
        self._degradations.clear()
        return Reset(self.transition(Mode.READY, f"operator reset by {operator}"))

    def shutdown(self, reason: str) -> ModeChange | None:
        """Go to SHUTDOWN (allowed from every mode); None when already there."""
        if self.mode is Mode.SHUTDOWN:
            return None
        return self.transition(Mode.SHUTDOWN, reason)
