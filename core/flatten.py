"""The failsafe's rounds as a plan: given what the venues report and the time, what to send
next and when the run is done.

Per venue, a round is: mass-cancel and read the positions the venue reports; for every
open position send a reduce-only market order closing it; when those orders are done (or
the round times out) wait a backoff and start another round, which reads the venue again.

A venue is *flat* when, in one round, it reported no open position **and** no working
order is left there as the venue reports it: either the venue confirmed the mass cancel,
or -- when the mass cancel was refused, rejected or not answered within
``cancel_timeout_s`` -- every order known to work there (``core.lifecycle.WorkingOrders``:
sent by us, or reported working by the venue) was cancelled one by one and the venue
reported each one done. Anything else is another round, until ``max_attempts`` rounds are
spent; rounds back off (``backoff_initial_s`` doubling up to ``backoff_max_s``), so a
venue that refuses closing orders for a while does not use every attempt at once.

A venue whose connector cannot be reached, or goes down during a round, is *down*: that
round spends no attempt, and the venue starts again when its connector comes back. A venue
whose attempts are spent is *exhausted*: the run reports it not flat, and it is re-checked
(a full round) every ``recheck_interval_s``; when it becomes flat the outcome changes to
flat. An exhausted venue also starts again with fresh attempts when its connector returns.

The plan sends nothing itself and keeps no clock: every entry point takes ``now`` (seconds
on a monotonic clock) and returns the commands to send; ``next_wakeup`` tells the caller
when to call ``due`` again.

Scoped flattens (an operator's ``flatten --venue X`` or ``--source Y``) run the same rounds
without latching FAILSAFE: a venue scope is a ``FlattenPlan`` over that one venue; a
source scope is a ``SourceFlattenPlan``, whose rounds cancel that source's working orders
one by one (never a mass cancel, which would take other sources' orders with it) and close
only what is attributed to the source:

**Attribution rule.** Per (venue, symbol), the source's share is the net of the fills of
its orders as the journal holds them (its closing orders, source ``flatten:<source>``,
included, so a closed share nets to zero). The quantity closed is that net, capped by the
position the venue reports for the symbol, and nothing when the venue's position is flat or
on the other side: a scoped flatten only ever reduces the venue's position toward zero,
never flips it, and never closes more than the source opened. When several sources share
a symbol, each keeps its own share; what the others opened stays open. A source whose
orders were netted away by another source's (it bought 10, another sold 10: the venue is
flat) has nothing closed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from messages import (
    FAILSAFE_SOURCE,
    CancelAll,
    CancelOrder,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    RequestPositions,
    Side,
    SubmitOrder,
    VenuePosition,
    VenuePositions,
)

Command = CancelAll | RequestPositions | SubmitOrder | CancelOrder
"""What the plan asks the caller to tell a venue's connector."""


class VenueState(StrEnum):
    """Where one venue is in the procedure."""

    PENDING = "pending"
    """No round started yet."""
    WAITING = "waiting"
    """Mass cancel and position request sent; waiting for the venue's answers."""
    CLOSING = "closing"
    """Closing orders sent; waiting for them to finish."""
    BACKOFF = "backoff"
    """A round ended without flat; the next one starts when the backoff is over."""
    FLAT = "flat"
    """No open position and no working order at the venue, in one round."""
    DOWN = "down"
    """The connector could not be reached; retried when it comes back."""
    EXHAUSTED = "exhausted"
    """Every attempt spent without the venue becoming flat; re-checked slowly."""


BUSY: frozenset[VenueState] = frozenset({VenueState.WAITING, VenueState.CLOSING})
"""States in which a round is under way."""


@dataclass(frozen=True, slots=True)
class FlattenPolicy:
    """How hard and how fast the rounds go (``FailsafeConfig`` validates the numbers)."""

    max_attempts: int = 5
    """Rounds per venue before it is reported not flat (rounds while down do not count)."""
    round_timeout_s: float = 3.0
    """How long a round waits for the venue's answers and its closing orders."""
    cancel_timeout_s: float = 1.0
    """How long a round waits for the mass cancel's confirmation before it cancels the
    working orders one by one."""
    backoff_initial_s: float = 0.25
    """Pause after the first round that did not end flat; doubles after each round."""
    backoff_max_s: float = 5.0
    """Longest pause between two rounds."""
    recheck_interval_s: float = 30.0
    """Once the attempts are spent: how often the venue is re-checked (a full round)."""

    def backoff_s(self, rounds: int) -> float:
        """The pause after ``rounds`` rounds that did not end flat."""
        exponent = min(max(rounds - 1, 0), 30)
        return min(self.backoff_initial_s * float(2**exponent), self.backoff_max_s)


WorkingOf = Callable[[str], frozenset[str]]
"""The client order ids known to work at a venue (``WorkingOrders.working``)."""


@dataclass(slots=True)
class VenueRun:
    """One venue's progress."""

    round: int = 0
    """Attempts spent (rounds started while the connector was up, re-checks excluded)."""
    started: int = 0
    """Rounds started, re-checks and refunded rounds included (names the request ids)."""
    request_id: str = ""
    """The current round's request id (correlates the venue's answers)."""
    state: VenueState = VenueState.PENDING
    exhausted: bool = False
    """The attempts are spent: rounds now are slow re-checks."""
    recheck: bool = False
    """The current round is a re-check (spends no attempt)."""
    closing: set[str] = field(default_factory=set)
    """Client order ids of the closing orders still working."""
    closing_failed: bool = False
    """A closing order of this round was rejected or cancelled (the round backs off)."""
    cancel_confirmed: bool = False
    """The venue confirmed this round's mass cancel."""
    cancelled_one_by_one: bool = False
    """The mass cancel went unconfirmed: the working orders were cancelled one by one."""
    positions_flat: bool = False
    """The venue reported no open position in this round."""
    last_positions: tuple[VenuePosition, ...] = ()
    """What the venue last reported."""
    round_deadline: float = math.inf
    """When the current round times out."""
    cancel_deadline: float = math.inf
    """When an unconfirmed mass cancel falls back to cancels one by one."""
    next_round_at: float = math.inf
    """When the next round starts (after a backoff or a re-check interval)."""


@dataclass(frozen=True, slots=True)
class Note:
    """Something the caller writes in the run's timeline of actions."""

    action: str
    venue: str
    detail: str = ""


class FlattenPlan:
    """The rounds of one failsafe run over ``venues``."""

    def __init__(self, incident: str, venues: Iterable[str], policy: FlattenPolicy,
                 working: WorkingOf) -> None:
        self.incident = incident
        self.policy = policy
        self.working = working
        self.runs: dict[str, VenueRun] = {venue: VenueRun() for venue in venues}
        self.notes: list[Note] = []
        """What happened since the caller last took them (``take_notes``)."""

    def states(self) -> dict[str, VenueState]:
        """Each venue's state."""
        return {venue: run.state for venue, run in self.runs.items()}

    @property
    def rounds(self) -> int:
        """The most attempts any venue spent."""
        return max((run.round for run in self.runs.values()), default=0)

    def take_notes(self) -> list[Note]:
        """The notes since the last call."""
        notes, self.notes = self.notes, []
        return notes

    # ---- rounds -------------------------------------------------------------------------

    def start(self, now: float) -> list[tuple[str, Command]]:
        """Start every venue's first round."""
        sent: list[tuple[str, Command]] = []
        for venue in self.runs:
            sent += self._start_round(venue, now)
        return sent

    def _start_round(self, venue: str, now: float) -> list[tuple[str, Command]]:
        run = self.runs[venue]
        if not run.exhausted and run.round >= self.policy.max_attempts:
            run.exhausted = True
        run.recheck = run.exhausted
        if not run.recheck:
            run.round += 1
        run.started += 1
        run.request_id = failsafe_request_id(self.incident, venue, run.started)
        run.closing.clear()
        run.cancel_confirmed = run.positions_flat = run.cancelled_one_by_one = run.closing_failed = False
        run.state = VenueState.WAITING
        run.round_deadline = now + self.policy.round_timeout_s
        run.cancel_deadline = now + min(self.policy.cancel_timeout_s, self.policy.round_timeout_s)
        run.next_round_at = math.inf
        return self._round_commands(venue, run)

    def _round_commands(self, venue: str, run: VenueRun) -> list[tuple[str, Command]]:
        """What a round starts with: a mass cancel and a read of the venue's positions."""
        self.notes.append(Note("cancel_all_and_read_positions", venue,
                               f"round {run.round}" + (" (re-check)" if run.recheck else "")))
        return [
            (venue, CancelAll(venue=venue, source=FAILSAFE_SOURCE, request_id=run.request_id)),
            (venue, RequestPositions(venue=venue, request_id=run.request_id)),
        ]

    def _end_round(self, venue: str, now: float, why: str, *, pause: bool = True) -> None:
        """The round ended without flat: back off (or wait for the next re-check); without
        ``pause`` (its closing orders all filled) the next round reads the venue at once."""
        run = self.runs[venue]
        run.closing.clear()
        run.round_deadline = run.cancel_deadline = math.inf
        if run.exhausted or run.round >= self.policy.max_attempts:
            if not run.exhausted:
                self.notes.append(Note("attempts_spent", venue, f"{run.round} rounds"))
            run.exhausted = True
            run.state = VenueState.EXHAUSTED
            run.next_round_at = now + self.policy.recheck_interval_s
        else:
            run.state = VenueState.BACKOFF
            run.next_round_at = now + (self.policy.backoff_s(run.round) if pause else 0.0)
        self.notes.append(Note("round_ended", venue, why))

    def delivery_failed(self, venue: str) -> None:
        """A command could not be delivered: ``venue``'s connector is down; the round spends
        no attempt."""
        self._down(venue, "connector unreachable")

    def on_connector_down(self, venue: str) -> None:
        """``venue``'s connector went down: a round under way (or just ended) is not spent."""
        run = self.runs.get(venue)
        if run is None or run.state in (VenueState.FLAT, VenueState.DOWN, VenueState.PENDING):
            return
        self._down(venue, "connector down")

    def _down(self, venue: str, why: str) -> None:
        run = self.runs[venue]
        if run.state in (*BUSY, VenueState.BACKOFF) and not run.recheck and run.round > 0:
            run.round -= 1
            run.exhausted = False
        run.closing.clear()
        run.state = VenueState.DOWN
        run.round_deadline = run.cancel_deadline = run.next_round_at = math.inf
        self.notes.append(Note("venue_down", venue, why))

    def on_connector_up(self, venue: str, now: float) -> list[tuple[str, Command]]:
        """``venue``'s connector came back: a venue down, exhausted, or in a round when the
        session restarted starts a round now (an exhausted one with fresh attempts)."""
        run = self.runs.get(venue)
        if run is None or run.state in (VenueState.FLAT, VenueState.PENDING):
            return []
        if run.exhausted:
            run.round = 0
            run.exhausted = False
        return self._start_round(venue, now)

    def on_cancel_done(self, venue: str, request_id: str) -> bool:
        """The venue confirmed a mass cancel; True when that made it flat."""
        run = self.runs.get(venue)
        if run is None or request_id != run.request_id or run.state not in BUSY:
            return False
        run.cancel_confirmed = True
        return self._settle(venue)

    def on_positions(self, report: VenuePositions, now_ns: int) -> list[tuple[str, Command]] | None:
        """The venue's positions for the current round. None when the report is not this
        round's answer; else the closing orders to send (empty: nothing is open, and the
        venue is flat once no order works there either)."""
        run = self.runs.get(report.venue)
        if run is None or report.request_id != run.request_id or run.state is not VenueState.WAITING:
            return None
        run.last_positions = report.positions
        orders = self._closing_orders(report, run, now_ns)
        if not orders:
            run.positions_flat = True
            self._settle(report.venue)
            return []
        run.state = VenueState.CLOSING
        run.closing.update(order.client_order_id for order in orders)
        return [(report.venue, order) for order in orders]

    def _closing_orders(self, report: VenuePositions, run: VenueRun, now_ns: int) -> list[SubmitOrder]:
        """The reduce-only market orders closing every open position the venue reported."""
        open_positions = [p for p in report.positions if p.quantity != 0]
        return [
            SubmitOrder(
                client_order_id=f"{run.request_id}-{n}", venue=report.venue, symbol=position.symbol,
                side=Side.SELL if position.quantity > 0 else Side.BUY, quantity=abs(position.quantity),
                order_type=OrderType.MARKET, reduce_only=True, source=FAILSAFE_SOURCE, created_ns=now_ns,
            )
            for n, position in enumerate(open_positions)
        ]

    def on_order_event(self, event: OrderAccepted | OrderFilled | OrderRejected | OrderCancelled,
                       now: float) -> bool:
        """An order event at a venue (the caller has applied it to the working orders
        first). A closing order that finished may end the round; a cancel confirmed one by
        one may make the venue flat. True when the venue became flat."""
        run = self.runs.get(event.venue)
        if run is None or run.state not in BUSY:
            return False
        if isinstance(event, OrderAccepted) or (isinstance(event, OrderFilled) and event.leaves_quantity > 0):
            return False
        if event.client_order_id in run.closing:
            run.closing.discard(event.client_order_id)
            if isinstance(event, OrderRejected | OrderCancelled):
                run.closing_failed = True
                what = "rejected" if isinstance(event, OrderRejected) else "cancelled"
                self.notes.append(Note(f"closing_order_{what}", event.venue,
                                       f"{event.client_order_id}: {event.text}"))
            if not run.closing and run.state is VenueState.CLOSING:
                self._end_round(event.venue, now, "closing orders done; the venue is read again",
                                pause=run.closing_failed)
            return False
        return self._settle(event.venue)

    def is_closing_order(self, venue: str, client_order_id: str) -> bool:
        """True for a closing order of the current round still working."""
        run = self.runs.get(venue)
        return run is not None and client_order_id in run.closing

    # ---- time -----------------------------------------------------------------------------

    def next_wakeup(self) -> float | None:
        """When ``due`` has something to do next; None when nothing is timed."""
        times = [t for run in self.runs.values()
                 for t in (run.round_deadline, run.cancel_deadline, run.next_round_at) if t < math.inf]
        return min(times, default=None)

    def due(self, now: float) -> list[tuple[str, Command]]:
        """What is due at ``now``: per-order cancels for unconfirmed mass cancels, rounds
        timing out, rounds starting after a backoff or a re-check interval."""
        sent: list[tuple[str, Command]] = []
        for venue, run in self.runs.items():
            if run.state in BUSY and now >= run.cancel_deadline:
                run.cancel_deadline = math.inf
                if not run.cancel_confirmed:
                    sent += self._cancel_one_by_one(venue)
                    if self._settle(venue):
                        continue
            if run.state in BUSY and now >= run.round_deadline:
                self._end_round(venue, now, "round timed out")
            if run.state in (VenueState.BACKOFF, VenueState.EXHAUSTED) and now >= run.next_round_at:
                sent += self._start_round(venue, now)
        return sent

    def _cancel_one_by_one(self, venue: str) -> list[tuple[str, Command]]:
        run = self.runs[venue]
        run.cancelled_one_by_one = True
        orders = sorted(self.working(venue) - run.closing)
        self.notes.append(Note("mass_cancel_unconfirmed", venue,
                               f"cancelling {len(orders)} working order(s) one by one"))
        return _cancels(venue, orders)

    # ---- the end ----------------------------------------------------------------------------

    def finished(self) -> bool:
        """True when the run has an outcome: every venue flat, down or out of attempts."""
        return all(run.state is VenueState.FLAT or run.state is VenueState.DOWN or run.exhausted
                   for run in self.runs.values())

    def flat(self) -> bool:
        """True when every venue is flat."""
        return all(run.state is VenueState.FLAT for run in self.runs.values())

    def outcome(self) -> bool | None:
        """None while the run has no outcome; else whether every venue is flat."""
        return self.flat() if self.finished() else None

    def _orders_clear(self, venue: str) -> bool:
        run = self.runs[venue]
        if run.cancel_confirmed:
            return True
        return run.cancelled_one_by_one and not self.working(venue)

    def _settle(self, venue: str) -> bool:
        run = self.runs[venue]
        if run.state in BUSY and run.positions_flat and self._orders_clear(venue):
            run.state = VenueState.FLAT
            run.exhausted = False
            run.round_deadline = run.cancel_deadline = run.next_round_at = math.inf
            self.notes.append(Note("venue_flat", venue, f"after {run.round} round(s)"))
            return True
        return False


def _cancels(venue: str, client_order_ids: Iterable[str]) -> list[tuple[str, Command]]:
    return [(venue, CancelOrder(client_order_id=coid, venue=venue, source=FAILSAFE_SOURCE))
            for coid in client_order_ids]


# ---- scoped flattens: one order source -----------------------------------------------------

CLOSING_SOURCE_PREFIX = "flatten:"
"""A source-scoped flatten's closing orders carry ``flatten:<source>`` as their source."""


def closing_source(source: str) -> str:
    """The source of the closing orders of a flatten of ``source``."""
    return f"{CLOSING_SOURCE_PREFIX}{source}"


_FAILSAFE_ORDER = re.compile(r"fs-(?:.*-)?\d{8}T\d{6}-\d{6}-(.+)-\d+-\d+")
"""A failsafe closing order's id; group 1 is the venue (see ``looks_like_failsafe_order``)."""


def failsafe_request_id(incident: str, venue: str, started: int) -> str:
    """The id of one round of a flatten at ``venue``; its closing orders are this id
    followed by ``-<n>``."""
    return f"fs-{incident}-{venue}-{started}"


def looks_like_failsafe_order(client_order_id: str, venue: str) -> bool:
    """True for a client order id of the shape the failsafe gives its closing orders at
    ``venue``: ``fs-[<scope>-]<YYYYMMDDTHHMMSS>-<6 digits>-<venue>-<round>-<n>`` (the
    incident id, then ``failsafe_request_id``). A fill of such an order that the journal
    does not hold is the failsafe's own (the keeper missed its journaling, e.g. it was
    restarting), not activity from elsewhere."""
    match = _FAILSAFE_ORDER.fullmatch(client_order_id)
    return match is not None and match.group(1) == venue


def sent_by_failsafe(source: str) -> bool:
    """True for the orders the failsafe sends itself, straight to the connectors (its own,
    ``failsafe``, and a source-scoped flatten's closing orders, ``flatten:<source>``): the
    governor never wrote them ahead, so the position keeper journals them."""
    return source == FAILSAFE_SOURCE or source.startswith(CLOSING_SOURCE_PREFIX)


def attributed_close(net: Decimal, venue_position: Decimal) -> Decimal:
    """The signed quantity to trade to close a source's share ``net`` of a venue position
    ``venue_position`` (both signed): minus the net, capped by the venue's position, and
    zero when the venue is flat or on the other side (never flips the venue's position)."""
    if net == 0 or venue_position == 0 or (net > 0) != (venue_position > 0):
        return Decimal(0)
    size = min(abs(net), abs(venue_position))
    return -size if net > 0 else size


def source_nets(source: str, sources: Mapping[str, str], fills: Iterable[OrderFilled],
                *, exclude: Collection[str] = ()) -> dict[tuple[str, str], Decimal]:
    """Per (venue, symbol), the net signed quantity the fills of ``source``'s orders (and of
    its scoped flattens' closing orders) built. ``sources`` maps client order ids to their
    source; fills of orders in ``exclude`` are left out (the caller counts them itself)."""
    mine = {source, closing_source(source)}
    nets: dict[tuple[str, str], Decimal] = {}
    for fill in fills:
        if fill.client_order_id in exclude or sources.get(fill.client_order_id) not in mine:
            continue
        key = (fill.venue, fill.symbol)
        nets[key] = nets.get(key, Decimal(0)) + fill.signed_quantity
    return nets


NetsOf = Callable[[str], Mapping[str, Decimal]]
"""A source's net per symbol at a venue, as the attribution rule counts it."""


class SourceFlattenPlan(FlattenPlan):
    """The rounds of a flatten of one order source over ``venues``: each round cancels the
    source's working orders at the venue one by one and reads the venue's positions, then
    closes the source's attributed share of each (``attributed_close``) with reduce-only
    market orders of source ``flatten:<source>``. A venue is done (``FLAT``) when, in one
    round, nothing is left to close and no order of the source works there.

    ``working`` gives the source's working orders at a venue; ``nets`` the source's net per
    symbol there, counting the closing orders' fills."""

    def __init__(self, incident: str, source: str, venues: Iterable[str], policy: FlattenPolicy,
                 working: WorkingOf, nets: NetsOf) -> None:
        super().__init__(incident, venues, policy, working)
        self.source = source
        self.nets = nets

    def _round_commands(self, venue: str, run: VenueRun) -> list[tuple[str, Command]]:
        run.cancelled_one_by_one = True  # never a mass cancel: other sources' orders stay
        orders = sorted(self.working(venue))
        self.notes.append(Note("cancel_source_orders_and_read_positions", venue,
                               f"round {run.round}" + (" (re-check)" if run.recheck else "")
                               + f": {len(orders)} order(s) of {self.source}"))
        return [*_cancels(venue, orders), (venue, RequestPositions(venue=venue, request_id=run.request_id))]

    def _closing_orders(self, report: VenuePositions, run: VenueRun, now_ns: int) -> list[SubmitOrder]:
        held = {p.symbol: p.quantity for p in report.positions}
        orders: list[SubmitOrder] = []
        for symbol, net in sorted(self.nets(report.venue).items()):
            trade = attributed_close(net, held.get(symbol, Decimal(0)))
            if trade == 0:
                continue
            orders.append(SubmitOrder(
                client_order_id=f"{run.request_id}-{len(orders)}", venue=report.venue, symbol=symbol,
                side=Side.BUY if trade > 0 else Side.SELL, quantity=abs(trade), order_type=OrderType.MARKET,
                reduce_only=True, source=closing_source(self.source), created_ns=now_ns))
        return orders

    def _orders_clear(self, venue: str) -> bool:
        return not (self.working(venue) - self.runs[venue].closing)

    def source_filled(self, venue: str, now: float) -> None:
        """An order of the source traded at ``venue`` (a cancel lost the race): what the
        round read is stale, so a round under way reads the venue again."""
        run = self.runs.get(venue)
        if run is None or run.state not in BUSY or run.closing:
            return
        if run.positions_flat:
            run.positions_flat = False
            self._end_round(venue, now, "an order of the source traded during the round", pause=False)
