"""``tradeguard run --config config/order-entry.toml`` as a real process: a FIX client logs
on with the password from the environment and trades on the paper venue, and a script
using the client API sees its fill. The shipped file is used as it is, but for the port."""

from __future__ import annotations

import signal
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.order_entry.fix_client import FixClient
from tests.system.processes import free_port, running, stop, wait_status
from tradeguard.client import Client

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "order-entry.toml"


@pytest.mark.timeout(120)
def test_the_shipped_config_accepts_a_fix_client_and_the_client_api(tmp_path: Path) -> None:
    port = free_port()
    text = SHIPPED.read_text()
    assert "port = 5501" in text
    config = tmp_path / "order-entry.toml"
    config.write_text(text.replace("port = 5501", f"port = {port}"))
    state = tmp_path / "state"
    env = {"TRADEGUARD_FIX_STRAT1_PASSWORD": "process-secret"}
    with running("run", "--config", str(config), "--state-dir", str(state), env=env) as proc:
        wait_status(state, lambda s: s["mode"] == "LIVE", timeout_s=60, what="the service LIVE")
        client = FixClient(port, tmp_path / "client", "STRAT1", "process-secret")
        try:
            client.logon(timeout_s=20)
            filled = _filled_once_priced(client, "MSFT", 3)
            assert Decimal(filled[14]) == 3 and Decimal(filled[151]) == 0
            too_big = client.new_order("AAPL", "buy", 101)  # the shipped session limit is 100
            assert client.report(too_big, "8")[58].startswith("max_quantity:")
        finally:
            client.stop()
        with Client(state) as api, api.fills() as fills:
            order = api.submit("AAPL", "sell", 2)
            fill = fills.next(timeout_s=20)
            assert fill is not None and fill.client_order_id == order.client_order_id
        assert stop(proc, signal.SIGTERM) == 0


def _filled_once_priced(client: FixClient, symbol: str, quantity: int,
                        timeout_s: float = 30.0) -> dict[int, str]:
    """Send a market order until one fills: LIVE can come before the venue's first quote of
    ``symbol``, and until then the governor refuses it (``no_market``), as it should. Any
    other answer fails the test."""
    deadline = time.monotonic() + timeout_s
    while True:
        cl_ord_id = client.new_order(symbol, "buy", quantity)
        done = client.wait(lambda m, c=cl_ord_id: m.get(11) == c and m.get(39) in ("2", "8"), timeout_s=20,
                           what=f"the FIX order {cl_ord_id} filled or rejected")
        if done[39] == "2":
            return done
        assert done.get(58, "").startswith("no_market:"), done
        if time.monotonic() >= deadline:
            raise AssertionError(f"no price known for {symbol} after {timeout_s}s")
        time.sleep(0.2)  # a bounded poll of the service for its first quote

