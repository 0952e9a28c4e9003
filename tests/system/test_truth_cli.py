"""`tradeguard flatten --wait` against a real service and a real FIX venue process: while the
venue is down the command does not claim flat (exit 1, NOT FLAT, when its time is up);
with the venue back within the wait, it exits 0 once the venue reports flat."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.system.processes import BIN, free_port, stop, tradeguard, wait_status


def _fix(status: dict[str, Any]) -> dict[str, Any]:
    return dict(next(c for c in status["connectors"] if c["name"] == "fix"))


def _flatten(state: Path, wait_s: float) -> subprocess.Popen[str]:
    command = [str(BIN / "tradeguard"), "flatten", "--state-dir", str(state), "--reason", "test",
               "--wait", str(wait_s)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(180)
def test_flatten_wait_reports_flat_only_once_the_venue_is_back_and_flat(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "service"
    config = tmp_path / "fix.toml"
    config.write_text(f"""
[service]
state_dir = "{state}"
on_shutdown = "leave"

[failsafe]
round_timeout_s = 1.0
cancel_timeout_s = 0.5
backoff_initial_s = 0.2
backoff_max_s = 1.0
max_attempts = 3
recheck_interval_s = 2.0

[supervision]
backoff_initial_s = 0.1
backoff_max_s = 0.5
connectors_intensity = 500
connectors_period_s = 60.0

[[connectors]]
name = "fix"
kind = "fix"
symbols = ["AAPL", "MSFT"]
port = {port}
heartbeat_s = 1

[[strategies]]
name = "sample-fix"
venue = "fix"
symbols = ["AAPL", "MSFT"]
interval_s = 0.05
quantity = "10"
max_position = "50"
""")
    venue_args = ("venue", "fix", "--port", str(port), "--state-dir", str(tmp_path / "venue"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["venue"] = tradeguard(*venue_args)
        procs["service"] = tradeguard("run", "--config", str(config))
        wait_status(state, lambda s: s["mode"] == "LIVE" and any(p["quantity"] != "0"
                                                                 for p in s["positions"]),
                    timeout_s=60, what="LIVE and holding a position at the venue")

        stop(procs.pop("venue"), signal.SIGKILL)              # the venue goes away, positions and all
        wait_status(state, lambda s: not _fix(s)["connected"], timeout_s=30, what="fix seen down")

        short = _flatten(state, 3)
        out, err = short.communicate(timeout=60)
        assert short.returncode == 1, (out, err)
        assert "NOT FLAT" in out and "fix: down" in out and "flat (" not in out

        waiting = _flatten(state, 90)
        procs["venue"] = tradeguard(*venue_args)               # back within the wait
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, (out, err)
        assert "FAILSAFE: flat (fix: flat)" in out, out

        after = wait_status(state, lambda s: _fix(s)["reconciled_ns"] is not None, timeout_s=10)
        assert after["mode"] == "FAILSAFE" and after["failsafe"]["last_report"]["flat"] is True
        assert _fix(after)["venue_positions"] == []            # the venue's own last report
        assert stop(procs.pop("service")) == 0
    finally:
        for proc in procs.values():
            stop(proc, signal.SIGKILL)


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "1e9", "soon"])
def test_flatten_wait_refuses_a_bad_number_of_seconds(tmp_path: Path, bad: str) -> None:
    done = subprocess.run([str(BIN / "tradeguard"), "flatten", "--state-dir", str(tmp_path), "--wait", bad],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--wait" in done.stderr, done.stderr
