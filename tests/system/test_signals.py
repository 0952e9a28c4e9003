"""Signals sent to ``tradeguard run`` as a process: a graceful stop, a second stop signal
that exits at once, and SIGUSR1's stack dump."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.system.processes import running, wait_status

# A paper venue whose orders take 2 s to reach the book, the sample strategy, and a
# flatten on shutdown: the graceful stop then lasts seconds (the closing orders are slow).
SLOW_FLATTEN = """
[service]
on_shutdown = "flatten"
shutdown_timeout_s = 30.0

[[connectors]]
name = "paper"
kind = "paper"
symbols = ["AAPL"]
quote_interval_s = 0.05

[connectors.engine]
latency_ms = 2000

[[strategies]]
name = "sample"
venue = "paper"
symbols = ["AAPL"]
interval_s = 0.2
quantity = "10"
max_position = "50"
"""


def _log(state: Path, channel: str) -> str:
    path = state / "logs" / f"{channel}.log"
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_gracefully_with_exit_0(signum: signal.Signals, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running("run", "--state-dir", str(state)) as proc:
        wait_status(state, lambda s: s["mode"] == "LIVE", 30.0, "LIVE")
        sent = time.monotonic()
        proc.send_signal(signum)
        assert proc.wait(10) == 0
        assert time.monotonic() - sent < 10.0
    main = _log(state, "main")
    assert f"{signum.name}: stopping gracefully" in main
    assert "tradeguard stopped" in main
    assert "-> SHUTDOWN" in _log(state, "governance")


def test_a_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "slow.toml"
    config.write_text(SLOW_FLATTEN)
    with running("run", "--config", str(config), "--state-dir", str(state)) as proc:
        wait_status(state, lambda s: bool(s["positions"]), 30.0, "an open position")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "FAILSAFE: flattening every venue" in _log(state, "safety"), 10.0,
                 what="the shutdown flatten to begin")
        assert proc.poll() is None, "the graceful stop should still be flattening"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(3) == 128 + signal.SIGTERM
        assert time.monotonic() - sent < 2.0
    assert "tradeguard stopped" not in _log(state, "main")


def test_sigusr1_logs_every_thread_stack_and_keeps_running(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running("run", "--state-dir", str(state)) as proc:
        wait_status(state, lambda s: s["mode"] == "LIVE", 30.0, "LIVE")
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: "thread MainThread:" in _log(state, "main"), 10.0, what="the main thread's stack")
        wait_for(lambda: "thread dashboard-control:" in _log(state, "main"), 10.0,
                 what="the dashboard thread's stack")
        assert "in watchdog_loop" in _log(state, "main")
        assert proc.poll() is None
        status = wait_status(state, lambda s: s["mode"] == "LIVE", 10.0, "LIVE after SIGUSR1")
        assert status["healthy"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
