"""The failsafe's rounds as a plan: given what the venues report, what to send next and
when the run is done.

Per venue, a round is: mass-cancel and read the positions the venue reports; for every
open position send a reduce-only market order closing it; when those orders are done (or
the round times out) start another round, which reads the venue again. A venue is *flat*
when, in the same round, it reported no open position **and** confirmed the mass cancel
(no working orders left there); anything else is another round, until ``max_attempts``
rounds are spent. A venue whose connector cannot be reached is *down*: that round spends
no attempt, and the venue starts again when its connector comes back. An exhausted venue
also starts again (with fresh attempts) when its connector comes back.

The run is done when no venue is waiting or closing and either every venue is flat or none
is still pending. The plan sends nothing itself: it returns what the caller sends and
tells the caller when to start a round.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from messages import (
    FAILSAFE_SOURCE,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    Side,
    SubmitOrder,
    VenuePosition,
    VenuePositions,
)


class VenueState(StrEnum):
    """Where one venue is in the procedure."""

    PENDING = "pending"
    """No round started yet."""
    WAITING = "waiting"
    """Mass cancel and position request sent; waiting for the venue's answers."""
    CLOSING = "closing"
    """Closing orders sent; waiting for them to finish."""
    FLAT = "flat"
    """No open position and the mass cancel confirmed, in one round."""
    DOWN = "down"
    """The connector could not be reached; retried when it comes back."""
    EXHAUSTED = "exhausted"
    """Every attempt spent without the venue becoming flat."""


BUSY: frozenset[VenueState] = frozenset({VenueState.WAITING, VenueState.CLOSING})
"""States in which a round is under way."""


@dataclass(slots=True)
class VenueRun:
    """One venue's progress."""

    round: int = 0
    """Rounds started (attempts spent)."""
    request_id: str = ""
    """The current round's request id (correlates the venue's answers)."""
    state: VenueState = VenueState.PENDING
    closing: set[str] = field(default_factory=set)
    """Client order ids of the closing orders still working."""
    cancel_confirmed: bool = False
    """The venue confirmed this round's mass cancel."""
    positions_flat: bool = False
    """The venue reported no open position in this round."""
    last_positions: tuple[VenuePosition, ...] = ()
    """What the venue last reported."""


@dataclass(frozen=True, slots=True)
class RoundStart:
    """Start a round: send ``CancelAll`` and ``RequestPositions`` with ``request_id`` to
    ``venue``, and time the round out."""

    venue: str
    round: int
    request_id: str


class FlattenPlan:
    """The rounds of one failsafe run over ``venues``."""

    def __init__(self, incident: str, venues: Iterable[str], max_attempts: int) -> None:
        self.incident = incident
        self.max_attempts = max_attempts
        self.runs: dict[str, VenueRun] = {venue: VenueRun() for venue in venues}

    def states(self) -> dict[str, VenueState]:
        """Each venue's state."""
        return {venue: run.state for venue, run in self.runs.items()}

    @property
    def rounds(self) -> int:
        """The most rounds any venue took."""
        return max((run.round for run in self.runs.values()), default=0)

    # ---- rounds -------------------------------------------------------------------------

    def next_round(self, venue: str) -> RoundStart | None:
        """Begin ``venue``'s next round; None when its attempts are spent (it is exhausted)."""
        run = self.runs[venue]
        if run.round >= self.max_attempts:
            run.state = VenueState.EXHAUSTED
            return None
        run.round += 1
        run.request_id = f"fs-{self.incident}-{venue}-{run.round}"
        run.closing.clear()
        run.cancel_confirmed = run.positions_flat = False
        run.state = VenueState.WAITING
        return RoundStart(venue=venue, round=run.round, request_id=run.request_id)

    def venue_down(self, venue: str) -> None:
        """The round could not be delivered: ``venue`` is down and the attempt is not spent."""
        run = self.runs[venue]
        if run.state is VenueState.WAITING:
            run.round -= 1
        run.closing.clear()
        run.state = VenueState.DOWN

    def on_cancel_done(self, venue: str, request_id: str) -> bool:
        """The venue confirmed a mass cancel; True when that made it flat."""
        run = self.runs.get(venue)
        if run is None or request_id != run.request_id or run.state not in BUSY:
            return False
        run.cancel_confirmed = True
        return self._settle(run)

    def on_positions(self, report: VenuePositions, created_ns: int) -> tuple[SubmitOrder, ...] | None:
        """The venue's positions for the current round. None when the report is not this
        round's answer; else the closing orders to send (empty: nothing is open, and the
        venue is flat once the mass cancel is confirmed too)."""
        run = self.runs.get(report.venue)
        if run is None or report.request_id != run.request_id or run.state is not VenueState.WAITING:
            return None
        run.last_positions = report.positions
        open_positions = [p for p in report.positions if p.quantity != 0]
        if not open_positions:
            run.positions_flat = True
            self._settle(run)
            return ()
        run.state = VenueState.CLOSING
        orders = tuple(
            SubmitOrder(
                client_order_id=f"{run.request_id}-{n}", venue=report.venue, symbol=position.symbol,
                side=Side.SELL if position.quantity > 0 else Side.BUY, quantity=abs(position.quantity),
                order_type=OrderType.MARKET, reduce_only=True, source=FAILSAFE_SOURCE, created_ns=created_ns,
            )
            for n, position in enumerate(open_positions)
        )
        run.closing.update(order.client_order_id for order in orders)
        return orders

    def on_order_done(self, event: OrderFilled | OrderRejected | OrderCancelled) -> bool:
        """A closing order finished (filled, rejected or cancelled); True when it was the
        round's last one, so the caller starts the next round (which re-reads the venue).
        A partial fill is not an end."""
        if isinstance(event, OrderFilled) and event.leaves_quantity > 0:
            return False
        run = self.runs.get(event.venue)
        if run is None or event.client_order_id not in run.closing:
            return False
        run.closing.discard(event.client_order_id)
        return not run.closing and run.state is VenueState.CLOSING

    def is_closing_order(self, venue: str, client_order_id: str) -> bool:
        """True for a closing order of the current round still working."""
        run = self.runs.get(venue)
        return run is not None and client_order_id in run.closing

    def on_round_timeout(self, venue: str, round_number: int) -> bool:
        """True when round ``round_number`` of ``venue`` is still under way: the caller
        starts the next round."""
        run = self.runs.get(venue)
        return run is not None and run.round == round_number and run.state in BUSY

    def on_connector_up(self, venue: str, running: bool) -> bool:
        """``venue``'s connector came back; True when the caller should start a round: the
        venue was down or exhausted (attempts start again), or a round was under way when
        the session restarted (``running``)."""
        run = self.runs.get(venue)
        if run is None:
            return False
        if run.state in (VenueState.DOWN, VenueState.EXHAUSTED) or (running and run.state in BUSY):
            if run.state is VenueState.EXHAUSTED:
                run.round = 0
            return True
        return False

    # ---- the end ----------------------------------------------------------------------------

    def finished(self) -> bool:
        """True when the run is over: no round under way, and every venue flat or none
        still pending."""
        states = self.states().values()
        if any(state in BUSY for state in states):
            return False
        flat = all(state is VenueState.FLAT for state in states)
        return flat or not any(state is VenueState.PENDING for state in states)

    def flat(self) -> bool:
        """True when every venue is flat."""
        return all(run.state is VenueState.FLAT for run in self.runs.values())

    @staticmethod
    def _settle(run: VenueRun) -> bool:
        if run.positions_flat and run.cancel_confirmed:
            run.state = VenueState.FLAT
            return True
        return False
