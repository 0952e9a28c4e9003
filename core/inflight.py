"""Orders in flight: sent to a venue and not yet answered.

Every order a connector writes to its venue is tracked from the moment it is sent until
the connector delivers the venue's first word about it (accepted, rejected, filled,
cancelled, expired). An order still unanswered ``timeout_s`` after it was sent is due a
status query at the venue; each query that brings no answer within another ``timeout_s``
is followed by the next, up to ``retries`` queries. When the last one has gone
unanswered for ``timeout_s`` the order is given up: the policy (carried out by the
connector, see docs/operations.md "In-flight orders") cancels it at the venue, ends it
with a terminal event and asks for an immediate reconciliation. So an order sent while
the session stays up is resolved, by the venue or by the policy, within
``timeout_s * (retries + 1)`` of being sent.

Queries are never due while the session is down: losing the session holds every clock,
and the session coming back restarts each order's wait from that moment (a full
``timeout_s`` before the next query; the reconnecting connector's own resynchronisation
usually answers first). Queries already spent stay spent, so a flapping session cannot
keep an order in flight forever.

Pure logic: no clock of its own (``now`` is passed in, monotonic seconds), no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueryStatus:
    """Ask the venue for the status of one order."""

    client_order_id: str
    """The order to ask about."""
    attempt: int
    """Which query this is for the order: 1 for the first."""


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Every query went unanswered: the order is resolved by the policy."""

    client_order_id: str
    """The order given up."""
    queries: int
    """Status queries sent for it (all unanswered)."""
    waited_s: float
    """Seconds since it was sent."""

    @property
    def text(self) -> str:
        """The words of the terminal event that ends the order."""
        if self.queries:
            return (f"lost in flight: no answer to {self.queries} status "
                    f"quer{'y' if self.queries == 1 else 'ies'} in {self.waited_s:.1f}s")
        return f"lost in flight: no answer in {self.waited_s:.1f}s (no status query configured)"


InflightAction = QueryStatus | GiveUp
"""What ``InflightOrders.due`` asks the connector to do."""


@dataclass(frozen=True, slots=True)
class Answered:
    """An order in flight that the venue answered."""

    client_order_id: str
    """The order answered."""
    queries: int
    """Status queries it took (0: answered before any)."""
    waited_s: float
    """Seconds from sending to the answer."""


@dataclass(slots=True)
class _InFlight:
    sent_at: float
    due_at: float
    queries: int = 0


class InflightOrders:
    """The orders one connector sent and its venue has not answered yet."""

    __slots__ = ("_orders", "_up", "retries", "timeout_s")

    def __init__(self, timeout_s: float, retries: int) -> None:
        if not math.isfinite(timeout_s) or timeout_s <= 0:
            raise ValueError(f"inflight_timeout_s: must be finite and above 0, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"inflight_retries: must not be negative, got {retries}")
        self.timeout_s = timeout_s
        self.retries = retries
        self._orders: dict[str, _InFlight] = {}
        self._up = True

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._orders

    @property
    def up(self) -> bool:
        """True while the session is up (queries may be due)."""
        return self._up

    def sent(self, client_order_id: str, now: float) -> None:
        """The order was written to the venue at ``now`` (``now`` never goes back: a
        monotonic clock). An id already in flight keeps its first sending (a duplicate id is
        the venue's to refuse).

        Every wait is ``timeout_s`` long and starts at the latest moment seen, so appending
        keeps the orders in the order they fall due: ``next_due`` and ``due`` look at the
        front only, however many orders are in flight."""
        if client_order_id not in self._orders:
            self._orders[client_order_id] = _InFlight(sent_at=now, due_at=now + self.timeout_s)

    def answered(self, client_order_id: str, now: float) -> Answered | None:
        """The venue said something about the order (any order event): it is no longer in
        flight. None when it was not (already answered, given up, or never tracked)."""
        entry = self._orders.pop(client_order_id, None)
        if entry is None:
            return None
        return Answered(client_order_id, entry.queries, max(now - entry.sent_at, 0.0))

    def session_lost(self) -> None:
        """The session is down: nothing is due until it is back."""
        self._up = False

    def session_up(self, now: float) -> None:
        """The session is back at ``now``: every order waits a full timeout from now."""
        self._up = True
        for entry in self._orders.values():
            entry.due_at = now + self.timeout_s

    def due(self, now: float) -> list[InflightAction]:
        """What is due at ``now``, in the order it fell due: a status query for an order
        whose wait ran out with queries left, a give-up for one whose queries are spent (it
        is no longer tracked). Nothing while the session is down."""
        if not self._up:
            return []
        actions: list[InflightAction] = []
        # The orders are kept in the order they fall due (see ``sent``): only the ones
        # at the front are looked at.
        while self._orders:
            client_order_id, entry = next(iter(self._orders.items()))
            if entry.due_at > now:
                break
            del self._orders[client_order_id]
            if entry.queries < self.retries:
                entry.queries += 1
                entry.due_at = now + self.timeout_s
                self._orders[client_order_id] = entry  # to the back: due last
                actions.append(QueryStatus(client_order_id, entry.queries))
            else:
                actions.append(GiveUp(client_order_id, entry.queries, max(now - entry.sent_at, 0.0)))
        return actions

    def next_due(self) -> float | None:
        """When something is next due (monotonic seconds); None while nothing can be (no
        order in flight, or the session down)."""
        if not self._up or not self._orders:
            return None
        return next(iter(self._orders.values())).due_at

    def in_flight(self) -> list[str]:
        """Client order ids in flight, in the order they fall due."""
        return list(self._orders)
