"""What a restart of a core actor restores: the journal's facts merged into the state the
rebuilt risk governor starts from.

The supervision tree restarts a core actor that failed (the position keeper, the risk
governor, the failsafe, the safety monitor) and, by its strategy, the siblings after it; the
governor is then built afresh while the process, the journal and the venues' positions are
the same. A crash must never make it more permissive than it was, so a governor restarted
within the running process (``generation`` above 0) starts from ``restoration``:

- the mode the journal's last transition left (``core.modes.ModeMachine.restore``: FAILSAFE
  stays latched, DEGRADED stays DEGRADED, LIVE comes back READY and goes LIVE only once the
  venues are ready again);
- the degradations still in the escalation window (those counted since the last operator
  reset and within ``degradation_window_s`` of now), so the count towards FAILSAFE goes on;
- the incidents still open, each counted once already (a stale feed stays one incident
  until quotes come back, a mismatch until a reconciliation matches);
- per venue: whether it was up in this run, since when it is in an outage (the
  ``max_outage_s`` clock keeps running) and whether its last reconciliation was a mismatch
  (HALTED until one matches);
- an operator's pause (``OPERATOR_PAUSE`` open).

"This run" is everything journaled after the last ``SERVICE_START`` marker, which the
governor journals when it first starts in a process: a new process starts afresh (as it
always did: READY, or FAILSAFE when the latch is set), it does not inherit the incidents of
the process before it.

Wall clock times from the journal are turned into the caller's monotonic clock by their
age (``monotonic_of``). Nothing here reads a clock or a file: the caller passes them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from core.incidents import CORE_RESTART, VENUE_DOWN, Incident, IncidentKey
from messages import Mode, ModeChanged

SERVICE_START = "service_start"
"""Kind of the marker row journaled at the first start of the governor in a process."""
OPERATOR_PAUSE = "operator_pause"
"""Kind of the row open while an operator has paused trading (not an incident: it counts
nothing and is not listed among the incidents; a restarted governor stays paused)."""

CORE_ACTORS: tuple[str, ...] = ("position_keeper", "risk_governor", "failsafe", "safety_monitor")
"""The core actors, in start order: a restart of any is an alert and one incident."""


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """One incident as the journal holds it."""

    ref: int
    """Its row in the journal."""
    kind: str
    """Kind (see ``core.incidents``); ``SERVICE_START`` for the marker."""
    venue: str
    """Venue concerned; empty for none."""
    symbol: str
    """Symbol concerned (for ``core_restart``: the actor); empty for none."""
    reason: str
    """Its first signal, in words."""
    opened_ns: int
    """When it opened, wall clock ns."""
    closed_ns: int = 0
    """When it closed, wall clock ns; 0 while open."""
    counted: bool = False
    """It counted as a degradation (the mode was LIVE or DEGRADED)."""

    @property
    def key(self) -> IncidentKey:
        """What it is about."""
        return IncidentKey(self.kind, self.venue, self.symbol)


@dataclass(frozen=True, slots=True)
class JournalFacts:
    """What the journal says about this run."""

    last_mode: ModeChanged | None
    """The last journaled mode transition."""
    incidents: Sequence[IncidentRecord] = ()
    """This run's incidents, oldest first (the marker excluded)."""
    run_started_ns: int = 0
    """When this run started (the marker), wall clock ns."""
    modes: Sequence[ModeChanged] = ()
    """Recent mode transitions, oldest first (for the last operator reset)."""
    reconciled: Mapping[str, bool] = field(default_factory=dict)
    """Per venue compared in this run: whether its last reconciliation matched."""


@dataclass(frozen=True, slots=True)
class VenueMemory:
    """A venue's facts from before the restart."""

    ever_up: bool
    """It was up in this run."""
    down_since: float | None
    """Start of its open outage, monotonic seconds; None when none is open."""
    mismatch: bool
    """Its last reconciliation in this run disagreed."""


@dataclass(frozen=True, slots=True)
class Restoration:
    """The state a restarted governor starts from."""

    degradations: tuple[float, ...]
    """Degradations still in the window, monotonic seconds, oldest first."""
    last_degradation: float | None
    """The last degradation since the last reset, monotonic seconds; None for none."""
    incidents: tuple[Incident, ...]
    """The incidents still open."""
    opened_total: int
    """Incidents opened in this run."""
    venues: Mapping[str, VenueMemory]
    """Per configured venue, its facts."""
    last_mode: ModeChanged | None
    """The journal's last transition (``ModeMachine.restore`` decides the mode from it)."""
    paused: bool = False
    """An operator had paused trading."""
    pause_ref: int = 0
    """The journal row of that pause; 0 for none."""

    def describe(self) -> str:
        """One line for the log and the alert."""
        mode = self.last_mode.current if self.last_mode is not None else Mode.STARTUP
        held = [name for name, v in self.venues.items() if v.mismatch or v.down_since is not None]
        return (f"last mode {mode}, {len(self.degradations)} degradation(s) in the window, "
                f"{len(self.incidents)} open incident(s)"
                + (f", venues held: {', '.join(held)}" if held else "")
                + (", paused by an operator" if self.paused else ""))


def monotonic_of(wall_ns: int, now_wall_ns: int, now: float) -> float:
    """The monotonic time of a wall clock instant, by its age (never in the future)."""
    return now - max(0, now_wall_ns - wall_ns) / 1e9


def last_reset_ns(modes: Iterable[ModeChanged], since_ns: int = 0) -> int:
    """When an operator last reset FAILSAFE (FAILSAFE -> READY) at or after ``since_ns``;
    0 for never."""
    resets = [m.ts_ns for m in modes if m.previous is Mode.FAILSAFE and m.current is Mode.READY
              and m.ts_ns >= since_ns]
    return max(resets, default=0)


def restoration(facts: JournalFacts, venues: Iterable[str], *, now: float, now_wall_ns: int,
                window_s: float) -> Restoration:
    """Merge the journal's facts into the state a governor restarted at ``now`` (monotonic)
    / ``now_wall_ns`` (wall) starts from; ``window_s`` is the degradation window."""
    reset_ns = last_reset_ns(facts.modes, facts.run_started_ns)
    pauses = [r for r in facts.incidents if r.kind == OPERATOR_PAUSE]
    pause = next((r for r in reversed(pauses) if not r.closed_ns), None)
    real = [r for r in facts.incidents if r.kind != OPERATOR_PAUSE]
    counted = [r for r in real if r.counted and r.opened_ns >= reset_ns]
    in_window = tuple(sorted(monotonic_of(r.opened_ns, now_wall_ns, now) for r in counted
                             if now_wall_ns - r.opened_ns <= window_s * 1e9))
    last = max((monotonic_of(r.opened_ns, now_wall_ns, now) for r in counted), default=None)
    open_ = [r for r in real if not r.closed_ns and r.kind != CORE_RESTART]
    incidents = tuple(
        Incident(key=r.key, opened=monotonic_of(r.opened_ns, now_wall_ns, now), last_seen=now,
                 reason=r.reason, ref=r.ref)
        for r in open_
    )
    memory: dict[str, VenueMemory] = {}
    for venue in venues:
        outage = [r.opened_ns for r in open_ if r.kind == VENUE_DOWN and r.venue == venue]
        down_since = monotonic_of(min(outage), now_wall_ns, now) if outage else None
        matched = facts.reconciled.get(venue)
        memory[venue] = VenueMemory(ever_up=matched is not None or down_since is not None,
                                    down_since=down_since, mismatch=matched is False)
    return Restoration(degradations=in_window, last_degradation=last, incidents=incidents,
                       opened_total=len(real), venues=memory, last_mode=facts.last_mode,
                       paused=pause is not None, pause_ref=pause.ref if pause is not None else 0)


def new_restarts(generations: Mapping[str, int], recorded: Mapping[str, int]) -> list[tuple[str, int]]:
    """The core actors restarted and not recorded yet: (name, restarts not recorded) for
    each whose generation (restarts in this process) is above the restarts recorded, in
    start order."""
    found: list[tuple[str, int]] = []
    for name in CORE_ACTORS:
        missing = generations.get(name, 0) - recorded.get(name, 0)
        if missing > 0:
            found.append((name, missing))
    return found


RESTART_ALONG_S = 60.0
"""How long after a core actor restarted the restarts of the core actors after it count as
part of that one restart (the tree restarts them after it, each in turn)."""


@dataclass(frozen=True, slots=True)
class RestartEvent:
    """Core actors restarted, to be journaled, logged and (unless ``along``) counted once."""

    restarted: tuple[tuple[str, int], ...]
    """(actor, restarts) each, in start order; the first is the one that failed first."""
    along: bool = False
    """They restarted along with an earlier one that is already counted."""

    @property
    def first(self) -> str:
        """The actor that failed (as far as the start order tells)."""
        return self.restarted[0][0]

    @property
    def reason(self) -> str:
        """The alert, in words."""
        if self.along:
            return f"core actor {self.first} restarted along with an earlier one"
        others = [name for name, _ in self.restarted[1:]]
        return f"core actor {self.first} restarted" + (f" (with {', '.join(others)})" if others else "")

    def texts(self) -> list[tuple[str, str]]:
        """(actor, words) for each actor restarted."""
        return [(name, self.reason if i == 0 else f"core actor {name} restarted with {self.first}")
                for i, (name, _) in enumerate(self.restarted)]


@dataclass(slots=True)
class RestartLedger:
    """Which core actor restarts are new, and which one crash they belong to.

    A core actor's generation counts its restarts in this process; the ledger counts those
    already recorded, so a notice seen twice, or a restart recorded before the recorder
    itself restarted, is recorded once. The root restarts every child after the one that
    failed: the core actors after a restarted one are expected for ``along_s`` and recorded
    as restarted along with it (one crash, counted once). Time is passed in."""

    along_s: float = RESTART_ALONG_S
    """How long restarts after a counted one belong to it."""
    recorded: dict[str, int] = field(default_factory=dict)
    """Per core actor, its restarts recorded in this run."""
    _along: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Restarts recorded in this run."""
        return sum(self.recorded.values())

    def load(self, names: Iterable[str]) -> None:
        """Restarts already recorded in this run (one name per journaled restart)."""
        for name in names:
            self.recorded[name] = self.recorded.get(name, 0) + 1

    def own_start(self, name: str, generations: Mapping[str, int], now: float) -> RestartEvent | None:
        """The recorder ``name`` started with these generations (its own and those of the
        core actors before it): the restarts not recorded yet, as one event."""
        found = new_restarts(generations, self.recorded)
        self._take(found)
        self._expect_after(name, now)
        return RestartEvent(tuple(found)) if found else None

    def started(self, name: str, generation: int, now: float) -> RestartEvent | None:
        """A core actor started with ``generation``: a new restart, along with an earlier
        one or of its own; None when nothing is new."""
        found = new_restarts({name: generation}, self.recorded)
        if not found:
            return None
        self._take(found)
        along = self._along.pop(name, -1.0) >= now
        if not along:
            self._expect_after(name, now)
        return RestartEvent(tuple(found), along=along)

    def _take(self, found: list[tuple[str, int]]) -> None:
        for name, missing in found:
            self.recorded[name] = self.recorded.get(name, 0) + missing

    def _expect_after(self, name: str, now: float) -> None:
        if name not in CORE_ACTORS:
            return
        for later in CORE_ACTORS[CORE_ACTORS.index(name) + 1:]:
            self._along[later] = now + self.along_s
