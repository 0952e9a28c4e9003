"""The strategy base on its own: it waits for its book before anything, takes its positions
and working orders from it, applies each fill once, and keeps its timers. Peers here are
recorders and a stand-in keeper (a unit of the base, not the service)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from actors import topics
from actors.strategies import Strategy, StrategyConfig
from messages import (
    CancelOrder,
    GetSourceBook,
    GetStrategyState,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    Quote,
    QuoteBatch,
    RejectReason,
    Side,
    SourceBook,
    SourceOrder,
    SourcePosition,
    StrategyState,
    SubmitOrder,
)
from supervision import NO_BACKOFF, ChildContext, ChildSpec, SupervisedActor, Tree, bus, registry
from tests.helpers import wait_for
from tests.recorder import Recorder

CONFIG = StrategyConfig(name="unit", kind="unit", venue="paper", symbols=("AAPL",), book_retry_s=0.05)
OLD = SubmitOrder(client_order_id="unit-old-1", venue="paper", symbol="AAPL", side=Side.BUY,
                  quantity=Decimal(10), source="unit")


class Keeper(SupervisedActor):
    """Answers requests for a book once ``answering`` (told ``True`` to start answering)."""

    def __init__(self, book: SourceBook, answering: bool, created: list[Keeper]) -> None:
        super().__init__()
        created.append(self)
        self.context = ChildContext(name=topics.POSITION_KEEPER)
        self.book = book
        self.answering = answering
        self.requests: list[GetSourceBook] = []

    def setup(self) -> None:
        registry.register(self.name, self.actor_ref, 0)

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {GetSourceBook: self._on_request, int: lambda _m: len(self.requests), bool: self._answer}

    def _answer(self, answering: bool) -> None:
        self.answering = answering

    def _on_request(self, request: GetSourceBook) -> None:
        self.requests.append(request)
        if self.answering:
            registry.tell(request.reply_to, msgspec.structs.replace(self.book, request_id=request.request_id))


def _book() -> SourceBook:
    return SourceBook(source="unit",
                      positions=(SourcePosition(venue="paper", symbol="AAPL", quantity=Decimal(30)),),
                      working=(SourceOrder(order=OLD, status=OrderStatus.PARTIALLY_FILLED,
                                           filled_quantity=Decimal(4), fill_ids=("f1",)),),
                      fills=5)


class Probe(Strategy):
    """Records its hooks; submits on ``buy`` timers; cancels all of its own on ``sweep``."""

    def __init__(self, config: StrategyConfig) -> None:
        super().__init__(config)
        self.hooks: list[str] = []
        self.start_view: dict[str, Any] = {}

    def on_strategy_start(self) -> None:
        self.hooks.append("start")
        self.start_view = {"positions": self.positions, "working": sorted(self.working_orders)}
        self.call_every(0.01, "tick")

    def on_fill(self, fill: OrderFilled) -> None:
        self.hooks.append(f"fill {fill.fill_id}")

    def on_order_event(self, event: Any) -> None:
        self.hooks.append(f"{type(event).__name__} {event.client_order_id}")

    def on_timer(self, name: str) -> None:
        if name == "tick":
            self.hooks.append("tick")
            if self.hooks.count("tick") == 3:
                self.cancel_timer("tick")
        elif name.startswith("buy"):
            self.submit("AAPL", Side.BUY, Decimal(1))
        elif name == "sweep":
            self.hooks.append(f"swept {self.cancel_all_mine()}")

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {**super().handlers(), str: self._command, tuple: lambda _m: list(self.hooks)}

    def _command(self, name: str) -> None:
        self.call_later(0.0, name)


@pytest.fixture
def started() -> Iterator[Callable[[bool], tuple[Tree, Keeper]]]:
    trees: list[Tree] = []

    def start(answering: bool) -> tuple[Tree, Keeper]:
        made: list[Keeper] = []
        Keeper.start(_book(), answering, made).ask(0, timeout=5)
        tree = Tree([ChildSpec(name="unit", actor_class=Probe, args=(CONFIG,))], name="unit-root",
                    backoff=NO_BACKOFF)
        trees.append(tree)
        tree.start(timeout_s=5.0)
        return tree, made[0]

    yield start
    for tree in trees:
        tree.stop(timeout_s=5.0)


def _state() -> StrategyState:
    ref = registry.lookup("unit")
    assert ref is not None
    state = ref.ask(GetStrategyState(), timeout=2)
    assert isinstance(state, StrategyState)
    return state


def _hooks() -> list[str]:
    ref = registry.lookup("unit")
    assert ref is not None
    hooks: list[str] = ref.ask((), timeout=2)
    return hooks


def _tell(message: Any) -> None:
    assert registry.tell("unit", message)


def test_it_waits_for_its_book_and_starts_from_it(started: Callable[[bool], tuple[Tree, Keeper]]) -> None:
    governor = Recorder.spawn(topics.RISK_GOVERNOR)
    _, keeper = started(False)
    # Unanswered requests are repeated; meanwhile no hook runs and nothing can be sent.
    wait_for(lambda: len(keeper.requests) >= 2, timeout_s=5, what="a second request")
    assert not _state().ready and _hooks() == []
    quote = Quote(venue="paper", symbol="AAPL", bid=Decimal(100), ask=Decimal("100.02"),
                  bid_size=Decimal(1), ask_size=Decimal(1))
    _tell(QuoteBatch(venue="paper", quotes=(quote,)))
    # A fill of the working order that arrives before the book: kept, applied after it.
    _tell(OrderFilled(client_order_id=OLD.client_order_id, venue="paper", fill_id="f2", symbol="AAPL",
                      side=Side.BUY, quantity=Decimal(2), price=Decimal(100), leaves_quantity=Decimal(4)))
    assert registry.tell(topics.POSITION_KEEPER, True)
    wait_for(lambda: _state().ready, timeout_s=5, what="the book")
    assert {r.request_id for r in keeper.requests} == {keeper.requests[0].request_id[:-1] + str(i)
                                                        for i in range(1, len(keeper.requests) + 1)}
    state = _state()
    assert state.positions == {"AAPL": Decimal(32)} and state.working == (OLD.client_order_id,)
    assert state.book_fills == 5
    wait_for(lambda: _hooks().count("tick") == 3, timeout_s=5, what="three ticks")
    hooks = _hooks()
    assert hooks[0] == "start" and "fill f2" not in hooks  # a former generation's fill: no hook
    assert governor.messages() == []


def test_each_fill_is_applied_once_and_only_for_its_own_orders(
        started: Callable[[bool], tuple[Tree, Keeper]]) -> None:
    Recorder.spawn(topics.RISK_GOVERNOR)
    started(True)
    wait_for(lambda: _state().ready, timeout_s=5, what="the book")

    def fill(cid: str, fill_id: str, quantity: str, leaves: str) -> OrderFilled:
        return OrderFilled(client_order_id=cid, venue="paper", fill_id=fill_id, symbol="AAPL", side=Side.BUY,
                           quantity=Decimal(quantity), price=Decimal(100), leaves_quantity=Decimal(leaves))

    _tell(fill(OLD.client_order_id, "f1", "4", "6"))  # in the book already
    _tell(fill(OLD.client_order_id, "f3", "1", "5"))
    _tell(fill(OLD.client_order_id, "f3", "1", "5"))  # re-delivered
    _tell(fill("someone-else-1", "f4", "7", "0"))     # another source's order
    _tell(fill(OLD.client_order_id, "f5", "5", "0"))  # the last one: the order is done
    _tell(fill(OLD.client_order_id, "f5", "5", "0"))
    wait_for(lambda: "fill f5" in _hooks(), timeout_s=5, what="the last fill")
    state = _state()
    assert state.positions == {"AAPL": Decimal(36)} and state.working == () and state.fills == 2
    assert [h for h in _hooks() if h.startswith("fill")] == ["fill f3", "fill f5"]


def test_submit_and_cancel_all_mine(started: Callable[[bool], tuple[Tree, Keeper]]) -> None:
    governor = Recorder.spawn(topics.RISK_GOVERNOR)
    venue = Recorder.spawn("paper")
    started(True)
    wait_for(lambda: _state().ready, timeout_s=5, what="the book")
    _tell("buy 1")
    _tell("buy 2")  # (one more "buy 1" would replace the first timer of that name)
    sent = governor.wait_for(lambda m: isinstance(m, SubmitOrder), timeout_s=5)
    wait_for(lambda: len(_state().working) == 3, timeout_s=5, what="two new working orders")
    assert sent.source == "unit" and sent.venue == "paper" and sent.client_order_id.startswith("unit-")
    orders = [m for m in governor.messages() if isinstance(m, SubmitOrder)]
    # The governor refuses one; the venue cancels nothing yet.
    _tell(OrderRejected(client_order_id=orders[1].client_order_id, venue="paper",
                        reason=RejectReason.MAX_POSITION, text="limit", source="unit"))
    wait_for(lambda: len(_state().working) == 2, timeout_s=5, what="the refusal")
    _tell("sweep")
    wait_for(lambda: "swept 2" in _hooks(), timeout_s=5, what="the sweep")
    cancels = wait_for(lambda: [m for m in venue.messages() if isinstance(m, CancelOrder)], timeout_s=5)
    assert sorted(c.client_order_id for c in cancels) == sorted([OLD.client_order_id,
                                                                 orders[0].client_order_id])
    _tell(OrderCancelled(client_order_id=OLD.client_order_id, venue="paper"))
    wait_for(lambda: len(_state().working) == 1, timeout_s=5, what="the cancel confirmed")
    assert _state().rejected == 1


def test_nothing_is_sent_while_no_keeper_answers() -> None:
    governor = Recorder.spawn(topics.RISK_GOVERNOR)
    tree = Tree([ChildSpec(name="unit", actor_class=Probe, args=(CONFIG,))], name="unit-root",
                backoff=NO_BACKOFF)
    tree.start(timeout_s=5.0)
    try:
        _tell("buy")  # a timer firing before the book: the submit raises, the strategy restarts
        wait_for(lambda: (registry.generation("unit") or 0) >= 1, timeout_s=5, what="the restart")
        assert not _state().ready and governor.messages() == []
    finally:
        tree.stop(timeout_s=5.0)
    bus.reset()
