"""systemd's notify protocol against a fake systemd: a datagram socket the test binds (a
path, and an abstract name) and reads what ``tradeguard run`` sends it."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from pykka.messages import ProxyCall

from supervision import RequestStop, registry
from tests.helpers import wait_for
from tests.system.processes import running, wait_status
from tradeguard import systemd
from tradeguard.app import Service
from tradeguard.cli import EXIT_ESCALATED, EXIT_FAILURE, EXIT_OK, watchdog_loop
from tradeguard.settings import DEFAULT_CONFIG, load_settings


class NotifyListener:
    """A fake systemd: collects every assignment sent to its socket, with arrival times."""

    def __init__(self, bind_to: str, address: str) -> None:
        self.address = address
        """The NOTIFY_SOCKET value that reaches this listener."""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.setblocking(False)
        self.messages: list[str] = []
        self.times: list[float] = []

    def drain(self) -> list[str]:
        """Everything received so far, one assignment per entry."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.messages
            now = time.monotonic()
            for line in data.decode().split("\n"):
                self.messages.append(line)
                self.times.append(now)

    def wait(self, condition: Callable[[list[str]], bool], timeout_s: float, what: str) -> None:
        """Until ``condition(messages)`` holds, or fail after ``timeout_s``."""
        wait_for(lambda: condition(self.drain()), timeout_s=timeout_s, interval_s=0.01, what=what)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifyListener]:
    """A fake systemd on a socket path or on an abstract socket name."""
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        fake = NotifyListener(path, path)
    else:
        name = f"tradeguard-test-{uuid.uuid4().hex}"
        fake = NotifyListener("\0" + name, "@" + name)
    try:
        yield fake
    finally:
        fake.close()


def _index(messages: list[str], prefix: str) -> int:
    return next(i for i, m in enumerate(messages) if m.startswith(prefix))


def test_run_speaks_the_notify_protocol(listener: NotifyListener, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    state = tmp_path / "state"
    with running("run", "--state-dir", str(state)) as proc:
        listener.wait(lambda m: "READY=1" in m, 30.0, "READY=1")
        ready = listener.messages.index("READY=1")
        assert "WATCHDOG=1" not in listener.messages[:ready], "a watchdog ping before READY"
        listener.wait(lambda m: m[ready:].count("WATCHDOG=1") >= 8, 10.0, "WATCHDOG=1 repeating")
        pings = [t for m, t in zip(listener.messages, listener.times, strict=True) if m == "WATCHDOG=1"]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 0.4, f"a watchdog gap longer than WATCHDOG_USEC: {max(gaps):.3f}s"
        listener.wait(lambda m: any(x.startswith("STATUS=mode LIVE") for x in m), 10.0, "STATUS=mode LIVE")
        wait_status(state, lambda s: s["mode"] == "LIVE", 10.0, "LIVE")

        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - sent < 10.0
        messages = listener.drain()
        assert "STOPPING=1" in messages
        assert "WATCHDOG=1" not in messages[messages.index("STOPPING=1"):]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """The paper default, running in this process."""
    running_service = Service(load_settings(), tmp_path / "state")
    running_service.start()
    try:
        yield running_service
    finally:
        running_service.stop("leave")


def _loop_in_thread(service: Service, listener: NotifyListener, stop: threading.Event,
                    result: list[int]) -> threading.Thread:
    notify = partial(systemd.notify, environ={"NOTIFY_SOCKET": listener.address})
    thread = threading.Thread(
        target=lambda: result.append(
            watchdog_loop(service, stop, notify, watchdog_s=0.05, status_every_s=0.2)),
        name="watchdog-loop", daemon=True)
    thread.start()
    return thread


def test_watchdog_pings_stop_while_the_tree_does_not_answer(service: Service,
                                                           listener: NotifyListener) -> None:
    stop = threading.Event()
    result: list[int] = []
    thread = _loop_in_thread(service, listener, stop, result)
    try:
        listener.wait(lambda m: m.count("WATCHDOG=1") >= 3, 5.0, "pings while healthy")
        assert service.tree.ref is not None
        # The root is told a stop is under way: it is alive but answers its health check "no".
        assert service.tree.ref.ask(RequestStop(), timeout=2.0)
        listener.wait(lambda m: any(x.startswith("STATUS=UNHEALTHY") for x in m), 5.0, "STATUS=UNHEALTHY")
        first = _index(listener.messages, "STATUS=UNHEALTHY")
        listener.wait(lambda m: sum(x.startswith("STATUS=UNHEALTHY") for x in m) >= 3, 5.0,
                      "three UNHEALTHY statuses (many ticks)")
        assert "WATCHDOG=1" not in listener.messages[first:], "pinged while the tree was unhealthy"
        assert thread.is_alive(), "the loop must keep running: systemd's watchdog decides"
    finally:
        stop.set()
        thread.join(5.0)
    assert not thread.is_alive()
    assert result == [EXIT_OK]


def test_watchdog_loop_ends_with_exit_3_when_the_root_dies(service: Service,
                                                          listener: NotifyListener) -> None:
    stop = threading.Event()
    result: list[int] = []
    thread = _loop_in_thread(service, listener, stop, result)
    try:
        listener.wait(lambda m: m.count("WATCHDOG=1") >= 3, 5.0, "pings while healthy")
        assert service.tree.ref is not None
        service.tree.ref.stop(block=True, timeout=10.0)  # behind the service's back
        thread.join(5.0)
        assert not thread.is_alive(), "the loop did not notice the root died"
    finally:
        stop.set()
        thread.join(5.0)
    assert result == [EXIT_ESCALATED]
    assert not service.healthy()
    messages = listener.drain()
    assert messages[-1].startswith("STATUS=the supervision tree gave up")


def test_ready_is_never_sent_while_a_permanent_child_fails_to_start(
        listener: NotifyListener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The position keeper cannot open its journal (a directory stands at its path): it is
    restarted with backoff, never runs, and the service must neither send READY=1 nor feed
    the watchdog; it gives up at its start timeout and exits 1 naming the keeper."""
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    state = tmp_path / "state"
    (state / "journal.sqlite3").mkdir(parents=True)
    config = tmp_path / "tradeguard.toml"
    text = DEFAULT_CONFIG.read_text()
    config.write_text(text.replace("[service]\n", "[service]\nstart_timeout_s = 4.0\n", 1))
    with running("run", "--config", str(config), "--state-dir", str(state)) as proc:
        code = proc.wait(30)
    messages = listener.drain()
    assert code == EXIT_FAILURE
    assert "READY=1" not in messages
    assert "WATCHDOG=1" not in messages
    failed = [m for m in messages if m.startswith("STATUS=failed to start")]
    assert failed and "position_keeper" in failed[0], messages


HUNG_SERVICE = """
import os, signal, sys, threading, time
from pathlib import Path
from supervision import registry
from tradeguard import cli
from tradeguard.control import send_command

state = Path(sys.argv[1])
then = sys.argv[2]

def inject():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            send_command(state, "status", timeout_s=1.0)
            break
        except Exception:
            time.sleep(0.1)
    hung = registry.lookup("safety_monitor").proxy()
    hung.hang = threading.Event().wait  # no timeout: this actor never answers again
    registry.lookup("safety_monitor").proxy().hang()
    if then == "sigterm":
        print("injected", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    boom = registry.lookup("risk_governor").proxy()
    boom.boom = sys.exit
    print("injected", flush=True)
    registry.lookup("risk_governor").proxy().boom("the operator's code called sys.exit")

threading.Thread(target=inject, daemon=True).start()
sys.exit(cli.main(["run", "--state-dir", str(state)]))
"""


def _run_with_a_hung_actor(listener: NotifyListener, tmp_path: Path,
                           then: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "NOTIFY_SOCKET": listener.address}
    env.pop("WATCHDOG_USEC", None)
    done = subprocess.run([sys.executable, "-c", HUNG_SERVICE, str(tmp_path / "state"), then],
                          cwd=root, env=env, capture_output=True, text=True, timeout=90)
    assert "injected" in done.stdout, done.stdout + done.stderr[-3000:]
    return done


def test_run_stops_and_exits_0_on_sigterm_with_a_hung_actor(listener: NotifyListener,
                                                           tmp_path: Path) -> None:
    """The hung actor is abandoned after its shutdown timeout; its thread (a daemon
    thread) does not keep the process alive."""
    began = time.monotonic()
    done = _run_with_a_hung_actor(listener, tmp_path, "sigterm")
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    assert time.monotonic() - began < 60.0
    assert "STOPPING=1" in listener.drain()


def test_run_exits_with_its_code_when_a_base_exception_meets_a_hung_actor(
        listener: NotifyListener, tmp_path: Path) -> None:
    """``tradeguard run`` with one actor hung for good and a SystemExit in another: the
    tree escalates at once, the hung actor is abandoned, and the process exits 3."""
    began = time.monotonic()
    done = _run_with_a_hung_actor(listener, tmp_path, "exit")
    assert done.returncode == EXIT_ESCALATED, done.stderr[-3000:]
    assert time.monotonic() - began < 60.0
    messages = listener.drain()
    gave_up = [m for m in messages if m.startswith("STATUS=the supervision tree gave up")]
    assert gave_up and "SystemExit" in gave_up[0] and "risk_governor" in gave_up[0], messages


def _crash(name: str) -> None:
    """Make the actor ``name`` fail in a told call (as a bug in one of its handlers would)."""
    ref = registry.lookup(name)
    assert ref is not None, f"{name} is not running"

    def bug() -> None:
        raise RuntimeError("injected handler fault")

    ref.proxy().bug = bug
    ref.tell(ProxyCall(attr_path=("bug",), args=(), kwargs={}))


def test_watchdog_pings_stop_while_a_child_crash_loops(service: Service, listener: NotifyListener) -> None:
    """The strategies supervisor allows 3 restarts in 5 s: two restarts of the strategy is
    more than half of that, a crash loop, and the watchdog goes unfed until they age out."""
    stop = threading.Event()
    result: list[int] = []
    thread = _loop_in_thread(service, listener, stop, result)
    try:
        listener.wait(lambda m: m.count("WATCHDOG=1") >= 3, 5.0, "pings while healthy")
        for generation in (1, 2):
            _crash("sample")
            wait_for(lambda g=generation: registry.generation("sample") == g
                     and registry.lookup("sample") is not None, timeout_s=10.0,
                     what=f"the strategy restarted ({generation})")
        looping = time.monotonic()
        wait_for(lambda: not service.healthy(), timeout_s=2.0, what="unhealthy while crash-looping")
        mark = len(listener.drain())
        listener.wait(lambda m: sum(x.startswith("STATUS=UNHEALTHY") for x in m[mark:]) >= 2, 5.0,
                      "UNHEALTHY statuses while crash-looping")
        assert "WATCHDOG=1" not in listener.messages[mark:], "the watchdog was fed during a crash loop"
        listener.wait(lambda m: "WATCHDOG=1" in m[mark:], 15.0, "pings again once the restarts aged out")
        assert time.monotonic() - looping >= 2.0
        assert service.healthy()
    finally:
        stop.set()
        thread.join(5.0)
    assert result == [EXIT_OK]
