"""``tradeguard venue {fix,zmq,tws}`` as an operator runs it: options named alike, a fresh
state directory, and a clean stop."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.system.processes import BIN, free_port

COMMON = ("--host", "--port", "--state-dir", "--venue-name", "--account", "--seed",
          "--step-interval")


@pytest.mark.parametrize("kind", ["fix", "zmq", "tws"])
def test_every_venue_takes_the_same_options(kind: str) -> None:
    result = subprocess.run([str(BIN / "tradeguard"), "venue", kind, "--", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for option in COMMON:
        assert option in result.stdout, f"venue {kind}: {option} missing"


def _checkpointed(store: Path) -> bool:
    """The running venue has written a market checkpoint (its runner went round once)."""
    if not store.exists():
        return False
    try:
        with sqlite3.connect(store) as db:
            rows = db.execute("SELECT seq FROM markets").fetchall()
    except sqlite3.Error:
        return False
    return any(seq > 0 for (seq,) in rows)


@pytest.mark.timeout(60)
def test_tws_venue_on_a_fresh_state_directory_runs_without_a_traceback(tmp_path: Path) -> None:
    state = tmp_path / "fresh" / "tws"  # neither directory exists yet
    process = subprocess.Popen(
        [str(BIN / "tradeguard"), "venue", "tws", "--port", str(free_port()), "--state-dir",
         str(state)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert "tws venue listening" in process.stdout.readline()
        # past the first periodic save (the one that used to fail every second)
        wait_for(lambda: _checkpointed(state / "engine.sqlite3"), timeout_s=20,
                 what="a market checkpoint in the store")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0
    assert "Traceback" not in stderr, stderr
    assert (state / "engine.json").exists()  # the readable snapshot of a clean stop
    assert [p.name for p in state.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.timeout(60)
def test_fix_venue_switches_from_the_command_line(tmp_path: Path) -> None:
    from tests.venues.test_fix_venue import Client, by
    from venues.fix_venue import Tag, utc_timestamp

    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "tradeguard"), "venue", "fix", "--port", str(port), "--state-dir",
         str(tmp_path / "venue"), "--standard-recovery", "--mass-cancel", "refuse"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = Client(port, tmp_path / "client")
    try:
        assert process.stdout is not None
        assert "fix venue" in process.stdout.readline()
        client.start(timeout_s=10)
        client.order("L1", "AAPL", "1", "5", ord_type="2", price="1.00")
        client.order("B1", "AAPL", "1", "5")
        client.wait(by("8", cl_ord_id="L1", exec_type="0"))
        client.wait(by("8", cl_ord_id="B1", exec_type="F"))
        client.send("q", [(Tag.CL_ORD_ID, "MC1"), (Tag.MASS_CANCEL_REQUEST_TYPE, "7"),
                          (Tag.TRANSACT_TIME, utc_timestamp())])
        [report] = client.wait(by("r", cl_ord_id="MC1"))
        assert report[Tag.MASS_CANCEL_RESPONSE] == "0"
        client.send("AF", [(Tag.MASS_STATUS_REQ_ID, "S1"), (Tag.MASS_STATUS_REQ_TYPE, "7")])
        [only] = client.wait(lambda m: m.get(Tag.MASS_STATUS_REQ_ID) == "S1")
        assert (only[Tag.EXEC_TYPE], only[Tag.CL_ORD_ID]) == ("I", "L1")  # no trade replayed
        assert only[Tag.LAST_RPT_REQUESTED] == "Y"
    finally:
        client.stop()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    assert process.returncode == 0


@pytest.mark.parametrize(("kind", "option", "field"), [
    ("fix", "--drop-rate", "drop_rate"),
    ("zmq", "--foreign-fill-rate", "foreign_fill_rate"),
])
def test_a_bad_switch_is_refused_naming_it(kind: str, option: str, field: str) -> None:
    result = subprocess.run(
        [str(BIN / "tradeguard"), "venue", kind, "--port", str(free_port()), "--", option, "2"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert field in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["fix", "zmq"])
def test_a_port_in_use_is_one_line_and_exit_2(kind: str, tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = subprocess.run(
            [str(BIN / "tradeguard"), "venue", kind, "--port", str(port), "--state-dir",
             str(tmp_path / "state")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_tws_switch_is_refused_naming_it() -> None:
    result = subprocess.run(
        [str(BIN / "tradeguard"), "venue", "tws", "--port", str(free_port()), "--cancel-after", "100000"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cancel_after_s" in result.stderr and "Traceback" not in result.stderr
