"""The control channel's pure parts: log lines under a budget, outside text made safe for
one log line, the peer identity ZeroMQ reports, and the health flag with a fake clock."""

from __future__ import annotations

import json
import os
import pwd

import pytest

from actors.dashboard import ControlHealth, peer_identity
from actors.log_budget import LogBudget, one_line, printable


def test_a_budget_lets_a_burst_through_then_counts_and_summarises() -> None:
    budget = LogBudget(burst=3, window_s=10.0)
    allowed = [budget.allow(100.0 + i * 0.01, "paused") for i in range(50)]
    assert allowed[:3] == [True, True, True] and not any(allowed[3:])
    assert budget.summary(105.0) is None, "the window is still open"
    summary = budget.summary(110.5)
    assert summary is not None and summary.startswith("47 paused not logged one by one")
    assert budget.summary(200.0) is None, "counted once"
    assert budget.allow(200.0, "paused"), "a new window lets a burst through again"
    assert budget.total_suppressed == 47


def test_a_budget_counts_kinds_apart() -> None:
    budget = LogBudget(burst=0, window_s=1.0)
    for kind in ("a", "b", "b"):
        assert not budget.allow(0.0, kind)
    assert budget.summary(1.0) == "1 a, 2 b not logged one by one in the last 1s"


@pytest.mark.parametrize("bad", [(-1, 1.0), (1, 0.0), (1, float("nan"))])
def test_a_budget_refuses_nonsense(bad: tuple[int, float]) -> None:
    with pytest.raises(ValueError):
        LogBudget(*bad)


def test_printable_is_one_bounded_escaped_line() -> None:
    forged = "pause\n2026-01-01 00:00:00.000 | WARNING | governance | accepted"
    assert "\n" not in printable(forged) and json.loads(printable(forged)) == forged
    huge = printable("x" * 10_000_000)
    assert len(huge) < 300 and huge.endswith("...(10000000 chars)")
    assert printable("\ud800") == '"\\ud800"'
    assert printable(b"\xff\x00\n" * 1000).endswith("...(3000 bytes)")
    assert "\n" not in printable(b"a\nb")
    assert printable(["verb"]) == json.dumps("['verb']")


def test_one_line_escapes_without_quoting() -> None:
    assert one_line("lunch") == "lunch"
    assert one_line("a\nb\rc\x00\ud800") == "a\\nb\\rc\\u0000\\ud800"
    assert one_line("y" * 1000, limit=10) == "y" * 10 + "...(1000 chars)"


def test_peer_identity_from_zeromq_peer_address() -> None:
    me = peer_identity(f"localhost:{os.getuid()}:{os.getgid()}:4242")
    assert (me.uid, me.gid, me.pid) == (os.getuid(), os.getgid(), 4242)
    assert me.user == pwd.getpwuid(os.getuid()).pw_name == me.name
    assert me.describe() == f"identity=uid:{os.getuid()}({me.user}) via SO_PEERCRED pid=4242"
    assert peer_identity(f"localhost:{os.getuid()}:0:").pid is None
    nobody = peer_identity("localhost:4000000000:0:1")
    assert nobody.user is None and nobody.name == "uid:4000000000"
    for missing in (None, "", "localhost", "127.0.0.1:5555", "a:b:c:d"):
        unknown = peer_identity(missing)
        assert unknown.uid is None and unknown.name == "unknown"
        assert "unknown" in unknown.describe()


def test_health_needs_a_running_turning_loop_with_its_socket() -> None:
    health = ControlHealth(stale_after_s=5.0)
    assert not health.healthy(0.0), "not started"
    health.started(0.0)
    assert health.healthy(1.0)
    assert not health.healthy(5.0), "no turn for the stale time"
    health.beat(5.0)
    assert health.healthy(6.0)
    health.beat(7.0, socket_ok=False)
    assert not health.healthy(7.5) and "socket" in health.reason
    health.beat(8.0)
    assert health.healthy(8.5)
    health.stopped("the control channel failed: ZMQError")
    assert not health.healthy(8.6) and "ZMQError" in health.reason


def test_an_old_serving_thread_cannot_speak_for_its_replacement() -> None:
    health = ControlHealth(stale_after_s=5.0)
    old = health.started(0.0)
    new = health.started(1.0)
    health.stopped("old thread ended late", old)
    health.beat(2.0, socket_ok=False, run=old)
    assert health.healthy(3.0)
    health.stopped("ended", new)
    assert not health.healthy(3.0)
