"""``tradeguard run --config config/order-entry.toml`` as a real process: a FIX client logs
on with the password from the environment and trades on the paper venue, and a script
using the client API sees its fill. The shipped file is used as it is, but for the port."""

from __future__ import annotations

import signal
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
            cl_ord_id = client.new_order("MSFT", "buy", 3)
            filled = client.wait(lambda m: m.get(11) == cl_ord_id and m.get(39) == "2", timeout_s=20,
                                 what="the FIX order filled")
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
