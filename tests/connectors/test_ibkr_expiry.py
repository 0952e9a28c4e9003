"""IB orders carry a goodTillDate; the fake TWS refuses an order arriving after it. The IB
connector against the fake TWS over loopback TCP, through a relay that can stall the link."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from actors.connectors.ibkr import ib_good_till
from messages import OrderCancelled, OrderFilled, OrderRejected, OrderType, RejectReason, VenuePositions
from tests.connectors.test_ibkr_connector import (
    ACCOUNT,
    NAME,
    TOPICS,
    make_config,
    make_engine,
    of,
    order,
    running_connector,
    send,
)
from tests.fault_proxy import FaultProxy
from tests.helpers import wait_for
from tests.recorder import Recorder
from venues.engine import VenueEngine
from venues.tws_venue import TwsVenue, gtd_problem

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def engine() -> VenueEngine:
    return make_engine()


@pytest.fixture
def venue(engine: VenueEngine) -> Iterator[TwsVenue]:
    tws = TwsVenue(engine)
    tws.start()
    yield tws
    tws.stop()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder.spawn("recorder", TOPICS)


def resting(coid: str, price: str = "250") -> object:
    """A DAY limit order to buy one share (marketable at 250: it fills at once)."""
    return order(coid, quantity=1, order_type=OrderType.LIMIT, limit_price=Decimal(price))


def test_good_till_is_whole_utc_seconds_never_earlier() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    ns = int(moment.timestamp()) * 1_000_000_000
    assert ib_good_till(ns) == "20260304 05:06:07 UTC"
    assert ib_good_till(ns + 1) == "20260304 05:06:08 UTC"


def test_the_fake_tws_judges_good_till_dates() -> None:
    now = time.time_ns()
    assert gtd_problem(ib_good_till(now + 5_000_000_000), now) == ""
    assert "expired" in gtd_problem(ib_good_till(now - 2_000_000_000), now)
    assert gtd_problem(datetime.fromtimestamp(now / 1e9 + 5, UTC).strftime("%Y%m%d-%H:%M:%S"), now) == ""
    assert "needs a goodTillDate" in gtd_problem("", now)
    assert "not YYYYMMDD" in gtd_problem("soon", now)


def test_a_resting_order_goes_gtd_and_works(venue: TwsVenue, engine: VenueEngine, recorder: Recorder,
                                            tmp_path: Path) -> None:
    with running_connector(make_config(venue.port, symbols=(), order_expiry_s=60.0), tmp_path):
        recorder.wait_for(of(VenuePositions, request_id=""), timeout_s=10)
        send(resting("gtd-rest", price="100"))  # below the market: it rests
        wait_for(lambda: any(o.order.client_order_id == "gtd-rest" for o in engine.open_orders(ACCOUNT)),
                 timeout_s=10, what="the GTD order works at the venue")
        [working] = [o for o in engine.open_orders(ACCOUNT) if o.order.client_order_id == "gtd-rest"]
        assert working.order.limit_price == Decimal(100)
        tifs = {r.client_order_id: r.tif for r in venue._state.orders}  # what TWS recorded
        assert tifs["gtd-rest"] == "GTD"
        send(resting("gtd-fill"))
        send(order("market", quantity=1))
        recorder.wait_for(of(OrderFilled, client_order_id="gtd-fill"), timeout_s=10)
        recorder.wait_for(of(OrderFilled, client_order_id="market"), timeout_s=10)
        tifs = {r.client_order_id: r.tif for r in venue._state.orders}
        assert tifs["gtd-fill"] == "GTD" and tifs["market"] == "DAY"  # no expiry on a market order


def test_an_order_arriving_after_its_good_till_date_is_refused_by_tws(
    venue: TwsVenue, engine: VenueEngine, recorder: Recorder, tmp_path: Path
) -> None:
    """The link stalls for 3.5 s right after a resting order good for 1 s is written; when it
    reaches TWS its goodTillDate has passed and TWS refuses it (error 201)."""
    with FaultProxy(venue.port) as proxy, running_connector(
        make_config(proxy.port, symbols=(), order_expiry_s=1.0, stale_after_s=30.0), tmp_path
    ):
        recorder.wait_for(of(VenuePositions, request_id=""), timeout_s=10)
        send(order("warm-up", quantity=1))  # the contract is looked up once, before the stall
        recorder.wait_for(of(OrderFilled, client_order_id="warm-up"), timeout_s=10)
        proxy.stall()
        stalled_at = time.monotonic()
        send(resting("expiring"))
        threading.Event().wait(max(0.0, stalled_at + 3.5 - time.monotonic()))
        proxy.heal()
        refused = recorder.wait_for(of(OrderRejected, client_order_id="expiring"), timeout_s=15)
        assert refused.reason is RejectReason.VENUE
        assert refused.text.startswith("IB 201:") and "goodTillDate" in refused.text
        assert "expiring" not in {f.client_order_id for f in engine.executions(ACCOUNT)}


def test_a_working_gtd_order_is_cancelled_at_its_good_till_date(
    venue: TwsVenue, engine: VenueEngine, recorder: Recorder, tmp_path: Path
) -> None:
    with running_connector(make_config(venue.port, symbols=(), order_expiry_s=1.0), tmp_path):
        recorder.wait_for(of(VenuePositions, request_id=""), timeout_s=10)
        mark = recorder.count()
        send(resting("short-lived", price="100"))  # rests below the market
        sent = time.monotonic()

        def working() -> bool:
            return any(o.order.client_order_id == "short-lived" for o in engine.open_orders(ACCOUNT))

        wait_for(working, timeout_s=10, what="the GTD order works at the venue")

        def expired() -> bool:
            engine.step()  # the venue looks at expiries on every engine step
            return not working()

        wait_for(expired, timeout_s=10, interval_s=0.1, what="the GTD order expires")
        assert time.monotonic() - sent >= 1.0  # not before its goodTillDate
        cancelled = recorder.wait_for(of(OrderCancelled, client_order_id="short-lived"), after=mark)
        assert cancelled.venue == NAME
        assert "short-lived" not in {f.client_order_id for f in engine.executions(ACCOUNT)}
