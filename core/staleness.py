"""Staleness of a venue session, late acknowledgements and order expiry: the rules every
connector applies alike.

``SessionProbe`` judges a session from request/response probes (FIX TestRequest, IB
``reqCurrentTime``, the ZeroMQ ``ping``): a probe goes out every ``interval_s``; once no
answer has come for ``interval_s + timeout_s`` a probe is overdue and the session is
**stale** (no new order may be written to it); an answer ends the staleness; after
``dead_after_s`` without an answer the session is **dead** (closed abortively and
reconnected). Staleness starts from the last answer, not from the last probe sent, so a
session that stops answering is stale at most ``interval_s + timeout_s`` after its last
answer, whatever the probes' rhythm.

``LateAcks`` keeps the time every order was written and says, when the venue first
acknowledges it, how late that was: a delay above ``warn_after_s`` is a late execution
(the connector raises a WARNING naming the order and the delay).

``expire_time_ns`` says when an order sent now stops being valid at the venue, for the
protocols that carry an expiry (FIX ExpireTime with TimeInForce GTD, IB goodTillDate, the
ZeroMQ ``expire_ns``).

Time is passed in: monotonic seconds for the probe, wall-clock nanoseconds for orders.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum

from messages import OrderType, SubmitOrder, TimeInForce

LATE_EXECUTION = "late_execution"
"""The kind of the WARNING safety event raised for an order acknowledged late."""

LATE_ACK_LIMIT = 10_000
"""Orders whose sending time ``LateAcks`` keeps by default; the oldest are forgotten."""


class Liveness(Enum):
    """What the probes say about a session."""

    LIVE = "live"
    """Answered within ``interval_s + timeout_s``: orders may be written."""
    STALE = "stale"
    """A probe is overdue: no new order may be written."""
    DEAD = "dead"
    """Silent for ``dead_after_s``: close the session abortively and reconnect."""


class SessionProbe:
    """Liveness of one session from its probe answers; no clock of its own."""

    def __init__(self, *, interval_s: float, timeout_s: float, dead_after_s: float,
                 now: float) -> None:
        for name, value in (("interval_s", interval_s), ("timeout_s", timeout_s),
                            ("dead_after_s", dead_after_s)):
            if not value > 0:
                raise ValueError(f"{name}: must be positive, got {value}")
        self.interval_s = interval_s
        """Seconds between probes."""
        self.timeout_s = timeout_s
        """How long a probe may go unanswered, beyond ``interval_s``, before it is overdue."""
        self.dead_after_s = dead_after_s
        """Silence after which the session is dead."""
        self.last_answer = now
        """When the last answer came (or the session opened)."""
        self.stale_since: float | None = None
        """When the session was first seen stale in this silence; None while live."""
        self._next_probe = now

    def restart(self, now: float) -> None:
        """A new session opened at ``now``: it starts live, with a probe due at once."""
        self.last_answer = now
        self.stale_since = None
        self._next_probe = now

    @property
    def overdue_after_s(self) -> float:
        """Silence after which a probe is overdue: ``interval_s + timeout_s``."""
        return self.interval_s + self.timeout_s

    def silent_s(self, now: float) -> float:
        """Seconds since the last answer."""
        return max(0.0, now - self.last_answer)

    def state(self, now: float) -> Liveness:
        """Live, stale or dead at ``now``."""
        silent = self.silent_s(now)
        if silent >= self.dead_after_s:
            return Liveness.DEAD
        if silent > self.overdue_after_s:
            return Liveness.STALE
        return Liveness.LIVE

    def takes_orders(self, now: float) -> bool:
        """True while no probe is overdue."""
        return self.state(now) is Liveness.LIVE

    def note(self, now: float) -> bool:
        """Record the state at ``now``; True the first time a silence is seen stale (or
        dead), so the caller logs the start of the staleness once."""
        if self.stale_since is None and self.state(now) is not Liveness.LIVE:
            self.stale_since = now
            return True
        return False

    def answered(self, now: float) -> float | None:
        """An answer came at ``now``. Returns how long the session had been stale (from
        when it was first seen stale), or None when it was not."""
        was = self.stale_since
        self.last_answer = max(self.last_answer, now)
        self.stale_since = None
        return None if was is None else max(0.0, now - was)

    def probe_due(self, now: float) -> bool:
        """True when the next probe should go out; the caller then calls ``sent``."""
        return now >= self._next_probe

    def sent(self, now: float) -> None:
        """A probe went out at ``now``; the next is due ``interval_s`` later."""
        self._next_probe = now + self.interval_s

    def next_probe_in(self, now: float) -> float:
        """Seconds until the next probe is due (0 when it is due)."""
        return max(0.0, self._next_probe - now)


class LateAcks:
    """Sending times of orders until the venue first acknowledges them (bounded)."""

    def __init__(self, warn_after_s: float, limit: int = LATE_ACK_LIMIT) -> None:
        if not warn_after_s > 0:
            raise ValueError(f"warn_after_s: must be positive, got {warn_after_s}")
        if limit < 1:
            raise ValueError(f"limit: must be at least 1, got {limit}")
        self.warn_after_s = warn_after_s
        """An acknowledgement later than this after the sending is late."""
        self._limit = limit
        self._sent: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sent)

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._sent

    def sent(self, client_order_id: str, sent_ns: int) -> None:
        """The order was written to the session at ``sent_ns``."""
        self._sent[client_order_id] = sent_ns
        self._sent.move_to_end(client_order_id)
        while len(self._sent) > self._limit:
            self._sent.popitem(last=False)

    def forget(self, client_order_id: str) -> None:
        """The order needs no check (refused before it reached the venue)."""
        self._sent.pop(client_order_id, None)

    def acknowledged(self, client_order_id: str, acked_ns: int) -> float | None:
        """The venue first acknowledged the order at ``acked_ns``: the delay in seconds when
        it is late, else None. Only the first acknowledgement of an order counts."""
        sent_ns = self._sent.pop(client_order_id, None)
        if sent_ns is None:
            return None
        delay_s = (acked_ns - sent_ns) / 1e9
        return delay_s if delay_s > self.warn_after_s else None


def late_detail(client_order_id: str, delay_s: float) -> str:
    """The words of a late execution warning; the order id is the second word."""
    return f"order {client_order_id} executed late: acknowledged {delay_s:.1f}s after it was sent"


def expire_time_ns(sent_ns: int, horizon_s: float) -> int | None:
    """When an order sent at ``sent_ns`` expires at the venue; None when ``horizon_s`` is 0
    (no expiry)."""
    if horizon_s < 0:
        raise ValueError(f"horizon_s: must not be negative, got {horizon_s}")
    if horizon_s == 0:
        return None
    return sent_ns + round(horizon_s * 1e9)


GTD_ORDER_TYPES = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT})
"""Order types sent good-till-date where the protocol ties the expiry to the time in
force (FIX, IB): a resting price is what a late arrival makes dangerous; a market order's
expiry is venue-specific in FIX and is left out."""

GTD_TIMES_IN_FORCE = frozenset({TimeInForce.DAY, TimeInForce.GTC})
"""Times in force an expiry replaces (GTD); IOC and FOK keep theirs (one field carries
the time in force, and they already never rest)."""


def takes_gtd(order: SubmitOrder) -> bool:
    """True when a protocol whose expiry is TimeInForce GTD (FIX, IB) sends ``order`` with
    one: a limit or stop-limit order that would rest (DAY or GTC)."""
    return order.order_type in GTD_ORDER_TYPES and order.time_in_force in GTD_TIMES_IN_FORCE
