"""The control socket of a running service: requests without the credential, with a wrong
one, malformed or unknown are refused, change nothing and are audited in the governance
log; with the credential, status and commands work and are audited under the identity the
operating system gives, not the one the client claims; no frame shape, size or content
takes the channel down, and its health says whether it serves."""

from __future__ import annotations

import errno
import json
import os
import pwd
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import zmq

from actors.dashboard import (
    CONTROL_SOCKET,
    MAX_FRAME_BYTES,
    PUB_SOCKET,
    TOKEN_FILE,
    Dashboard,
    control_endpoint,
    control_health,
    read_token,
)
from messages import Side, SubmitOrder
from supervision import registry
from tests.helpers import wait_for
from tradeguard.app import Service
from tradeguard.control import ControlError, fetch_status, send_command
from tradeguard.logs import setup_logging, shutdown_logging
from tradeguard.settings import load_settings

ME = pwd.getpwuid(os.getuid()).pw_name
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| ")


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """The state directory of the paper default, running in this process with its logs."""
    state_dir = tmp_path / "state"
    setup_logging(state_dir / "logs", level="INFO", stderr=False)
    service = Service(load_settings(), state_dir)
    try:
        service.start()
        wait_for(lambda: send_command(state_dir, "status")["mode"] == "LIVE", 10.0, what="LIVE")
        yield state_dir
    finally:
        service.stop("leave")
        shutdown_logging()


def _socket(state_dir: Path, kind: int = zmq.REQ, timeout_s: float = 5.0) -> zmq.Socket[bytes]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock: zmq.Socket[bytes] = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
    sock.connect(control_endpoint(state_dir))
    return sock


def _raw(state_dir: Path, *frames: bytes, timeout_s: float = 5.0) -> dict[str, Any]:
    """One request exactly as given (one or more frames), and the service's answer."""
    sock = _socket(state_dir, timeout_s=timeout_s)
    try:
        sock.send_multipart(list(frames))
        answer: dict[str, Any] = json.loads(sock.recv())
        return answer
    finally:
        sock.close(linger=0)


def _log(state_dir: Path, channel: str) -> str:
    path = state_dir / "logs" / f"{channel}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _governance(state_dir: Path) -> str:
    return _log(state_dir, "governance")


def _refusals(state_dir: Path) -> list[str]:
    return [line for line in _governance(state_dir).splitlines() if "control command refused" in line]


def test_requests_without_the_right_credential_are_refused_and_audited(state: Path) -> None:
    no_token = _raw(state, json.dumps({"verb": "flatten", "operator": "op-without-token"}).encode())
    wrong_token = _raw(state, json.dumps({"token": "0" * 64, "verb": "flatten",
                                          "operator": "op-with-wrong-token"}).encode())
    malformed = _raw(state, b"flatten everything now")
    not_an_object = _raw(state, b'["flatten"]')

    for answer in (no_token, wrong_token, malformed, not_an_object):
        assert answer["ok"] is False
        assert "result" not in answer
    assert "credential" in no_token["error"] and "credential" in wrong_token["error"]
    assert malformed["error"] == not_an_object["error"] == "malformed request"

    wait_for(lambda: len(_refusals(state)) >= 4, 5.0, what="four refusals in governance.log")
    refusals = _refusals(state)
    assert any("op-without-token" in line and "credential" in line for line in refusals)
    assert any("op-with-wrong-token" in line and "credential" in line for line in refusals)
    assert sum("malformed request" in line for line in refusals) == 2

    status = send_command(state, "status")
    assert status["mode"] == "LIVE", "a refused flatten must change nothing"
    assert status["failsafe"]["latched"] is False


def test_an_unknown_verb_is_refused_even_with_the_credential(state: Path) -> None:
    answer = _raw(state, json.dumps({"token": read_token(state), "verb": "self-destruct",
                                     "operator": "op-unknown-verb"}).encode())
    assert answer["ok"] is False
    wait_for(lambda: any("unknown verb" in line and "self-destruct" in line for line in _refusals(state)),
             5.0, what="the unknown verb in governance.log")
    with pytest.raises(ControlError, match="credential"):
        send_command(state, "status", token="not-the-token")


def test_with_the_credential_status_and_commands_work_and_are_audited(state: Path) -> None:
    status = send_command(state, "status")
    assert status["mode"] == "LIVE"
    assert [c["name"] for c in status["connectors"]] == ["paper"]
    assert status["connectors"][0]["connected"] is True, "up from the start, health report or not"
    assert status["healthy"] is True
    assert status["control"]["healthy"] is True

    send_command(state, "pause", reason="lunch", operator="alice")
    assert send_command(state, "status")["paused"] is True
    send_command(state, "resume", operator="alice")
    assert send_command(state, "status")["paused"] is False
    accepted = f"operator command accepted: pause by {ME} identity=uid:{os.getuid()}({ME}) via SO_PEERCRED"
    wait_for(lambda: accepted in _governance(state), 5.0, what="the accepted pause in governance.log")
    wait_for(lambda: f"operator command accepted: resume by {ME}" in _governance(state), 5.0,
             what="the accepted resume in governance.log")
    pause = next(line for line in _governance(state).splitlines() if accepted in line)
    assert 'claimed="alice"' in pause and 'reason="lunch"' in pause
    assert _refusals(state) == []

    # Local and owner-only: the credential and both sockets are 0600 in a 0700 directory.
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in (TOKEN_FILE, CONTROL_SOCKET, PUB_SOCKET):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name


def test_the_audit_names_the_real_user_not_the_claimed_one(state: Path) -> None:
    """``LOGNAME=mallory tradeguard pause``: the audit line names the user the operating
    system says is at the other end of the socket; mallory is only what was claimed."""
    env = {**os.environ, "LOGNAME": "mallory", "USER": "mallory", "LNAME": "mallory", "USERNAME": "mallory"}
    done = subprocess.run([sys.executable, "-m", "tradeguard.cli", "pause", "--state-dir", str(state),
                           "--reason", "forged"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: "operator command accepted: pause" in _governance(state), 5.0, what="the audit line")
    line = next(x for x in _governance(state).splitlines() if "operator command accepted: pause" in x)
    assert f"by {ME} identity=uid:{os.getuid()}({ME}) via SO_PEERCRED" in line
    assert 'claimed="mallory"' in line
    assert "by mallory" not in line
    assert send_command(state, "status")["paused"] is True


def test_no_frame_shape_size_or_content_takes_the_channel_down(state: Path) -> None:
    token = read_token(state)
    forged = "x\n2099-01-01 00:00:00.000 | WARNING  | governance | operator command accepted: flatten by root"
    hostile: list[tuple[bytes, ...]] = [
        (b'{"verb": "status"}', b"second frame"),  # two frames: once killed the channel
        (b"a", b"b", b"c", b"d"),
        (b"",),
        (b"\x00\xff\xfe" * 1000,),
        (b"[" * 30_000 + b"]" * 30_000,),  # deep nesting: a refusal, not a traceback
        (b'{"token": "%s", "verb": "pause", "x": %s%s}' % (token.encode(), b"[" * 30_000, b"]" * 30_000),),
        (b"[" * 100_000 + b"]" * 100_000,),
        (json.dumps({"token": token, "verb": "x" * (10 * 1024 * 1024)}).encode(),),  # 10 MB verb
        (json.dumps({"token": token, "verb": forged}).encode(),),
        (json.dumps({"verb": "pause", "operator": forged}).encode(),),
        (b'{"token": "\\ud800", "verb": "pause"}',),  # a lone surrogate
        (json.dumps({"token": token, "verb": ["pause"]}).encode(),),
        (json.dumps({"token": token, "verb": "pause", "junk": [[[[[[]]]]]] * 100}).encode() + b"x",),
    ]
    for frames in hostile:
        answer = _raw(state, *frames, timeout_s=10.0)
        assert answer["ok"] is False, frames[0][:80]
        assert "internal error" not in answer["error"]

    # A DEALER speaks without the REQ envelope: still answered, still refused.
    dealer = _socket(state, zmq.DEALER)
    try:
        dealer.send_multipart([b"no", b"delimiter"])
        assert json.loads(dealer.recv_multipart()[-1])["ok"] is False
        dealer.send_multipart([b"", b"a request", b"and more"])
        assert json.loads(dealer.recv_multipart()[-1])["ok"] is False
    finally:
        dealer.close(linger=0)

    # A frame past the transport limit: ZeroMQ drops that peer; the channel stays.
    big = _socket(state, zmq.DEALER)
    try:
        big.send_multipart([b"", b"x" * (MAX_FRAME_BYTES + 1)])
    finally:
        big.close(linger=0)

    # Thousands of requests, refused and counted, without flooding the governance log.
    sock = _socket(state)
    try:
        for i in range(3000):
            sock.send(b"garbage %d" % i)
            assert json.loads(sock.recv())["ok"] is False
    finally:
        sock.close(linger=0)

    # The channel still serves: a valid command works, and the channel says it is healthy.
    send_command(state, "pause", reason="after\n2099-01-01 00:00:00.000 | the storm")
    status = fetch_status(state)
    assert status.paused is True and status.mode == "LIVE"
    assert status.control is not None and status.control.healthy and status.control.refused >= 3000
    assert control_health(state).healthy()

    # What the governance log holds: bounded, escaped lines, nothing forged, a summary.
    wait_for(lambda: any("not logged one by one" in line for line in _refusals(state)), 20.0,
             what="a summary of the refusals that were not logged one by one")
    lines = _governance(state).splitlines()
    assert all(LOG_LINE.match(line) for line in lines), "every line is a log record of its own"
    assert not any(line.startswith("2099") for line in lines)
    assert max(len(line) for line in lines) < 2000
    assert len(_refusals(state)) < 100
    assert "operator command accepted: pause by" in _governance(state)
    accepted = [line for line in lines
                if re.search(r"\| governance \| \S+ - operator command accepted", line)]
    assert [line.split(" - ", 1)[1].split(" by ")[0] for line in accepted] == [
        "operator command accepted: pause"], "only the real pause was accepted"
    main = _log(state, "main")
    assert "Traceback" not in main and "RecursionError" not in main


def test_a_deleted_socket_file_is_bound_again(state: Path) -> None:
    (state / CONTROL_SOCKET).unlink()
    wait_for(lambda: (state / CONTROL_SOCKET).exists(), 5.0, what="control.sock bound again")
    assert send_command(state, "status")["mode"] == "LIVE"
    assert control_health(state).healthy()


def test_the_health_flag_follows_the_serving_loop(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    service = Service(load_settings(), state_dir)
    service.start()
    try:
        wait_for(lambda: control_health(state_dir).healthy(), 10.0, what="a healthy control channel")
        assert fetch_status(state_dir).control is not None
    finally:
        service.stop("leave")
    assert not control_health(state_dir).healthy()
    assert not (state_dir / CONTROL_SOCKET).exists()
    # Stale: a loop that stopped turning is unhealthy even though it never said so.
    assert not control_health(state_dir).healthy(time.monotonic() + 3600)


def test_order_refusals_while_paused_are_summarised_not_flooded(state: Path) -> None:
    """Hundreds of orders refused because trading is paused: the governance log keeps the
    operator's audit readable (a few lines and a summary with the count), and the governor
    still counts every refusal."""
    send_command(state, "pause", reason="flood test")
    before = send_command(state, "status")["risk"]["rejected"]
    for i in range(500):
        registry.tell("risk_governor", SubmitOrder(client_order_id=f"flood-{i}", venue="paper", symbol="AAPL",
                                                   side=Side.BUY, quantity=Decimal(1), source="flood"))
    wait_for(lambda: send_command(state, "status")["risk"]["rejected"] >= before + 500, 10.0,
             what="500 refusals counted by the governor")
    wait_for(lambda: "order refusals (paused)" in _governance(state), 20.0,
             what="a summary of the refusals while paused")
    lines = _governance(state).splitlines()
    one_by_one = [line for line in lines if "order refused: trading is paused" in line]
    assert len(one_by_one) < 20
    summary = next(line for line in lines if "order refusals (paused)" in line)
    counted = int(re.search(r"(\d+) order refusals \(paused\)", summary).group(1))  # type: ignore[union-attr]
    assert counted + len(one_by_one) >= 500
    assert "operator command accepted: pause" in _governance(state)


def test_a_serving_thread_that_dies_is_reported_and_replaced(state: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the socket layer fails under the serving loop. The health flag
    drops, the dashboard actor fails and is restarted, and a new channel serves."""
    armed = {"left": 1}
    original = Dashboard._serve_one

    def failing(self: Dashboard, control: zmq.Socket[bytes]) -> bool:
        if armed["left"] > 0:
            armed["left"] -= 1
            raise zmq.ZMQError(errno.ENOTSOCK)
        return original(self, control)

    monkeypatch.setattr(Dashboard, "_serve_one", failing)
    with pytest.raises(ControlError):
        send_command(state, "status", timeout_s=1.0)
    assert armed["left"] == 0, "the fault was hit"
    wait_for(lambda: _serves(state), 20.0, what="a restarted control channel")
    assert control_health(state).healthy()
    assert "the control channel failed" in _log(state, "main")


def _serves(state_dir: Path) -> bool:
    try:
        return bool(send_command(state_dir, "status", timeout_s=1.0)["control"]["healthy"])
    except ControlError:
        return False
