"""Per-venue trading state: ACTIVE, REDUCING or HALTED, beside the global mode.

This file is the one statement of how a venue's state is derived. For each configured venue
``VenueBook`` holds three facts and derives the state from them, in this order:

- HALTED: its connector is not connected, or the venue has not reconciled since the
  connector came up, or its last reconciliation was a mismatch. Every new order to it is
  refused (the failsafe's own orders aside).
- REDUCING: connected and reconciled, but a safety incident is open at the venue (a stale
  feed, a crossed book, a spike, ...). Only orders that reduce a position pass.
- ACTIVE: connected, reconciled, no open incident at the venue. Orders pass (subject to the
  global mode and the other checks).

``ready`` answers whether the global mode may be LIVE: with ``live_when = "any"`` when at
least one venue is ACTIVE or REDUCING (connected and reconciled), with ``"all"`` when every
venue is. ``blocking_recovery`` names the venues that keep DEGRADED from returning to LIVE:
a venue whose last reconciliation mismatched, or one that is connected and has not
reconciled yet (a venue that is down is HALTED and must reconcile when it returns before it
trades again, but does not hold the other venues back).

Outages: a venue that was up and lost its connector is in an outage from then until its
connector is up again. ``overdue`` reports, once per outage, an outage longer than
``max_outage_s`` (the caller escalates to FAILSAFE). A venue that has never been up in this
process is HALTED but not in an outage: nothing was traded there by this process.

A reconciliation that arrives while the connector is down (the new session's, which can
overtake its ``ConnectorUp``) counts for the next session.

A book rebuilt after its actor restarted is given back, per venue, the facts that the new
connector sessions cannot tell it (``restore``): whether the venue was up in this run (so an
outage still starts when it goes down), since when it has been down (so ``max_outage_s``
runs on from the start of the outage, not from the restart), and whether its last
reconciliation was a mismatch (HALTED until one matches). Connection and reconciliation
are never restored: the restarted connectors connect and reconcile again.

Time is passed in (monotonic seconds); the book has no clock and no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class TradingState(StrEnum):
    """What a venue accepts."""

    ACTIVE = "ACTIVE"
    """Every order (subject to the global mode and the checks)."""
    REDUCING = "REDUCING"
    """Only orders that reduce a position."""
    HALTED = "HALTED"
    """No new order."""


LIVE_WHEN: frozenset[str] = frozenset({"any", "all"})
"""Values of ``live_when``: LIVE needs any venue, or every venue, connected and reconciled."""


@dataclass(frozen=True, slots=True)
class VenueChange:
    """A venue's state changed: to be logged and published."""

    venue: str
    """Venue."""
    previous: TradingState
    """State before."""
    current: TradingState
    """State after."""
    reason: str
    """Why, in words."""


@dataclass(slots=True)
class Venue:
    """The facts about one venue."""

    name: str
    """Venue (connector) name."""
    connected: bool = False
    """Its connector is up."""
    reconciled: bool = False
    """A matching reconciliation came since the connector last came up."""
    mismatch: bool = False
    """Its last reconciliation disagreed with the journal."""
    findings: tuple[str, ...] = ()
    """Open safety incidents at the venue, in words (REDUCING while any)."""
    ever_up: bool = False
    """Its connector has been up at least once."""
    down_since: float | None = None
    """Start of the current outage, monotonic seconds; None when up or never up."""
    outage_reported: bool = False
    """The current outage was reported overdue."""
    state: TradingState = TradingState.HALTED
    """The derived state (see the module text)."""
    reason: str = "not connected yet"
    """Why it is in that state, in words."""

    def derive(self) -> tuple[TradingState, str]:
        """The state its facts give, and why."""
        if not self.connected:
            return TradingState.HALTED, "connector down" if self.ever_up else "not connected yet"
        if self.mismatch:
            return TradingState.HALTED, "reconciliation mismatch"
        if not self.reconciled:
            return TradingState.HALTED, "not reconciled since connecting"
        if self.findings:
            return TradingState.REDUCING, "; ".join(self.findings)
        return TradingState.ACTIVE, "connected and reconciled"


@dataclass(slots=True)
class VenueBook:
    """Every configured venue's facts and state (see the module text)."""

    names: Iterable[str]
    """Configured venues, in order."""
    max_outage_s: float = 300.0
    """An outage longer than this is reported by ``overdue``; 0 never."""
    live_when: str = "any"
    """``any`` or ``all`` (see ``ready``)."""
    venues: dict[str, Venue] = field(init=False)
    """Per venue, its facts."""

    def __post_init__(self) -> None:
        if self.live_when not in LIVE_WHEN:
            raise ValueError(f"live_when must be one of {sorted(LIVE_WHEN)}, got {self.live_when!r}")
        if self.max_outage_s < 0:
            raise ValueError(f"max_outage_s must not be negative, got {self.max_outage_s}")
        self.venues = {name: Venue(name) for name in self.names}

    def state(self, venue: str) -> TradingState:
        """The venue's state; HALTED for a venue not configured."""
        known = self.venues.get(venue)
        return TradingState.HALTED if known is None else known.state

    def states(self) -> Mapping[str, TradingState]:
        """Every venue's state."""
        return {name: v.state for name, v in self.venues.items()}

    def reasons(self) -> Mapping[str, str]:
        """Why each venue is in its state."""
        return {name: v.reason for name, v in self.venues.items()}

    # ---- facts in ---------------------------------------------------------------------

    def on_up(self, venue: str) -> VenueChange | None:
        """The venue's connector is up (a new session: it must reconcile again unless its
        reconciliation already came)."""
        v = self.venues.get(venue)
        if v is None:
            return None
        v.connected = True
        v.ever_up = True
        v.down_since = None
        v.outage_reported = False
        return self._derive(v)

    def on_down(self, venue: str, now: float) -> VenueChange | None:
        """The venue's connector is down (lost its session, stopped, or failed to start)."""
        v = self.venues.get(venue)
        if v is None:
            return None
        if v.connected or (v.ever_up and v.down_since is None):
            v.down_since = now
        v.connected = False
        v.reconciled = False
        return self._derive(v)

    def on_reconciliation(self, venue: str, matched: bool) -> VenueChange | None:
        """The position keeper compared the journal with the venue."""
        v = self.venues.get(venue)
        if v is None:
            return None
        v.reconciled = matched
        v.mismatch = not matched
        return self._derive(v)

    def set_findings(self, venue: str, findings: Iterable[str]) -> VenueChange | None:
        """The open safety incidents at the venue, in words (none: not REDUCING)."""
        v = self.venues.get(venue)
        if v is None:
            return None
        v.findings = tuple(findings)
        return self._derive(v)

    def restore(self, venue: str, *, ever_up: bool, down_since: float | None,
                mismatch: bool) -> VenueChange | None:
        """Facts of ``venue`` from before a restart (see the module text); never marks it
        connected or reconciled."""
        v = self.venues.get(venue)
        if v is None:
            return None
        v.ever_up = v.ever_up or ever_up or down_since is not None
        if down_since is not None and not v.connected:
            v.down_since = down_since if v.down_since is None else min(v.down_since, down_since)
        v.mismatch = v.mismatch or mismatch
        if v.mismatch:
            v.reconciled = False
        return self._derive(v)

    # ---- what follows -------------------------------------------------------------------

    def ready(self) -> bool:
        """True when the global mode may be LIVE (see ``live_when``)."""
        open_ = [v.state is not TradingState.HALTED for v in self.venues.values()]
        if not open_:
            return False
        return all(open_) if self.live_when == "all" else any(open_)

    def blocking_recovery(self) -> list[str]:
        """Venues that keep DEGRADED from returning to LIVE: a mismatch, or connected and
        not reconciled yet."""
        return [name for name, v in self.venues.items() if v.mismatch or (v.connected and not v.reconciled)]

    def outage_s(self, venue: str, now: float) -> float | None:
        """How long the venue's current outage has lasted; None when not in one."""
        v = self.venues.get(venue)
        if v is None or v.down_since is None:
            return None
        return now - v.down_since

    def overdue(self, now: float) -> list[tuple[str, float]]:
        """Outages longer than ``max_outage_s`` not reported yet: (venue, seconds) each,
        reported once per outage."""
        found: list[tuple[str, float]] = []
        if not self.max_outage_s:
            return found
        for name, v in self.venues.items():
            if v.down_since is not None and not v.outage_reported and now - v.down_since > self.max_outage_s:
                v.outage_reported = True
                found.append((name, now - v.down_since))
        return found

    def _derive(self, v: Venue) -> VenueChange | None:
        state, reason = v.derive()
        previous = v.state
        v.state, v.reason = state, reason
        if state is previous:
            return None
        return VenueChange(venue=v.name, previous=previous, current=state, reason=reason)
