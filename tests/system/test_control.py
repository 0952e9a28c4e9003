"""The control socket of a running service: requests without the credential, with a wrong
one, malformed or unknown are refused, change nothing and are audited in the governance
log; with the credential, status and commands work and are audited too."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from actors.dashboard import CONTROL_SOCKET, PUB_SOCKET, TOKEN_FILE, control_endpoint, read_token
from tests.helpers import wait_for
from tradeguard.app import Service
from tradeguard.control import ControlError, send_command
from tradeguard.logs import setup_logging, shutdown_logging
from tradeguard.settings import load_settings


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


def _raw(state_dir: Path, payload: bytes, timeout_s: float = 5.0) -> dict[str, Any]:
    """One request exactly as given, and the service's answer."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock: zmq.Socket[bytes] = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
    try:
        sock.connect(control_endpoint(state_dir))
        sock.send(payload)
        answer: dict[str, Any] = json.loads(sock.recv())
        return answer
    finally:
        sock.close(linger=0)


def _governance(state_dir: Path) -> str:
    path = state_dir / "logs" / "governance.log"
    return path.read_text() if path.exists() else ""


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
    assert status["healthy"] is True

    send_command(state, "pause", reason="lunch", operator="alice")
    assert send_command(state, "status")["paused"] is True
    send_command(state, "resume", operator="alice")
    assert send_command(state, "status")["paused"] is False
    wait_for(lambda: "operator command accepted: pause by alice lunch" in _governance(state), 5.0,
             what="the accepted pause in governance.log")
    wait_for(lambda: "operator command accepted: resume by alice" in _governance(state), 5.0,
             what="the accepted resume in governance.log")
    assert _refusals(state) == []

    # Local and owner-only: the credential and both sockets are 0600 in a 0700 directory.
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in (TOKEN_FILE, CONTROL_SOCKET, PUB_SOCKET):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
