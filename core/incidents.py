"""Incidents: one degradation per condition, from when it starts until it clears.

A venue outage, a stale feed or a persisting crossed market produces many signals (a
``ConnectorDown`` per failed restart, a finding re-raised after every cool-down); the
degradation rule must count it once. ``IncidentBook`` keys each condition by
(kind, venue, symbol): the first signal of a key opens an incident (the caller counts one
degradation), every further one while it is open only updates it.

How an incident clears depends on its kind:

- ``venue_down`` (``VENUE_DOWN``): the connector is up again (``ConnectorUp``);
- ``feed_stale``: market data from the venue again;
- ``crossed_market``: an uncrossed quote of the symbol at the venue;
- ``reconciliation_mismatch``: a matching reconciliation of the venue;
- any other kind (a price spike, slippage, ...: conditions with no signal of their end):
  ``quiet_s`` seconds without the finding being raised again.

A stale feed at a venue whose outage is open is that outage (``key_for``). The incidents
open at a venue, outages and mismatches aside, are its safety findings (``findings``: the
venue trades REDUCING while it has any).

A restart of a core actor (``CORE_RESTART``) is an incident of its own that opens and closes
at once (``note``). Every incident closed is also kept for the caller until it takes them
(``take_closed``: the governor journals them). A book rebuilt after its actor restarted is
given back the incidents that were open (``restore``); they count nothing again.

Time is passed in (monotonic seconds); the book has no clock and no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from messages import QuoteBatch

VENUE_DOWN = "venue_down"
"""The kind of an outage incident: a connector lost its venue, or cannot reach it."""
FEED_STALE = "feed_stale"
"""A venue's market data stopped (the safety monitor's kind)."""
CROSSED_MARKET = "crossed_market"
"""A crossed book (the safety monitor's kind)."""
RECONCILIATION_MISMATCH = "reconciliation_mismatch"
"""The journal and a venue disagree (the position keeper's kind)."""
CORE_RESTART = "core_restart"
"""A core actor (position keeper, risk governor, failsafe, safety monitor) was restarted by
its supervisor; the key's symbol names the actor."""

NOT_FINDINGS: frozenset[str] = frozenset({VENUE_DOWN, RECONCILIATION_MISMATCH, CORE_RESTART})
"""Kinds that halt a venue by its connection or reconciliation, not as safety findings."""
CLEARED_BY_QUOTES: frozenset[str] = frozenset({FEED_STALE, CROSSED_MARKET})
"""Kinds that market data clears."""
CLEARED_BY_SIGNAL: frozenset[str] = frozenset({
    VENUE_DOWN, FEED_STALE, CROSSED_MARKET, RECONCILIATION_MISMATCH,
})
"""Kinds that stay open until their recovery signal; every other kind clears after a quiet
time."""


class IncidentKey(NamedTuple):
    """What one incident is about."""

    kind: str
    """Kind of the condition (a safety event kind, or ``venue_down``)."""
    venue: str
    """Venue concerned; empty for none."""
    symbol: str = ""
    """Symbol concerned; empty for the whole venue."""


@dataclass(slots=True)
class Incident:
    """One open incident."""

    key: IncidentKey
    """What it is about."""
    opened: float
    """When it started, monotonic seconds."""
    last_seen: float
    """When it was last signalled, monotonic seconds."""
    reason: str
    """The first signal, in words."""
    signals: int = 1
    """Signals received while open (the first included)."""
    ref: int = 0
    """The caller's reference to it (the governor: its journal row); 0 for none."""

    def describe(self) -> str:
        """``kind venue/symbol`` for status and logs."""
        where = "/".join(part for part in (self.key.venue, self.key.symbol) if part)
        return f"{self.key.kind} {where}".rstrip()


class IncidentBook:
    """The open incidents (see the module text)."""

    def __init__(self, quiet_s: float) -> None:
        """``quiet_s``: how long an incident of a kind without a recovery signal stays open
        after it was last signalled."""
        if quiet_s < 0:
            raise ValueError(f"quiet_s must not be negative, got {quiet_s}")
        self.quiet_s = quiet_s
        self._open: dict[IncidentKey, Incident] = {}
        self.opened_total = 0
        """Incidents opened since the book was made."""
        self.signals_total = 0
        """Signals received since the book was made (opening ones included)."""
        self._closed: list[Incident] = []

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, key: object) -> bool:
        return key in self._open

    def signal(self, key: IncidentKey, now: float, reason: str) -> Incident | None:
        """One signal of ``key`` at ``now``: the new incident when this opens one (count it),
        None when the incident was already open."""
        self.signals_total += 1
        incident = self._open.get(key)
        if incident is not None:
            incident.last_seen = now
            incident.signals += 1
            return None
        incident = self._open[key] = Incident(key=key, opened=now, last_seen=now, reason=reason)
        self.opened_total += 1
        return incident

    def clear(self, kind: str, venue: str, symbols: Iterable[str] | None = None) -> list[Incident]:
        """Close the open incidents of ``kind`` at ``venue``: those of ``symbols`` only, or
        every one when ``symbols`` is None. The incidents closed."""
        if symbols is None:
            keys = [k for k in self._open if k.kind == kind and k.venue == venue]
        else:
            keys = [k for k in (IncidentKey(kind, venue, s) for s in symbols) if k in self._open]
        return self._close(keys)

    def expire(self, now: float) -> list[Incident]:
        """Close the incidents without a recovery signal not signalled for ``quiet_s``."""
        keys = [k for k, i in self._open.items()
                if k.kind not in CLEARED_BY_SIGNAL and now - i.last_seen >= self.quiet_s]
        return self._close(keys)

    def key_for(self, kind: str, venue: str, symbol: str = "") -> IncidentKey:
        """The incident a finding of ``kind`` belongs to: its own, or the open outage of
        its venue for a stale feed."""
        if kind == FEED_STALE and self.has(VENUE_DOWN, venue):
            return IncidentKey(VENUE_DOWN, venue)
        return IncidentKey(kind, venue, symbol)

    def watches_quotes(self, venue: str) -> bool:
        """True while market data from ``venue`` could clear one of its incidents."""
        return any(k.venue == venue and k.kind in CLEARED_BY_QUOTES for k in self._open)

    def on_quotes(self, batch: QuoteBatch) -> list[Incident]:
        """Market data from a venue: any ends its stale feed, an uncrossed quote ends its
        symbol's crossed book. The incidents closed."""
        venue = batch.venue
        closed: list[Incident] = []
        if batch.quotes or batch.trades:
            closed += self.clear(FEED_STALE, venue)
        uncrossed = {q.symbol for q in batch.quotes if q.bid <= q.ask}
        if uncrossed:
            closed += self.clear(CROSSED_MARKET, venue, uncrossed)
        return closed

    def findings(self, venue: str) -> list[str]:
        """The open safety findings of ``venue`` in words (outages and mismatches aside)."""
        return [i.describe() for k, i in self._open.items()
                if k.venue == venue and k.kind not in NOT_FINDINGS]

    def has(self, kind: str, venue: str) -> bool:
        """True while an incident of ``kind`` at ``venue`` is open (any symbol)."""
        return any(k.kind == kind and k.venue == venue for k in self._open)

    def at(self, venue: str) -> list[Incident]:
        """The open incidents of ``venue``, oldest first."""
        return [i for k, i in self._open.items() if k.venue == venue]

    def open(self) -> list[Incident]:
        """Every open incident, oldest first."""
        return list(self._open.values())

    # ---- restarts and the record of closed incidents ------------------------------------

    def _close(self, keys: Iterable[IncidentKey]) -> list[Incident]:
        closed = [self._open.pop(k) for k in keys]
        self._closed.extend(closed)
        return closed

    def take_closed(self) -> list[Incident]:
        """The incidents closed since the last call, oldest first (and forget them)."""
        closed, self._closed = self._closed, []
        return closed

    def note(self, key: IncidentKey, now: float, reason: str) -> Incident:
        """An incident that is over as soon as it happened (a core actor restart): counted
        in ``opened_total`` (the caller counts one degradation), never open."""
        self.opened_total += 1
        self.signals_total += 1
        return Incident(key=key, opened=now, last_seen=now, reason=reason)

    def restore(self, incidents: Iterable[Incident], opened_total: int = 0) -> None:
        """Give a rebuilt book the incidents that were open (their first signal already
        counted: nothing is counted again) and how many were opened before. An incident
        already open here keeps its own record."""
        for incident in incidents:
            self._open.setdefault(incident.key, incident)
        self.opened_total = max(self.opened_total, opened_total)
