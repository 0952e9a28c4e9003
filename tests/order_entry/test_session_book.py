"""The per-session policy (core.order_entry) with a fake clock, and the gateway's
configuration checks."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors.errors import ConfigError
from core.order_entry import CancelReject, ExecReport, SessionBook, SessionLimits, credentials_match
from messages import (
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    RejectReason,
    Side,
    SubmitOrder,
)
from tradeguard.settings import load_settings, parse_settings

LIMITS = SessionLimits(max_order_quantity=Decimal(100), max_order_notional=Decimal(10_000),
                       max_position=Decimal(150), max_orders_per_s=3)
_ids = iter(range(1, 10_000))


def order(quantity: int | str = 10, side: Side = Side.BUY, price: str | None = None,
          symbol: str = "AAPL") -> SubmitOrder:
    return SubmitOrder(client_order_id=f"o{next(_ids)}", venue="paper", symbol=symbol, side=side,
                       quantity=Decimal(quantity), order_type=OrderType.LIMIT if price else OrderType.MARKET,
                       limit_price=Decimal(price) if price else None, source="fix:S")


def fill(o: SubmitOrder, quantity: int, price: str = "50", leaves: int = 0, fill_id: str = "") -> OrderFilled:
    return OrderFilled(client_order_id=o.client_order_id, venue="paper", fill_id=fill_id or f"f{next(_ids)}",
                       symbol=o.symbol, side=o.side, quantity=Decimal(quantity), price=Decimal(price),
                       leaves_quantity=Decimal(leaves))


def test_the_rate_counts_every_order_within_a_sliding_second() -> None:
    book = SessionBook(LIMITS)
    mid = Decimal(50)
    assert [book.check(order(), mid, t) for t in (0.0, 0.1, 0.2)] == [None, None, None]
    refused = book.check(order(), mid, 0.5)
    assert refused is not None and refused[0] is RejectReason.RATE_LIMIT
    assert book.check(order(), mid, 1.05) is not None  # 0.1, 0.2, 0.5 are still within the second
    assert book.check(order(), mid, 1.6) is None  # 0.5 and 1.05 remain


def test_quantity_notional_and_a_missing_price() -> None:
    book = SessionBook(LIMITS)
    assert book.check(order(101), Decimal(1), 0.0) == (RejectReason.MAX_QUANTITY,
                                                       "session limit: quantity 101 above 100")
    refused = book.check(order(100, price="100.01"), None, 10.0)
    assert refused is not None and refused[0] is RejectReason.MAX_NOTIONAL
    assert book.check(order(100, price="100"), None, 20.0) is None  # exactly at the limit
    refused = book.check(order(1), None, 30.0)
    assert refused is not None and refused[0] is RejectReason.NO_MARKET


def test_position_counts_fills_and_same_side_working_orders_and_lets_reductions_pass() -> None:
    book = SessionBook(LIMITS)
    first = order(100)
    book.add(first, "c1")
    book.handle(OrderAccepted(client_order_id=first.client_order_id, venue="paper", symbol="AAPL"))
    book.handle(fill(first, 100))
    assert book.positions[("paper", "AAPL")] == 100
    working = order(40, price="50")
    assert book.check(working, None, 10.0) is None
    book.add(working, "c2")
    # 100 filled + 40 working + 20 = 160 > 150
    refused = book.check(order(20, price="50"), None, 20.0)
    assert refused is not None and refused[0] is RejectReason.MAX_POSITION
    assert book.check(order(10, price="50"), None, 30.0) is None  # 150: at the limit
    assert book.check(order(100, side=Side.SELL, price="50"), None, 40.0) is None  # reduces
    # Another symbol is its own position.
    assert book.check(order(100, price="50", symbol="MSFT"), None, 50.0) is None


def test_events_become_execution_reports() -> None:
    book = SessionBook(LIMITS)
    o = order(10, price="50")
    book.add(o, "client-1")
    [new] = book.handle(OrderAccepted(client_order_id=o.client_order_id, venue="paper", symbol="AAPL"))
    assert isinstance(new, ExecReport) and (new.exec_type, new.ord_status, new.leaves_qty) == ("0", "0", 10)
    [part] = book.handle(fill(o, 4, "50", leaves=6, fill_id="x1"))
    assert isinstance(part, ExecReport)
    assert (part.exec_type, part.ord_status, part.cum_qty, part.leaves_qty) == ("F", "1", 4, 6)
    assert part.last_qty == 4
    assert book.handle(fill(o, 4, "50", leaves=6, fill_id="x1")) == []  # the same fill again
    [rest] = book.handle(fill(o, 6, "51", leaves=0))
    assert isinstance(rest, ExecReport)
    assert (rest.ord_status, rest.cum_qty, rest.leaves_qty) == ("2", 10, 0)
    assert rest.avg_px == Decimal("50.6") and rest.last_px == 51
    assert book.handle(OrderCancelled(client_order_id=o.client_order_id, venue="paper")) == []  # done


def test_a_refused_cancel_and_a_governor_rejection() -> None:
    book = SessionBook(LIMITS)
    o = order(5, price="50")
    book.add(o, "c1")
    [rejected] = book.handle(OrderRejected(client_order_id=o.client_order_id, venue="paper",
                                        reason=RejectReason.PRICE_BAND, text="outside the band"))
    assert isinstance(rejected, ExecReport)
    assert (rejected.exec_type, rejected.ord_status) == ("8", "8")
    assert rejected.text == "price_band: outside the band"
    resting = order(5, price="50")
    entry = book.add(resting, "c2")
    book.handle(OrderAccepted(client_order_id=resting.client_order_id, venue="paper", symbol="AAPL"))
    entry.cancel_cl_ord_id = "cx"
    [refused] = book.handle(OrderRejected(client_order_id=resting.client_order_id, venue="paper",
                                          reason=RejectReason.VENUE, text="too late"))
    assert isinstance(refused, CancelReject)
    assert (refused.cl_ord_id, refused.orig_cl_ord_id, refused.response_to, refused.text) == (
        "cx", "c2", "1", "venue: too late")
    assert refused.ord_status == "0"  # still working
    assert book.working() == [entry]
    entry.cancel_cl_ord_id = "cy"
    [cancelled] = book.handle(OrderCancelled(client_order_id=resting.client_order_id, venue="paper"))
    assert isinstance(cancelled, ExecReport)
    assert (cancelled.cl_ord_id, cancelled.orig_cl_ord_id, cancelled.ord_status) == ("cy", "c2", "4")
    assert book.working() == []


def test_credentials() -> None:
    assert credentials_match("S1", "pw", "S1", "pw")
    assert not credentials_match("S1", "pw", "S1", "PW")
    assert not credentials_match("S1", "pw", "S2", "pw")
    assert not credentials_match("S1", "pw", None, None)
    assert not credentials_match("S1", None, "S1", "")  # no configured password admits nobody
    assert not credentials_match("S1", "", "S1", "")


def settings_with(session: dict[str, Any] | None = None, environ: dict[str, str] | None = None,
                  **gateway: Any) -> object:
    data = {
        "connectors": [{"name": "paper", "kind": "paper", "symbols": ["AAPL"]}],
        "order_entry": {"fix": {"sessions": [{"sender_comp_id": "S1", **(session or {})}], **gateway}},
    }
    return parse_settings(data, environ={"TRADEGUARD_FIX_S1_PASSWORD": "x"} if environ is None else environ)


@pytest.mark.parametrize(("change", "field"), [
    ({"session": {"max_order_quantity": "0"}}, "order_entry.fix.sessions[0].max_order_quantity"),
    ({"session": {"max_position": "NaN"}}, "order_entry.fix.sessions[0].max_position"),
    ({"session": {"max_orders_per_s": 0}}, "order_entry.fix.sessions[0].max_orders_per_s"),
    ({"session": {"default_venue": "nowhere"}}, "order_entry.fix.sessions[0].default_venue"),
    ({"environ": {}}, "order_entry.fix.sessions[0].password_env"),
    ({"host": "0.0.0.0"}, "order_entry.fix.host"),
    ({"port": 70000}, "order_entry.fix.port"),
    ({"begin_string": "FIX.4.2"}, "order_entry.fix.begin_string"),
    ({"sessions": []}, "order_entry.fix.sessions"),
    ({"session": {"bogus": 1}}, "order_entry.fix.sessions[0]"),
])
def test_bad_gateway_settings_are_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_with(**change)
    assert str(caught.value).startswith(field)


def test_the_shipped_order_entry_config_is_valid() -> None:
    shipped = Path(__file__).resolve().parents[2] / "config" / "order-entry.toml"
    settings = load_settings(shipped,
                             environ={"TRADEGUARD_FIX_STRAT1_PASSWORD": "x"})
    gateway = settings.order_entry.fix
    assert gateway is not None
    assert (gateway.host, gateway.port, gateway.begin_string, gateway.comp_id) == (
        "127.0.0.1", 5501, "FIX.4.4", "TRADEGUARD")
    assert [(s.sender_comp_id, s.password_variable, s.default_venue) for s in gateway.sessions] == [
        ("STRAT1", "TRADEGUARD_FIX_STRAT1_PASSWORD", "paper")]
    assert settings.venues() == {"paper": ("AAPL", "MSFT")}
