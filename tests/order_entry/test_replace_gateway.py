"""OrderCancelReplaceRequest (35=G) end to end: a quickfix initiator, the gateway, the risk
governor, and both the paper venue and the simulated FIX venue (over its own FIX session).
No connector modifies an order in place, so a replace is cancel-then-new at tradeguard:
what the venue holds afterwards is one order of the new quantity and price."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from messages import GetRiskState
from supervision import registry
from tests.helpers import wait_for
from tests.order_entry.fix_client import FixClient
from tests.order_entry.test_fix_gateway import ACCOUNT, PASSWORDS, clients, passwords, resting_buy_price
from tests.system.processes import free_port
from tradeguard.app import Service
from tradeguard.settings import parse_settings
from venues.engine import EngineConfig, EngineRunner, VenueEngine
from venues.fix_venue import FixVenue
from venues.paper import paper_venue

__all__ = ["clients", "passwords"]  # fixtures used here

FIX_ACCOUNT = "TRADEGUARD"  # the FIX venue trades for the counterparty's CompID

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fix_engine(tmp_path: Path) -> Iterator[tuple[VenueEngine, int]]:
    """A simulated FIX venue on a free port, its engine stepping at test speed."""
    engine = VenueEngine("sim", EngineConfig(depth=Decimal(100), seed=11))
    runner = EngineRunner(engine, interval_s=0.02)
    runner.start()
    port = free_port()
    venue = FixVenue(engine, port, tmp_path / "fix-venue")
    venue.start()
    try:
        yield engine, port
    finally:
        venue.stop()
        runner.stop()


def start(service: Callable[..., Service], fix_port: int | None = None, **session: Any) -> int:
    port = free_port()
    connectors: list[dict[str, Any]] = [
        {"name": "paper", "kind": "paper", "symbols": ["AAPL", "MSFT"], "quote_interval_s": 0.02,
         "persist": False, "health_interval_s": 0.2}]
    if fix_port is not None:
        connectors.append({"name": "fix", "kind": "fix", "port": fix_port, "heartbeat_s": 1,
                           "connect_timeout_s": 2.0, "symbols": ["AAPL"], "health_interval_s": 0.2})
    limits = {"default_venue": "paper", "max_order_quantity": "50", "max_order_notional": "10000",
              "max_position": "30", "max_orders_per_s": 50, **session}
    data: dict[str, Any] = {
        "service": {"on_shutdown": "leave", "shutdown_timeout_s": 5.0, "start_timeout_s": 20.0},
        "risk": {"max_orders_per_s": 1000},
        "connectors": connectors,
        "strategies": [],
        "order_entry": {"fix": {"port": port, "sessions": [{"sender_comp_id": "STRAT1", **limits}]}},
    }
    env = {f"TRADEGUARD_FIX_{k}_PASSWORD": v for k, v in PASSWORDS.items()}
    svc = service(parse_settings(data, environ=env))
    wait_for(lambda: paper_venue("paper").engine.quote("AAPL") is not None, timeout_s=10, what="quotes")
    if fix_port is not None:
        wait_for(lambda: (svc.ask("risk_governor", GetRiskState()) or {}).get("venue_states", {}).get("fix")
                 == "ACTIVE", timeout_s=30, what="the FIX venue ACTIVE")
    return port


def logged_on(client: FixClient) -> FixClient:
    client.logon()
    wait_for(lambda: registry.lookup("fix_gateway") is not None, timeout_s=10, what="the gateway")
    return client


def test_a_replace_at_the_paper_venue_and_the_replaces_that_cannot_be_done(
        service: Callable[..., Service], clients: Callable[..., FixClient], passwords: None) -> None:
    port = start(service)
    client = logged_on(clients(port))
    engine = paper_venue("paper").engine
    low = resting_buy_price("AAPL")
    order = client.new_order("AAPL", "buy", 5, price=low)
    client.report(order, "0")
    lower = str(Decimal(low) - Decimal("0.50"))
    replace_id = client.replace(order, "AAPL", "buy", 8, price=lower)
    client.report(replace_id, "E")
    replaced = client.report(replace_id, "5")
    assert (replaced[41], replaced[39]) == (order, "0")
    assert (Decimal(replaced[38]), Decimal(replaced[151]), Decimal(replaced[14])) == (8, 8, 0)
    # The venue holds one order: the new quantity at the new price.
    [working] = engine.open_orders(ACCOUNT)
    assert (working.order.quantity, working.order.limit_price) == (8, Decimal(lower))
    # A replacement beyond a session limit: refused, the order left as it is.
    too_big = client.replace(replace_id, "AAPL", "buy", 51, price=lower)
    reject = client.cancel_reject(too_big)
    assert (reject[434], reject[102], reject[41]) == ("2", "99", replace_id)
    assert reject[58].startswith("max_quantity:")
    # Unknown order, and a ClOrdID already used.
    unknown = client.cancel_reject(client.replace("no-such-order", "AAPL", "buy", 2, price=lower))
    assert (unknown[434], unknown[102]) == ("2", "1")
    reused = client.cancel_reject(client.replace(replace_id, "AAPL", "buy", 2, price=lower, cl_ord_id=order))
    assert (reused[434], reused[102]) == ("2", "6")
    [working] = engine.open_orders(ACCOUNT)
    assert (working.order.quantity, working.order.limit_price) == (8, Decimal(lower))
    # A replace of an order that already filled: too late.
    filled = client.new_order("AAPL", "buy", 2)
    client.wait(lambda m: m.get(11) == filled and m.get(39) == "2", what="the market order filled")
    late = client.cancel_reject(client.replace(filled, "AAPL", "buy", 3))
    assert (late[434], late[102], late[39]) == ("2", "0", "2")
    # The replaced order cancels under its new ClOrdID.
    cancel_id = client.cancel(replace_id)
    client.report(cancel_id, "4")
    wait_for(lambda: engine.open_orders(ACCOUNT) == [], timeout_s=10, what="nothing working")


def test_a_replace_at_the_fix_venue_reprices_into_a_fill(
        service: Callable[..., Service], clients: Callable[..., FixClient], passwords: None,
        fix_engine: tuple[VenueEngine, int]) -> None:
    engine, fix_port = fix_engine
    port = start(service, fix_port)
    client = logged_on(clients(port))
    quote = engine.quote("AAPL")
    assert quote is not None
    low = str((quote.bid * Decimal("0.97")).quantize(Decimal("0.01")))
    order = client.new_order("AAPL", "buy", 6, price=low, venue="fix")
    client.report(order, "0", timeout_s=15)
    wait_for(lambda: len(engine.open_orders(FIX_ACCOUNT)) == 1, timeout_s=10, what="resting at the FIX venue")
    # Smaller, at a price that trades at once: cancel-then-new at the FIX venue, then the fill.
    quote = engine.quote("AAPL")
    assert quote is not None
    marketable = str((quote.ask * Decimal("1.01")).quantize(Decimal("0.01")))
    replace_id = client.replace(order, "AAPL", "buy", 4, price=marketable, venue="fix")
    client.report(replace_id, "E", timeout_s=15)
    replaced = client.report(replace_id, "5", timeout_s=15)
    assert replaced[41] == order and Decimal(replaced[38]) == 4
    trade = client.wait(lambda m: m.get(11) == replace_id and m.get(39) == "2", timeout_s=15,
                        what="the replacement filled")
    assert Decimal(trade[14]) == 4 and Decimal(trade[151]) == 0
    # At the venue: the original cancelled, 4 bought, nothing working.
    wait_for(lambda: {p.symbol: p.quantity for p in engine.positions(FIX_ACCOUNT) if p.quantity}
             == {"AAPL": Decimal(4)}, timeout_s=10, what="long 4 at the FIX venue")
    assert engine.open_orders(FIX_ACCOUNT) == []


def test_a_replacement_the_governor_refuses_ends_the_order_and_says_why(
        service: Callable[..., Service], clients: Callable[..., FixClient], passwords: None) -> None:
    """The session's limits pass the replace, the original is cancelled, then the governor's
    price band refuses the replacement: cancel-then-new cannot put the original back."""
    port = start(service)
    client = logged_on(clients(port))
    engine = paper_venue("paper").engine
    low = resting_buy_price("AAPL")
    order = client.new_order("AAPL", "buy", 2, price=low)
    client.report(order, "0")
    far = str((Decimal(low) * Decimal("0.5")).quantize(Decimal("0.01")))  # 50% below: outside the band
    replace_id = client.replace(order, "AAPL", "buy", 2, price=far)
    client.report(replace_id, "E")
    reject = client.cancel_reject(replace_id)
    assert (reject[434], reject[102], reject[39], reject[41]) == ("2", "99", "4", order)
    assert reject[58].startswith("price_band:")
    canceled = client.report(order, "4")
    assert canceled[58].startswith("cancelled for a replace that was refused: price_band:")
    assert engine.open_orders(ACCOUNT) == []
    assert not any(m.get(150) == "5" for m in client.reports(replace_id))
