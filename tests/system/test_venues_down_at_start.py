"""Venues down at start: the service, configured with a ZeroMQ and a FIX venue that cannot
be reached (closed loopback ports) and the paper venue, starts at once, answers
``tradeguard status`` within 15 s, shows the two connectors down and the paper one up,
and trades on the paper venue."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.processes import BIN, free_port, running, wait_status
from tests.system.test_systemd import NotifyListener

STATUS_DEADLINE_S = 15.0


def _config(tmp_path: Path, state: Path) -> Path:
    zmq_port, fix_port = free_port(pair=True), free_port()
    text = f"""
[service]
state_dir = "{state}"
on_shutdown = "leave"
start_timeout_s = 30.0

[risk]
max_orders_per_s = 1000

[supervision]
backoff_initial_s = 0.05
backoff_max_s = 0.5

[[connectors]]
name = "paper"
kind = "paper"
symbols = ["AAPL", "MSFT"]
quote_interval_s = 0.05
persist = false

[[connectors]]
name = "zmq"
kind = "zmq"
symbols = ["AAPL"]
market_endpoint = "tcp://127.0.0.1:{zmq_port}"
order_endpoint = "tcp://127.0.0.1:{zmq_port + 1}"
connect_timeout_s = 1.0
reconnect_initial_s = 0.2
reconnect_max_s = 2.0

[[connectors]]
name = "fix"
kind = "fix"
symbols = ["AAPL"]
port = {fix_port}
connect_timeout_s = 1.0
reconnect_initial_s = 0.2
reconnect_max_s = 2.0

[[strategies]]
name = "sample"
venue = "paper"
symbols = ["AAPL", "MSFT"]
interval_s = 0.1
quantity = "10"
max_position = "50"
"""
    path = tmp_path / "venues-down.toml"
    path.write_text(text)
    return path


def _cli_status(state: Path) -> tuple[int, dict[str, Any] | None]:
    """``tradeguard status --json`` as an operator runs it: exit code and the document."""
    done = subprocess.run([str(BIN / "tradeguard"), "status", "--json", "--state-dir", str(state),
                           "--timeout", "2"], capture_output=True, timeout=30, check=False)
    if done.returncode != 0:
        return done.returncode, None
    document: dict[str, Any] = json.loads(done.stdout)
    return 0, document


def _connector(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in status["connectors"] if c["name"] == name)


class Service:
    """The running process and when it was started."""

    def __init__(self, state: Path, started: float, notify: NotifyListener) -> None:
        self.state = state
        self.started = started
        self.notify = notify
        """A fake systemd the process tells READY=1."""
        self.first_status: dict[str, Any] | None = None
        self.answered_after_s = float("inf")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp_path = tmp_path_factory.mktemp("venues-down")
    state = tmp_path / "state"
    config = _config(tmp_path, state)
    notify = NotifyListener(str(tmp_path / "notify.sock"), str(tmp_path / "notify.sock"))
    started = time.monotonic()
    with running("run", "--config", str(config), "--state-dir", str(state),
                 env={"NOTIFY_SOCKET": notify.address}):
        svc = Service(state, started, notify)
        deadline = started + STATUS_DEADLINE_S + 15.0  # look a little longer, to report how long
        while time.monotonic() < deadline:
            code, document = _cli_status(state)
            if code == 0 and document is not None:
                svc.first_status = document
                svc.answered_after_s = time.monotonic() - started
                break
            time.sleep(0.2)  # polling an outside process, as an operator would
        try:
            yield svc
        finally:
            notify.close()


@pytest.mark.timeout(120)
def test_status_answers_within_15s_and_shows_the_unreachable_venues_down(service: Service) -> None:
    assert service.first_status is not None, "tradeguard status never answered"
    assert service.answered_after_s < STATUS_DEADLINE_S, f"first answer after {service.answered_after_s:.1f}s"
    status = wait_status(service.state, lambda s: _connector(s, "paper")["connected"], timeout_s=10,
                         what="the paper connector up")
    assert {c["name"] for c in status["connectors"]} == {"paper", "zmq", "fix"}
    assert _connector(status, "zmq")["connected"] is False
    assert _connector(status, "fix")["connected"] is False
    assert status["mode"] != "FAILSAFE"


@pytest.mark.timeout(120)
def test_the_paper_venue_trades_while_the_others_are_down(service: Service) -> None:
    status = wait_status(service.state, lambda s: (_connector(s, "paper").get("fills") or 0) > 0,
                         timeout_s=30, what="fills on the paper venue")
    assert not _connector(status, "zmq")["connected"] and not _connector(status, "fix")["connected"]


def test_ready_is_sent_with_two_venues_down_once_the_service_answers(service: Service) -> None:
    """READY=1 promises that every permanent child runs and the control socket answers: it
    comes within the deadline although two venues cannot be reached, and a status request
    right after it is answered."""
    service.notify.wait(lambda m: "READY=1" in m, timeout_s=STATUS_DEADLINE_S, what="READY=1")
    ready_after_s = service.notify.times[service.notify.messages.index("READY=1")] - service.started
    assert ready_after_s < STATUS_DEADLINE_S
    code, document = _cli_status(service.state)
    assert code == 0 and document is not None
    assert not _connector(document, "zmq")["connected"] and not _connector(document, "fix")["connected"]
