"""The scoped kill switch from the command line, run in a subprocess against a running
service: ``flatten --source`` cancels and closes only what that order source opened (FIX
sessions through the gateway, other sessions untouched, the mode unchanged), ``flatten
--venue`` only that venue, ``pause``/``resume --source`` gate one source; every command is
audited under the operating system's identity, and refused without the credential. Exit
codes: 0 done, 1 refused or not done, 2 usage."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from messages import GetRiskState, OrderType, Side, SubmitOrder, TimeInForce
from supervision import registry
from tests.helpers import wait_for
from tests.order_entry.fix_client import FixClient
from tests.order_entry.test_fix_gateway import PASSWORDS, resting_buy_price
from tests.order_entry.test_replace_gateway import FIX_ACCOUNT, fix_engine
from tests.system.processes import free_port
from tradeguard.app import Service
from tradeguard.control import ControlError, send_command
from tradeguard.logs import setup_logging, shutdown_logging
from tradeguard.settings import parse_settings
from venues.engine import VenueEngine
from venues.paper import paper_venue, stop_paper_venues

__all__ = ["fix_engine"]  # a fixture used here

ME = pwd.getpwuid(os.getuid()).pw_name
PAPER_ACCOUNT = "PAPER-1"

pytestmark = pytest.mark.timeout(150)


def cli(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tradeguard.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s, check=False)


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[Path, int]]]:
    """Start the service (paper, optionally the FIX venue, the FIX gateway with STRAT1 and
    STRAT2) in this process with its logs; its state directory and the gateway's port."""
    started: list[Service] = []
    for sender, password in PASSWORDS.items():
        monkeypatch.setenv(f"TRADEGUARD_FIX_{sender}_PASSWORD", password)

    def start(fix_port: int | None = None) -> tuple[Path, int]:
        gateway_port = free_port()
        state_dir = tmp_path / "state"
        setup_logging(state_dir / "logs", level="INFO", stderr=False)
        connectors: list[dict[str, Any]] = [
            {"name": "paper", "kind": "paper", "symbols": ["AAPL", "MSFT"], "quote_interval_s": 0.02,
             "persist": False, "health_interval_s": 0.2}]
        if fix_port is not None:
            connectors.append({"name": "fix", "kind": "fix", "port": fix_port, "heartbeat_s": 1,
                               "connect_timeout_s": 2.0, "symbols": ["AAPL"], "health_interval_s": 0.2})
        limits = {"default_venue": "paper", "max_order_quantity": "50", "max_order_notional": "20000",
                  "max_position": "50", "max_orders_per_s": 50}
        data: dict[str, Any] = {
            "service": {"on_shutdown": "leave", "shutdown_timeout_s": 5.0, "start_timeout_s": 20.0},
            "risk": {"max_orders_per_s": 1000},
            "failsafe": {"round_timeout_s": 2.0, "cancel_timeout_s": 0.5, "backoff_initial_s": 0.2,
                         "backoff_max_s": 1.0, "max_attempts": 5, "recheck_interval_s": 2.0},
            "connectors": connectors,
            "strategies": [],
            "order_entry": {"fix": {"port": gateway_port, "sessions": [
                {"sender_comp_id": "STRAT1", **limits}, {"sender_comp_id": "STRAT2", **limits}]}},
        }
        environ = {f"TRADEGUARD_FIX_{k}_PASSWORD": v for k, v in PASSWORDS.items()}
        settings = parse_settings(data, environ=environ)
        service = Service(settings, state_dir)
        started.append(service)
        service.start()
        wait_for(lambda: send_command(state_dir, "status")["mode"] == "LIVE", 20.0, what="LIVE")
        if fix_port is not None:
            wait_for(lambda: (service.ask("risk_governor", GetRiskState()) or {}).get("venue_states", {})
                     .get("fix") == "ACTIVE", timeout_s=30, what="the FIX venue ACTIVE")
        return state_dir, gateway_port

    try:
        yield start
    finally:
        for service in started:
            service.stop("leave")
        stop_paper_venues()
        shutdown_logging()


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[Callable[[int, str], FixClient]]:
    made: list[FixClient] = []

    def logon(port: int, sender: str) -> FixClient:
        client = FixClient(port, tmp_path / f"client-{sender}", sender, PASSWORDS[sender])
        made.append(client)
        client.logon()
        return client

    try:
        yield logon
    finally:
        for client in made:
            client.stop()


def governance(state_dir: Path) -> str:
    path = state_dir / "logs" / "governance.log"
    return path.read_text(errors="replace") if path.exists() else ""


def paper_positions() -> dict[str, Decimal]:
    return {p.symbol: p.quantity for p in paper_venue("paper").engine.positions(PAPER_ACCOUNT) if p.quantity}


def paper_working() -> list[str]:
    return sorted(w.order.source for w in paper_venue("paper").engine.open_orders(PAPER_ACCOUNT))


def bought(client: FixClient, symbol: str, quantity: int) -> None:
    cl_ord_id = client.new_order(symbol, "buy", quantity)
    client.wait(lambda m: m.get(11) == cl_ord_id and m.get(39) == "2", timeout_s=15,
                what=f"{quantity} {symbol} bought")


def test_flatten_a_source_closes_only_its_share_and_pause_holds_until_resumed(
        running: Callable[..., tuple[Path, int]], sessions: Callable[[int, str], FixClient]) -> None:
    state, port = running()
    one, two = sessions(port, "STRAT1"), sessions(port, "STRAT2")
    bought(one, "AAPL", 10)
    bought(two, "AAPL", 4)
    bought(one, "MSFT", 3)
    for client in (one, two):
        resting = client.new_order("AAPL", "buy", 1, price=resting_buy_price("AAPL"))
        client.report(resting, "0")
    assert paper_positions() == {"AAPL": 14, "MSFT": 3}
    assert paper_working() == ["fix:STRAT1", "fix:STRAT2"]

    done = cli("flatten", "--source", "fix:STRAT1", "--state-dir", str(state), "--reason", "runaway",
               "--wait", "40")
    assert done.returncode == 0, (done.stdout, done.stderr)
    # STRAT1's 10 AAPL and 3 MSFT closed, its order cancelled; STRAT2's share and order stay.
    assert paper_positions() == {"AAPL": 4}
    assert paper_working() == ["fix:STRAT2"]
    status = send_command(state, "status")
    assert status["mode"] == "LIVE" and status["failsafe"]["latched"] is False  # no FAILSAFE
    assert status["risk"]["paused_sources"] == ["fix:STRAT1"]
    [scoped] = status["failsafe"]["scoped"]
    assert scoped["scope"] == "source:fix:STRAT1" and scoped["flat"] is True
    text = cli("status", "--state-dir", str(state))
    assert text.returncode == 0 and "paused: source fix:STRAT1" in text.stdout.splitlines()
    assert "scoped flatten source:fix:STRAT1: done" in text.stdout
    wait_for(lambda: f'operator command accepted: flatten source="fix:STRAT1" by {ME} identity=uid:'
             in governance(state), 5.0, what="the audited flatten")

    # Paused: STRAT1's new order is refused with the reason; STRAT2 trades on.
    refused = one.new_order("AAPL", "buy", 1)
    assert one.report(refused, "8")[58].startswith("paused: source fix:STRAT1")
    bought(two, "AAPL", 1)
    resumed = cli("resume", "--source", "fix:STRAT1", "--state-dir", str(state))
    assert resumed.returncode == 0, resumed.stderr
    # The session's own position limit (50) counts the flatten's fills: 45 more fit again.
    bought(one, "AAPL", 45)
    assert paper_positions() == {"AAPL": 50}
    wait_for(lambda: 'operator command accepted: resume source="fix:STRAT1"' in governance(state), 5.0,
             what="the audited resume")


def test_a_shared_symbol_is_closed_up_to_the_venue_position_and_never_flipped(
        running: Callable[..., tuple[Path, int]], sessions: Callable[[int, str], FixClient]) -> None:
    state, port = running()
    one, two = sessions(port, "STRAT1"), sessions(port, "STRAT2")
    bought(one, "AAPL", 10)
    sold = two.new_order("AAPL", "sell", 4)
    two.wait(lambda m: m.get(11) == sold and m.get(39) == "2", timeout_s=15, what="4 AAPL sold")
    assert paper_positions() == {"AAPL": 6}
    # STRAT1's share is 10, the venue holds 6: 6 are sold, the venue is flat, not short.
    first = cli("flatten", "--source", "fix:STRAT1", "--state-dir", str(state), "--wait", "40")
    assert first.returncode == 0, (first.stdout, first.stderr)
    assert paper_positions() == {}
    # STRAT2's share is short 4 of a flat venue: nothing is bought, the venue stays flat.
    second = cli("flatten", "--source", "fix:STRAT2", "--state-dir", str(state), "--wait", "40")
    assert second.returncode == 0, (second.stdout, second.stderr)
    assert paper_positions() == {}
    closing = [f for f in paper_venue("paper").engine.executions(PAPER_ACCOUNT)
               if f.client_order_id.startswith("fs-source-")]  # the scoped flattens' orders
    assert {f.side for f in closing} == {Side.SELL} and sum(f.quantity for f in closing) == 6
    assert send_command(state, "status")["mode"] == "LIVE"


def test_pause_a_source_from_the_cli_and_the_refusals(
        running: Callable[..., tuple[Path, int]], sessions: Callable[[int, str], FixClient],
        tmp_path: Path) -> None:
    state, port = running()
    one, two = sessions(port, "STRAT1"), sessions(port, "STRAT2")
    paused = cli("pause", "--source", "fix:STRAT2", "--state-dir", str(state), "--reason", "review")
    assert paused.returncode == 0 and "paused: source fix:STRAT2" in paused.stdout, paused.stderr
    refused = two.new_order("AAPL", "buy", 1)
    assert two.report(refused, "8")[58].startswith("paused:")
    bought(one, "AAPL", 1)
    wait_for(lambda: 'operator command accepted: pause source="fix:STRAT2" by' in governance(state), 5.0,
             what="the audited pause")
    # Refused without the credential: a state directory whose token is not the service's.
    fake = tmp_path / "fake-state"
    fake.mkdir()
    (fake / "control.sock").symlink_to(state / "control.sock")
    (fake / "control.token").write_text("0" * 64 + "\n")
    forged = cli("resume", "--source", "fix:STRAT2", "--state-dir", str(fake))
    assert forged.returncode == 1 and "credential" in forged.stderr
    with pytest.raises(ControlError, match="credential"):
        send_command(state, "flatten", source="fix:STRAT2", token="1" * 64)
    status = send_command(state, "status")
    assert status["risk"]["paused_sources"] == ["fix:STRAT2"] and status["failsafe"]["scoped"] == []
    # Unknown venue: refused (1); two scopes at once: a usage error (2).
    unknown = cli("flatten", "--venue", "nowhere", "--state-dir", str(state))
    assert unknown.returncode == 1 and "unknown venue" in unknown.stderr
    both = cli("pause", "--venue", "paper", "--source", "x", "--state-dir", str(state))
    assert both.returncode == 2
    assert send_command(state, "status")["mode"] == "LIVE"


def test_flatten_a_venue_leaves_the_other_venue_and_the_mode(
        running: Callable[..., tuple[Path, int]], fix_engine: tuple[VenueEngine, int]) -> None:
    engine, fix_port = fix_engine
    state, _ = running(fix_port)
    quote = engine.quote("AAPL")
    assert quote is not None
    # Marketable limits (IOC): priced by their limit, so they do not wait for the venue's
    # first quote to reach the governor.
    paper_quote = paper_venue("paper").engine.quote("AAPL")
    assert paper_quote is not None
    for venue, n, ask in (("fix", 6, quote.ask), ("paper", 3, paper_quote.ask)):
        assert registry.tell("risk_governor", SubmitOrder(
            client_order_id=f"t-{venue}", venue=venue, symbol="AAPL", side=Side.BUY, quantity=Decimal(n),
            order_type=OrderType.LIMIT, limit_price=(ask * Decimal("1.02")).quantize(Decimal("0.01")),
            time_in_force=TimeInForce.IOC, source="test"))
    assert registry.tell("risk_governor", SubmitOrder(
        client_order_id="t-rest", venue="fix", symbol="AAPL", side=Side.BUY, quantity=Decimal(1),
        order_type=OrderType.LIMIT, limit_price=(quote.bid * Decimal("0.97")).quantize(Decimal("0.01")),
        time_in_force=TimeInForce.GTC, source="test"))
    wait_for(lambda: {p.symbol: p.quantity for p in engine.positions(FIX_ACCOUNT) if p.quantity}
             == {"AAPL": 6} and len(engine.open_orders(FIX_ACCOUNT)) == 1, timeout_s=15,
             what="fix: long 6, 1 resting")
    wait_for(lambda: paper_positions() == {"AAPL": 3}, timeout_s=15, what="paper: long 3")

    done = cli("flatten", "--venue", "fix", "--state-dir", str(state), "--wait", "40")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert {p.symbol: p.quantity for p in engine.positions(FIX_ACCOUNT) if p.quantity} == {}
    assert engine.open_orders(FIX_ACCOUNT) == []
    assert paper_positions() == {"AAPL": 3}  # the other venue untouched
    status = send_command(state, "status")
    assert status["mode"] == "LIVE" and status["failsafe"]["latched"] is False
    assert status["risk"]["paused_venues"] == ["fix"]
    resumed = cli("resume", "--venue", "fix", "--state-dir", str(state))
    assert resumed.returncode == 0, resumed.stderr
    assert send_command(state, "status")["risk"]["paused_venues"] == []
