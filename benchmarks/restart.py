"""Restarts: a crashed actor replaced by its supervisor, against a whole service process
started again."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from actors.dashboard import CONTROL_SOCKET
from benchmarks.harness import NS_PER_MS, latency_summary_ms, section
from supervision import NO_BACKOFF, ChildSpec, SupervisedActor, Tree, registry
from tradeguard.control import ControlError, send_command


class Crash(msgspec.Struct, frozen=True):
    """Told to ``CrashingActor``: fail."""


class Probe(msgspec.Struct, frozen=True):
    """Asked of ``CrashingActor``: answered with its generation."""


class CrashingActor(SupervisedActor):
    """Fails on ``Crash``; answers ``Probe``; announces each start to the benchmark."""

    started = threading.Condition()
    generation_started: ClassVar[int] = -1

    def setup(self) -> None:
        with CrashingActor.started:
            CrashingActor.generation_started = self.context.generation
            CrashingActor.started.notify_all()

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {Crash: self._crash, Probe: lambda _m: self.context.generation}

    def _crash(self, _message: Crash) -> None:
        raise RuntimeError("benchmark crash")


def _wait_started(generation: int, timeout_s: float) -> bool:
    """Wait until ``generation`` of ``CrashingActor`` has run its setup."""
    with CrashingActor.started:
        return CrashingActor.started.wait_for(
            lambda: CrashingActor.generation_started >= generation, timeout=timeout_s)


def actor_restart(restarts: int = 200) -> dict[str, Any]:
    """p50/p99 from telling an actor to crash until its replacement (a new generation,
    restarted by a supervisor with no backoff) has run its setup and answered an ask."""
    name = "crashing"
    samples: list[int] = []
    with section("restart"):
        tree = Tree([ChildSpec(name=name, actor_class=CrashingActor)], name="bench_root",
                    # A short window keeps the supervisor's list of recent restarts as short
                    # as in service (where restarts are rare), and never gives up here.
                    intensity=1_000, period_s=0.01, backoff=NO_BACKOFF)
        tree.start(timeout_s=10)
        for _ in range(restarts):
            generation = registry.generation(name)
            assert generation is not None
            started = time.perf_counter_ns()
            registry.tell(name, Crash())
            if not _wait_started(generation + 1, timeout_s=10):
                raise TimeoutError("benchmark: the crashed actor was not restarted")
            ref = registry.lookup(name)
            if ref is None or ref.ask(Probe(), timeout=10) != generation + 1:
                raise RuntimeError("benchmark: the restarted actor did not answer")
            samples.append(time.perf_counter_ns() - started)
        tree.stop()
    summary = latency_summary_ms(samples)
    return {"restart_p50_ms": summary["p50_ms"], "restart": summary}


def tradeguard_command() -> list[str]:
    """How to run ``tradeguard``: the console script beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("tradeguard")
    if script.exists():
        return [str(script)]
    found = shutil.which("tradeguard")
    return [found] if found else [sys.executable, "-m", "tradeguard.cli"]


def _start_and_query(command: list[str], state_dir: Path, timeout_s: float) -> float:
    """Start the service, return ms until it answers ``status``; stop it (SIGTERM)."""
    (state_dir / CONTROL_SOCKET).unlink(missing_ok=True)
    started = time.perf_counter_ns()
    process = subprocess.Popen([*command, "run", "--state-dir", str(state_dir)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"benchmark: tradeguard run exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"benchmark: tradeguard did not answer status within {timeout_s}s")
            if (state_dir / CONTROL_SOCKET).exists():
                try:
                    send_command(state_dir, "status", timeout_s=2.0)
                    break
                except ControlError:
                    pass
            time.sleep(0.002)
        return (time.perf_counter_ns() - started) / NS_PER_MS
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def process_restart(runs: int = 3, timeout_s: float = 60.0) -> dict[str, Any]:
    """p50 over ``runs`` restarts of the whole service (``tradeguard run --state-dir DIR``,
    the embedded paper configuration) until it answers ``status`` on its control socket.
    A first, cold start (empty state directory) is made before and reported apart."""
    command = tradeguard_command()
    state_dir = Path(tempfile.mkdtemp(prefix="tg-bench-process-"))
    env_backup = os.environ.pop("NOTIFY_SOCKET", None)
    try:
        cold = _start_and_query(command, state_dir, timeout_s)
        times = [_start_and_query(command, state_dir, timeout_s) for _ in range(runs)]
    finally:
        if env_backup is not None:
            os.environ["NOTIFY_SOCKET"] = env_backup
        shutil.rmtree(state_dir, ignore_errors=True)
    return {
        "process_restart_p50_ms": round(statistics.median(times), 1),
        "process_restart_runs_ms": [round(t, 1) for t in times],
        "process_cold_start_ms": round(cold, 1),
        "process_command": " ".join([*command, "run", "--state-dir", "DIR"]),
    }
