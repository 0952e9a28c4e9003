"""The FIX order-entry gateway end to end: the whole service on the paper venue, a real
quickfix initiator logging on over loopback, orders through the session's limits, the risk
governor and the venue, and the execution reports that come back."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors.order_entry import GetGatewayState
from messages.fix_spec import utc_timestamp
from supervision import registry
from tests.helpers import wait_for
from tests.order_entry.fix_client import FixClient
from tests.system.processes import free_port
from tradeguard.app import Service
from tradeguard.settings import Settings, parse_settings
from venues.paper import paper_venue

ACCOUNT = "PAPER-1"
PASSWORDS = {"STRAT1": "s3cret-one", "STRAT2": "s3cret-two"}


def gateway_settings(port: int, strat2: dict[str, Any] | None = None, **session: Any) -> Settings:
    """Paper venue at test speed, no strategy, the gateway with STRAT1 and STRAT2 (``strat2``
    overrides for the second)."""
    limits = {"default_venue": "paper", "max_order_quantity": "50", "max_order_notional": "10000",
              "max_position": "30", "max_orders_per_s": 50, **session}
    data: dict[str, Any] = {
        "service": {"on_shutdown": "leave", "shutdown_timeout_s": 5.0, "start_timeout_s": 20.0},
        "risk": {"max_orders_per_s": 1000},
        "connectors": [{"name": "paper", "kind": "paper", "symbols": ["AAPL", "MSFT"],
                        "quote_interval_s": 0.02, "persist": False, "health_interval_s": 0.2}],
        "order_entry": {"fix": {"port": port, "sessions": [
            {"sender_comp_id": "STRAT1", **limits},
            {"sender_comp_id": "STRAT2", **limits, **(strat2 or {})},
        ]}},
    }
    return parse_settings(data, environ={f"TRADEGUARD_FIX_{k}_PASSWORD": v for k, v in PASSWORDS.items()})


@pytest.fixture
def passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    for sender, password in PASSWORDS.items():
        monkeypatch.setenv(f"TRADEGUARD_FIX_{sender}_PASSWORD", password)


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Callable[..., FixClient]]:
    made: list[FixClient] = []

    def make(port: int, sender: str = "STRAT1", password: str | None = None) -> FixClient:
        client = FixClient(port, tmp_path / f"client-{sender}-{len(made)}", sender,
                           PASSWORDS[sender] if password is None else password)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            client.stop()


def start(service: Callable[..., Service], strat2: dict[str, Any] | None = None, **session: Any) -> int:
    port = free_port()
    service(gateway_settings(port, strat2, **session))
    wait_for(lambda: paper_venue("paper").engine.quote("AAPL") is not None, timeout_s=10, what="quotes")
    return port


def mid(symbol: str) -> Decimal:
    quote = paper_venue("paper").engine.quote(symbol)
    assert quote is not None
    return quote.mid


def resting_buy_price(symbol: str) -> str:
    """A limit price inside the governor's price band that will not trade soon."""
    return str((mid(symbol) * Decimal("0.97")).quantize(Decimal("0.01")))


@pytest.mark.timeout(90)
def test_an_order_within_the_limits_trades_and_reports_the_fill(
        service: Callable[..., Service], clients: Callable[..., FixClient], passwords: None) -> None:
    port = start(service)
    client = clients(port)
    client.logon()
    wait_for(lambda: "STRAT1" in registry.lookup("fix_gateway").ask(GetGatewayState(), timeout=5).logged_on,
             timeout_s=10, what="the gateway sees the session")
    cl_ord_id = client.new_order("AAPL", "buy", 10)
    new = client.report(cl_ord_id, "0")
    assert new[39] == "0" and Decimal(new[151]) == 10 and Decimal(new[14]) == 0
    trade = client.wait(lambda m: m.get(11) == cl_ord_id and m.get(150) == "F" and m.get(39) == "2",
                        what="the full fill")
    assert Decimal(trade[14]) == 10 and Decimal(trade[151]) == 0
    assert sum(Decimal(m[32]) for m in client.reports(cl_ord_id) if m[150] == "F") == 10
    assert Decimal(trade[6]) > 0 and Decimal(trade[31]) > 0
    # The fill is the venue's: the paper account holds the position.
    positions = {p.symbol: p.quantity for p in paper_venue("paper").engine.positions(ACCOUNT)}
    assert positions.get("AAPL") == 10


@pytest.mark.timeout(90)
def test_each_session_limit_is_enforced_with_a_rejection_report(
        service: Callable[..., Service], clients: Callable[..., FixClient], passwords: None) -> None:
    port = start(service)
    client = clients(port)
    client.logon()

    def rejection(cl_ord_id: str) -> str:
        report = client.report(cl_ord_id, "8")
        assert report[39] == "8" and Decimal(report[14]) == 0 and Decimal(report[151]) == 0
        return report[58]

    assert rejection(client.new_order("AAPL", "buy", 51)).startswith("max_quantity:")
    assert rejection(client.new_order("MSFT", "buy", 30)).startswith("max_notional:")  # ~410 x 30
    first = client.new_order("AAPL", "buy", 20)
    client.wait(lambda m: m.get(11) == first and m.get(39) == "2", what="the first buy filled")
    assert rejection(client.new_order("AAPL", "buy", 15)).startswith("max_position:")  # 20 + 15 > 30
    # Reducing is never refused for position.
    sell = client.new_order("AAPL", "sell", 15)
    client.wait(lambda m: m.get(11) == sell and m.get(39) == "2", what="the sell filled")
    # The governor's own checks answer the same way: a symbol no venue trades.
    assert rejection(client.new_order("ZZZZ", "buy", 1, price="10")).startswith("unknown_symbol:")
    # ExDestination naming no venue.
    assert rejection(client.new_order("AAPL", "buy", 1, venue="nowhere")).startswith("unknown_venue:")
    # Nothing refused reached the venue: only the 20 bought and 15 sold traded.
    positions = {p.symbol: p.quantity for p in paper_venue("paper").engine.positions(ACCOUNT)}
    assert positions == {"AAPL": 5}


@pytest.mark.timeout(90)
def test_cancel_mass_cancel_and_replace(
        service: Callable[..., Service], clients: Callable[..., FixClient], passwords: None) -> None:
    port = start(service)
    client = clients(port)
    client.logon()
    engine = paper_venue("paper").engine
    price = resting_buy_price("AAPL")
    one = client.new_order("AAPL", "buy", 5, price=price)
    client.report(one, "0")
    cancel_id = client.cancel(one)
    cancelled = client.report(cancel_id, "4")
    assert cancelled[41] == one and cancelled[39] == "4" and Decimal(cancelled[151]) == 0
    # Cancelling it again: OrderCancelReject (too late).
    again = client.cancel(one)
    reject = client.wait(lambda m: m.get(35) == "9" and m.get(11) == again, what="cancel reject")
    assert reject[41] == one
    # Mass cancel: only this session's orders.
    orders = [client.new_order(symbol, "buy", 2, price=resting_buy_price(symbol))
              for symbol in ("AAPL", "MSFT")]
    for cl_ord_id in orders:
        client.report(cl_ord_id, "0")
    assert len(engine.open_orders(ACCOUNT)) == 2
    client.send("q", {11: "mass-1", 530: "7", 60: "20250101-00:00:00.000"})
    report = client.wait(lambda m: m.get(35) == "r", what="mass cancel report")
    assert report[531] == "7" and report[533] == "2"
    for cl_ord_id in orders:
        client.report(cl_ord_id, "4")
    wait_for(lambda: engine.open_orders(ACCOUNT) == [], timeout_s=10, what="nothing working at the venue")
    # Cancel/replace: the resting order becomes 4 at the venue, under the new ClOrdID.
    resting = client.new_order("AAPL", "buy", 3, price=price)
    client.report(resting, "0")
    replace_id = client.replace(resting, "AAPL", "buy", 4, price=price)
    pending = client.report(replace_id, "E")
    assert pending[41] == resting and pending[39] == "E"
    replaced = client.report(replace_id, "5")
    assert replaced[41] == resting and Decimal(replaced[38]) == 4 and Decimal(replaced[151]) == 4
    assert [w.order.quantity for w in engine.open_orders(ACCOUNT)] == [Decimal(4)]


@pytest.mark.timeout(90)
def test_a_wrong_password_gets_a_logout_never_a_logon(
        service: Callable[..., Service], clients: Callable[..., FixClient], passwords: None) -> None:
    port = start(service)
    intruder = clients(port, password="wrong")
    intruder.start()
    wait_for(lambda: intruder.logout_texts, timeout_s=15, what="a Logout for the wrong password")
    assert intruder.logons == 0 and not intruder.logged_on.is_set()
    state = registry.lookup("fix_gateway").ask(GetGatewayState(), timeout=5)
    assert state.refused_logons >= 1 and state.logged_on == ()
    intruder.stop()
    # The right password is let in.
    client = clients(port)
    client.logon()
    assert client.logons == 1


@pytest.mark.timeout(90)
def test_losing_the_connection_cancels_the_sessions_orders_at_the_venue(
        service: Callable[..., Service], clients: Callable[..., FixClient], passwords: None) -> None:
    port = start(service)
    engine = paper_venue("paper").engine
    client = clients(port)
    other = clients(port, "STRAT2")
    client.logon()
    other.logon()
    mine = [client.new_order("AAPL", "buy", 2, price=resting_buy_price("AAPL")) for _ in range(2)]
    theirs = other.new_order("MSFT", "buy", 1, price=resting_buy_price("MSFT"))
    for cl_ord_id in mine:
        client.report(cl_ord_id, "0")
    other.report(theirs, "0")
    assert len(engine.open_orders(ACCOUNT)) == 3
    client.drop_connection()  # TCP loss, no Logout
    wait_for(lambda: [w.order.symbol for w in engine.open_orders(ACCOUNT)] == ["MSFT"], timeout_s=15,
             what="STRAT1's orders cancelled at the venue, STRAT2's left working")


@pytest.mark.timeout(90)
def test_a_logout_cancels_unless_the_session_keeps_its_orders(
        service: Callable[..., Service], clients: Callable[..., FixClient], passwords: None) -> None:
    port = start(service, strat2={"cancel_on_disconnect": False})
    engine = paper_venue("paper").engine
    cancels = clients(port)
    keeps = clients(port, "STRAT2")
    cancels.logon()
    keeps.logon()
    gone = cancels.new_order("AAPL", "buy", 2, price=resting_buy_price("AAPL"))
    kept = keeps.new_order("MSFT", "buy", 1, price=resting_buy_price("MSFT"))
    cancels.report(gone, "0")
    keeps.report(kept, "0")
    keeps.stop()  # a Logout: STRAT2 keeps its order working
    cancels.stop()  # a Logout: STRAT1's order is cancelled
    wait_for(lambda: [w.order.symbol for w in engine.open_orders(ACCOUNT)] == ["MSFT"], timeout_s=15,
             what="STRAT1's order cancelled at the venue, STRAT2's still working")
    state = registry.lookup("fix_gateway").ask(GetGatewayState(), timeout=5)
    assert state.logged_on == () and state.working == {"STRAT1": 0, "STRAT2": 1}


@pytest.mark.timeout(90)
def test_a_session_over_its_rate_is_refused_without_affecting_another(
        service: Callable[..., Service], clients: Callable[..., FixClient], passwords: None) -> None:
    port = start(service, max_orders_per_s=3)
    busy = clients(port)
    calm = clients(port, "STRAT2")
    busy.logon()
    calm.logon()
    burst = [busy.new_order("AAPL", "buy", 1) for _ in range(10)]
    outcomes = {}
    for cl_ord_id in burst:
        report = busy.wait(lambda m, c=cl_ord_id: m.get(11) == c and m.get(150) in ("0", "8"),
                           what=f"first report of {cl_ord_id}")
        outcomes[cl_ord_id] = report.get(58, "") if report[150] == "8" else "new"
    refused = [c for c, text in outcomes.items() if text.startswith("rate_limit:")]
    assert refused, f"no order of the burst was refused for rate: {outcomes}"
    assert len(refused) <= 7
    calm_order = calm.new_order("AAPL", "buy", 1)
    calm.wait(lambda m: m.get(11) == calm_order and m.get(39) == "2", what="the calm session's fill")


@pytest.mark.timeout(90)
def test_an_order_that_is_no_order_is_refused_and_the_gateway_serves_on(
        service: Callable[..., Service], clients: Callable[..., FixClient], passwords: None) -> None:
    port = start(service)
    client = clients(port)
    client.logon()
    client.send("D", {11: "bad-1", 55: "AAPL", 54: "1", 38: "-5", 40: "1", 60: "20250101-00:00:00.000"})
    refused = client.wait(lambda m: m.get(35) == "j" and m.get(379) == "bad-1", what="a business reject")
    assert "quantity" in refused[58]
    client.send("D", {11: "bad-2", 55: "AAPL", 54: "7", 38: "5", 40: "1", 60: "20250101-00:00:00.000"})
    client.wait(lambda m: m.get(35) == "j" and m.get(379) == "bad-2", what="unsupported side refused")
    good = client.new_order("AAPL", "buy", 1)
    client.wait(lambda m: m.get(11) == good and m.get(39) == "2", what="the next order filled")
    state = registry.lookup("fix_gateway").ask(GetGatewayState(), timeout=5)
    assert state.rejected_requests == 2 and state.callback_errors == 0
    assert paper_venue("paper").engine.positions(ACCOUNT)[0].quantity == 1


def _raw(seq: int, msg_type: str, fields: list[tuple[int, str]], sender: str = "STRAT1") -> bytes:
    """One FIX 4.4 message written by hand (for a client that goes silent on purpose)."""
    body = "".join(f"{tag}={value}\x01" for tag, value in [
        (35, msg_type), (49, sender), (56, "TRADEGUARD"), (34, str(seq)), (52, utc_timestamp()),
        *fields])
    head = f"8=FIX.4.4\x019={len(body.encode())}\x01"
    checksum = sum((head + body).encode()) % 256
    return f"{head}{body}10={checksum:03d}\x01".encode()


@pytest.mark.timeout(90)
def test_missed_heartbeats_end_the_session_and_cancel_its_orders(
        service: Callable[..., Service], passwords: None) -> None:
    port = start(service)
    engine = paper_venue("paper").engine
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(_raw(1, "A", [(98, "0"), (108, "1"), (141, "Y"), (553, "STRAT1"),
                                   (554, PASSWORDS["STRAT1"])]))
        conn.sendall(_raw(2, "D", [(11, "hb-1"), (54, "1"), (60, utc_timestamp()), (38, "2"),
                                   (40, "2"), (44, resting_buy_price("AAPL")), (55, "AAPL")]))
        deadline = time.monotonic() + 15
        while b"\x01150=0\x01" not in received and time.monotonic() < deadline:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        assert b"\x0135=A\x01" in received and b"\x01150=0\x01" in received, received
        assert len(engine.open_orders(ACCOUNT)) == 1
        # Silent from now on: no heartbeat, no answer to the TestRequest, connection open.
        wait_for(lambda: engine.open_orders(ACCOUNT) == [], timeout_s=20,
                 what="the silent session's order cancelled at the venue")
        state = registry.lookup("fix_gateway").ask(GetGatewayState(), timeout=5)
        assert state.logged_on == () and state.working["STRAT1"] == 0
