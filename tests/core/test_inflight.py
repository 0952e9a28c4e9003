"""Orders in flight: when a status query is due, how many, and when an order is given up."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.inflight import Answered, GiveUp, InflightOrders, QueryStatus


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def test_an_answered_order_is_never_queried() -> None:
    clock = FakeClock()
    orders = InflightOrders(timeout_s=2.0, retries=3)
    orders.sent("a", clock.now)
    assert orders.next_due() == clock.now + 2.0
    assert orders.answered("a", clock.advance(1.5)) == Answered("a", 0, 1.5)
    assert orders.due(clock.advance(100)) == []
    assert orders.next_due() is None
    assert orders.answered("a", clock.now) is None  # answered once


def test_queries_follow_the_timeout_then_the_order_is_given_up() -> None:
    clock = FakeClock()
    orders = InflightOrders(timeout_s=2.0, retries=2)
    orders.sent("a", clock.now)
    assert orders.due(clock.advance(1.99)) == []
    assert orders.due(clock.advance(0.01)) == [QueryStatus("a", 1)]
    assert orders.due(clock.advance(1.0)) == []
    assert orders.due(clock.advance(1.0)) == [QueryStatus("a", 2)]
    [gave_up] = orders.due(clock.advance(2.0))
    assert gave_up == GiveUp("a", 2, pytest.approx(6.0))
    assert "no answer to 2 status queries" in gave_up.text
    assert "a" not in orders and len(orders) == 0
    assert orders.due(clock.advance(10)) == []


def test_an_answer_between_queries_ends_the_tracking() -> None:
    clock = FakeClock()
    orders = InflightOrders(timeout_s=1.0, retries=3)
    orders.sent("a", clock.now)
    assert orders.due(clock.advance(1.0)) == [QueryStatus("a", 1)]
    answered = orders.answered("a", clock.advance(0.3))
    assert answered is not None and answered.queries == 1
    assert orders.due(clock.advance(50)) == []


def test_without_retries_the_order_is_given_up_after_one_timeout() -> None:
    clock = FakeClock()
    orders = InflightOrders(timeout_s=3.0, retries=0)
    orders.sent("a", clock.now)
    [gave_up] = orders.due(clock.advance(3.0))
    assert isinstance(gave_up, GiveUp) and gave_up.queries == 0
    assert "no status query" in gave_up.text


def test_nothing_is_due_while_the_session_is_down_and_the_wait_restarts_at_reconnect() -> None:
    clock = FakeClock()
    orders = InflightOrders(timeout_s=2.0, retries=1)
    orders.sent("a", clock.now)
    assert orders.due(clock.advance(2.0)) == [QueryStatus("a", 1)]
    orders.session_lost()
    assert orders.next_due() is None
    assert orders.due(clock.advance(60)) == []
    orders.session_up(clock.now)
    assert orders.next_due() == clock.now + 2.0
    assert orders.due(clock.advance(1.9)) == []
    # the query spent before the outage stays spent: the next step is the give-up
    [gave_up] = orders.due(clock.advance(0.1))
    assert isinstance(gave_up, GiveUp) and gave_up.queries == 1


def test_orders_are_handled_oldest_first_and_independently() -> None:
    clock = FakeClock()
    orders = InflightOrders(timeout_s=1.0, retries=1)
    orders.sent("a", clock.now)
    orders.sent("b", clock.advance(0.5))
    orders.sent("a", clock.now)  # a repeated id keeps its first sending
    assert orders.in_flight() == ["a", "b"]
    assert orders.due(clock.advance(0.5)) == [QueryStatus("a", 1)]
    assert orders.due(clock.advance(0.5)) == [QueryStatus("b", 1)]
    assert [type(a) for a in orders.due(clock.advance(0.5))] == [GiveUp]
    assert orders.in_flight() == ["b"]


@pytest.mark.parametrize(("timeout", "retries"), [(0.0, 1), (-1.0, 1), (float("nan"), 1),
                                                  (float("inf"), 1), (1.0, -1)])
def test_bad_settings_are_refused_naming_the_field(timeout: float, retries: int) -> None:
    with pytest.raises(ValueError, match="inflight_"):
        InflightOrders(timeout_s=timeout, retries=retries)


@settings(max_examples=200, deadline=None)
@given(
    timeout=st.floats(min_value=0.01, max_value=30.0),
    retries=st.integers(min_value=0, max_value=6),
    steps=st.lists(
        st.tuples(st.sampled_from(["send", "answer", "tick", "down", "up"]),
                  st.integers(min_value=0, max_value=4), st.floats(min_value=0.0, max_value=5.0)),
        max_size=60),
)
def test_every_order_is_answered_or_given_up_exactly_once(
    timeout: float, retries: int, steps: list[tuple[str, int, float]]
) -> None:
    clock = FakeClock()
    orders = InflightOrders(timeout_s=timeout, retries=retries)
    sent: set[str] = set()
    ended: dict[str, str] = {}
    queries: dict[str, int] = {}
    for action, n, dt in steps:
        now = clock.advance(dt)
        coid = f"o{n}"
        if action == "send" and coid not in sent:
            sent.add(coid)
            orders.sent(coid, now)
        elif action == "answer":
            if orders.answered(coid, now) is not None:
                assert coid not in ended
                ended[coid] = "answered"
        elif action == "down":
            orders.session_lost()
        elif action == "up":
            orders.session_up(now)
        for due in orders.due(now):
            assert due.client_order_id not in ended
            if isinstance(due, QueryStatus):
                queries[due.client_order_id] = queries.get(due.client_order_id, 0) + 1
                assert due.attempt == queries[due.client_order_id] <= retries
            else:
                assert due.queries == queries.get(due.client_order_id, 0) == retries
                ended[due.client_order_id] = "given up"
    # With the session up and time running, everything still in flight ends within
    # timeout * (retries + 1).
    now = clock.advance(0.0)
    orders.session_up(now)
    for _ in range(retries + 1):
        for due in orders.due(clock.advance(timeout)):
            assert due.client_order_id not in ended
            if isinstance(due, GiveUp):
                ended[due.client_order_id] = "given up"
    assert len(orders) == 0
    assert set(ended) == sent


class NaiveModel:
    """The rules read plainly: every order looked at on every call (the oracle)."""

    def __init__(self, timeout: float, retries: int) -> None:
        self.timeout, self.retries, self.up = timeout, retries, True
        self.orders: dict[str, list[float]] = {}  # coid -> [sent_at, due_at, queries]

    def due(self, now: float) -> set[tuple[str, str, int]]:
        if not self.up:
            return set()
        out: set[tuple[str, str, int]] = set()
        for coid, entry in list(self.orders.items()):
            if entry[1] > now:
                continue
            if entry[2] < self.retries:
                entry[2] += 1
                entry[1] = now + self.timeout
                out.add(("query", coid, int(entry[2])))
            else:
                del self.orders[coid]
                out.add(("give_up", coid, int(entry[2])))
        return out


@settings(max_examples=200, deadline=None)
@given(
    timeout=st.floats(min_value=0.01, max_value=10.0),
    retries=st.integers(min_value=0, max_value=4),
    steps=st.lists(st.tuples(st.sampled_from(["send", "answer", "down", "up", "tick"]),
                             st.integers(min_value=0, max_value=9), st.floats(min_value=0.0, max_value=4.0)),
                   max_size=80),
)
def test_looking_at_the_front_only_finds_exactly_what_the_plain_rules_find(
    timeout: float, retries: int, steps: list[tuple[str, int, float]]
) -> None:
    clock = FakeClock()
    orders = InflightOrders(timeout_s=timeout, retries=retries)
    model = NaiveModel(timeout, retries)
    for action, n, dt in steps:
        now = clock.advance(dt)
        coid = f"o{n}"
        if action == "send" and coid not in model.orders:
            orders.sent(coid, now)
            model.orders[coid] = [now, now + timeout, 0]
        elif action == "answer":
            assert (orders.answered(coid, now) is not None) == (model.orders.pop(coid, None) is not None)
        elif action == "down":
            orders.session_lost()
            model.up = False
        elif action == "up":
            orders.session_up(now)
            model.up = True
            for entry in model.orders.values():
                entry[1] = now + timeout
        got = {("query", a.client_order_id, a.attempt) if isinstance(a, QueryStatus)
               else ("give_up", a.client_order_id, a.queries) for a in orders.due(now)}
        assert got == model.due(now)
        expected_next = min((e[1] for e in model.orders.values()), default=None) if model.up else None
        assert orders.next_due() == expected_next
        assert sorted(orders.in_flight()) == sorted(model.orders)
