"""Running tradeguard and its simulated venues as real processes, for system tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tradeguard.control import ControlError, send_command

BIN = Path(sys.executable).parent


def free_port(pair: bool = False) -> int:
    """A free TCP port on 127.0.0.1 (and the one after it, with ``pair``)."""
    for _ in range(200):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if not pair:
                return port
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def tradeguard(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``tradeguard ARGS`` as a process (its output goes to a file in the state dir
    when one is named, else is discarded)."""
    out: Any = subprocess.DEVNULL
    if "--state-dir" in args:
        state = Path(args[args.index("--state-dir") + 1])
        state.mkdir(parents=True, exist_ok=True)
        out = open(state / "process.out", "ab")  # noqa: SIM115 - owned by the process
    return subprocess.Popen([str(BIN / "tradeguard"), *args], stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, start_new_session=True)


@contextmanager
def running(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A tradeguard process that is killed, whatever happens, when the block ends."""
    proc = tradeguard(*args, env=env)
    try:
        yield proc
    finally:
        stop(proc, signal.SIGKILL)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
    """Signal ``proc`` and wait for it; SIGKILL if it overstays."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def status(state_dir: Path) -> dict[str, Any] | None:
    """The service's status, or None while it does not answer."""
    try:
        result: dict[str, Any] = send_command(state_dir, "status", timeout_s=2.0)
        return result
    except ControlError:
        return None


def wait_status(state_dir: Path, predicate: Any, timeout_s: float = 30.0, what: str = "") -> dict[str, Any]:
    """Poll the status until ``predicate(status)`` holds."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        last = status(state_dir)
        if last is not None and predicate(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last status: {last}")
