"""One state directory, one running service, and the command line's rough edges, with real
processes: a second ``tradeguard run`` on a state directory in use exits 2 naming the pid
that holds it (and the first keeps serving); the lock goes with its holder, even after
SIGKILL; a state directory that cannot be written is a one-line error and exit 2; a
status written into a closed pipe is no traceback; ``reset`` while LIVE exits 1."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.dashboard import CONTROL_SOCKET
from tests.system.processes import BIN, running, stop, wait_status
from tradeguard.app import LOCK_FILE

pytestmark = pytest.mark.timeout(120)


def _cli(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "tradeguard"), *args], capture_output=True, text=True,
                          timeout=timeout_s, stdin=subprocess.DEVNULL)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The paper default running as a process, LIVE."""
    state = tmp_path_factory.mktemp("live") / "state"
    with running("run", "--state-dir", str(state)) as proc:
        wait_status(state, lambda s: s["mode"] == "LIVE", 60.0, "the first instance LIVE")
        yield proc, state


def test_a_second_instance_on_the_same_state_dir_exits_2_naming_the_holder(
        live: tuple[subprocess.Popen[bytes], Path]) -> None:
    first, state = live
    socket_before = (state / CONTROL_SOCKET).stat().st_ino
    second = _cli("run", "--state-dir", str(state))
    assert second.returncode == 2, second.stderr
    line = _one_line_error(second)
    assert f"pid {first.pid}" in line and str(state) in line
    # The first instance is untouched: same control socket, still answering, still LIVE.
    assert first.poll() is None
    assert (state / CONTROL_SOCKET).stat().st_ino == socket_before
    wait_status(state, lambda s: s["mode"] == "LIVE", 10.0, "the first instance still LIVE")


def test_status_into_a_closed_pipe_is_quiet(live: tuple[subprocess.Popen[bytes], Path]) -> None:
    _, state = live
    for extra in ((), ("--json",)):
        reader, writer = os.pipe()
        os.close(reader)  # the reader is gone before anything is written (``| head -0``)
        try:
            result = subprocess.run([str(BIN / "tradeguard"), "status", "--state-dir", str(state), *extra],
                                    stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60)
        finally:
            os.close(writer)
        assert result.stderr == "", result.stderr
        assert result.returncode == 128 + signal.SIGPIPE


def test_reset_while_live_exits_1_saying_why(live: tuple[subprocess.Popen[bytes], Path]) -> None:
    _, state = live
    result = _cli("reset", "--state-dir", str(state), "--reason", "test")
    assert result.returncode == 1
    line = _one_line_error(result)
    assert "reset refused" in line and "LIVE" in line
    assert result.stdout == ""
    wait_status(state, lambda s: s["mode"] == "LIVE", 10.0, "still LIVE after the refused reset")


def test_the_lock_goes_with_its_holder_even_after_sigkill(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running("run", "--state-dir", str(state)) as first:
        wait_status(state, lambda s: s["mode"] == "LIVE", 60.0, "the first instance LIVE")
        assert (state / LOCK_FILE).read_text().strip() == str(first.pid)
        stop(first, signal.SIGKILL)
    # The lock file is still there, naming a dead pid; it must not block the next start.
    with running("run", "--state-dir", str(state)) as second:
        wait_status(state, lambda s: s["mode"] == "LIVE", 60.0, "the restarted instance LIVE")
        assert (state / LOCK_FILE).read_text().strip() == str(second.pid)
        assert stop(second) == 0


def _unwritable_dir(tmp_path: Path) -> Path:
    """An existing directory this user cannot create files in: a read-only one, or, for
    root (whom permissions do not stop), a kernel directory."""
    candidate = tmp_path / "read-only"
    candidate.mkdir()
    candidate.chmod(0o555)
    for directory in (candidate, Path("/sys/kernel"), Path("/proc/self")):
        try:
            fd, probe = tempfile.mkstemp(dir=directory)
        except OSError:
            return directory
        os.close(fd)
        os.unlink(probe)
    raise AssertionError("no unwritable directory found on this machine")


@pytest.mark.parametrize("kind", ["under-a-file", "unwritable"])
def test_an_unusable_state_dir_is_a_one_line_error_and_exit_2(tmp_path: Path, kind: str) -> None:
    if kind == "under-a-file":
        (tmp_path / "plain-file").write_text("")
        state = tmp_path / "plain-file" / "state"
    else:
        state = _unwritable_dir(tmp_path)
    result = _cli("run", "--state-dir", str(state))
    assert result.returncode == 2, result.stderr
    line = _one_line_error(result)
    assert line.startswith(f"tradeguard: state directory {state}")
