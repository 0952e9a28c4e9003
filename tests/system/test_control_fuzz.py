"""Fuzzing the control socket of a running service: random frame shapes, sizes, bytes and
mangled requests. Every message is answered, none is accepted without the credential and
a known verb, and afterwards the channel still serves and its logs hold only well-formed
lines. A few hundred messages by default (seconds); set TRADEGUARD_FUZZ_EXAMPLES for a
longer run, TRADEGUARD_FUZZ_SEED to replay one."""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from actors.dashboard import control_endpoint, control_health, read_token
from tests.helpers import wait_for
from tradeguard.app import Service
from tradeguard.control import fetch_status, send_command
from tradeguard.logs import setup_logging, shutdown_logging
from tradeguard.settings import load_settings

EXAMPLES = int(os.environ.get("TRADEGUARD_FUZZ_EXAMPLES", "400"))
SEED = int(os.environ.get("TRADEGUARD_FUZZ_SEED", str(random.SystemRandom().randrange(2**32))))
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| ")
HARMLESS_VERBS = ["status", "STATUS", "stat", "", "pause ", "flatten\n", "reset\x00", "self-destruct",
                  "\u202eesuap", "\ud800", "x" * 5000]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
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


def _junk(rng: random.Random) -> Any:
    """A random JSON value, sometimes nested deep."""
    kind = rng.randrange(8)
    if kind == 0:
        depth = rng.choice([1, 10, 500, 5000])
        return json.loads("[" * depth + "]" * depth) if depth < 900 else "[" * depth
    return [None, True, rng.randrange(-2**70, 2**70), rng.random() * 1e308, "\n\r\t\x00",
            {"a": [1, {"b": None}]}, "é" * rng.randrange(100)][kind - 1]


def _message(rng: random.Random, token: str) -> list[bytes]:
    """One hostile message: its frames after the REQ-style empty delimiter."""
    shape = rng.randrange(6)
    if shape == 0:  # random bytes in random frames
        return [rng.randbytes(rng.choice([0, 1, 7, 300, 70_000])) for _ in range(rng.randrange(0, 5))]
    request: dict[str, Any] = {}
    for field in ("token", "verb", "operator", "reason"):
        if rng.random() < 0.7:
            request[field] = _junk(rng)
    if rng.random() < 0.5:
        request["token"] = token if rng.random() < 0.7 else token[:-1] + "x"
    if rng.random() < 0.6:
        request["verb"] = rng.choice(HARMLESS_VERBS)
    if rng.random() < 0.3:
        request["extra"] = _junk(rng)
    body = json.dumps(request).encode("utf-8", "surrogatepass")
    if shape == 1:  # cut short
        body = body[: rng.randrange(len(body) + 1)]
    elif shape == 2:  # a byte flipped
        i = rng.randrange(len(body))
        body = body[:i] + bytes([rng.randrange(256)]) + body[i + 1:]
    frames = [body]
    if shape == 3:
        frames.append(rng.randbytes(rng.randrange(10)))
    return frames


@pytest.mark.timeout(180)
def test_random_messages_never_take_the_channel_down(state: Path) -> None:
    rng = random.Random(SEED)
    token = read_token(state)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock: zmq.Socket[bytes] = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(control_endpoint(state))
    accepted = 0
    try:
        for n in range(EXAMPLES):
            frames = _message(rng, token)
            sock.send_multipart([b"", *frames])
            try:
                reply = sock.recv_multipart()
            except zmq.Again:
                raise AssertionError(f"no answer to message {n} (seed {SEED}): {frames!r:.200}") from None
            answer = json.loads(reply[-1])
            assert "internal error" not in str(answer.get("error")), f"seed {SEED}, message {n}"
            if answer["ok"]:
                accepted += 1
                assert isinstance(answer["result"], dict), "only status can be accepted here"
    finally:
        sock.close(linger=0)

    status = fetch_status(state)
    assert status.mode == "LIVE" and status.paused is False, f"nothing changed (seed {SEED})"
    assert status.control is not None and status.control.refused + accepted >= EXAMPLES
    assert control_health(state).healthy()
    send_command(state, "pause", reason="after fuzzing")
    assert fetch_status(state).paused is True, "a valid command still works"
    main = (state / "logs" / "main.log").read_text()
    assert "Traceback" not in main, f"seed {SEED}"
    governance = (state / "logs" / "governance.log").read_text(errors="replace").splitlines()
    assert all(LOG_LINE.match(line) for line in governance), f"a forged or broken line (seed {SEED})"
    assert max(len(line) for line in governance) < 2000
