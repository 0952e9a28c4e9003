"""Status order counters come from the journal: a connector that resynchronises after a
reconnect re-delivers every execution of the day, and none of them is counted twice."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from actors import topics
from messages import ConnectorUp
from supervision import SUPERVISION_TOPIC
from tests.helpers import wait_for
from tests.recorder import Recorder
from tests.system.test_failsafe_paper import ACCOUNT, VENUE, buy_now, fast_settings, governor_mode, venue
from tradeguard.app import Service
from tradeguard.control import send_command


def test_a_resync_after_a_reconnect_never_counts_a_fill_twice(service: Callable[..., Service]) -> None:
    svc = service(fast_settings(strategy=False))
    engine = venue().engine
    wait_for(lambda: engine.quote("AAPL") is not None and governor_mode(svc) == "LIVE",
             what="the venue quoting and the governor LIVE")
    for n in range(3):
        buy_now(f"count-{n}", "1")
    wait_for(lambda: len(engine.executions(ACCOUNT)) == 3, what="three executions at the venue")
    wait_for(lambda: send_command(svc.state_dir, "status")["orders"]["fills"] == 3,
             what="three fills counted")

    ups = Recorder.spawn("ups", [topics.CONNECTORS, SUPERVISION_TOPIC])
    venue().fail("dropped by the test")                          # the session drops; the connector restarts
    venue().recover()
    ups.wait_for(lambda m: isinstance(m, ConnectorUp) and m.name == VENUE, timeout_s=10)
    wait_for(lambda: governor_mode(svc) == "LIVE", timeout_s=10, what="LIVE again")
    buy_now("count-after", "1")                                  # one more, after the resync
    wait_for(lambda: len(engine.executions(ACCOUNT)) == 4, what="the fourth execution")
    orders = wait_for(lambda: (o := send_command(svc.state_dir, "status")["orders"])["fills"] >= 4 and o,
                      what="the fourth fill counted")
    assert isinstance(orders, dict)
    assert (orders["fills"], orders["filled"], orders["submitted"]) == (4, 4, 4), orders
    assert {p.symbol: p.quantity for p in engine.positions(ACCOUNT)} == {"AAPL": Decimal(4)}
