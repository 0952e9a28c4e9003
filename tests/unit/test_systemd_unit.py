"""tradeguard.systemd: the notify sender and the watchdog settings, against real sockets."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tradeguard import systemd


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A datagram socket on a path, and the environment that names it."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    try:
        yield sock, {"NOTIFY_SOCKET": path}
    finally:
        sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A datagram socket on an abstract name, and the environment that names it (``@``)."""
    name = f"tradeguard-unit-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        yield sock, {"NOTIFY_SOCKET": "@" + name}
    finally:
        sock.close()


def test_notify_sends_one_datagram_to_a_path(path_socket: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = path_socket
    assert systemd.notify("READY=1", "STATUS=up", environ=env)
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_notify_reaches_an_abstract_socket(abstract_socket: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = abstract_socket
    assert systemd.notify("WATCHDOG=1", environ=env)
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_helpers_send_the_protocol_assignments(path_socket: tuple[socket.socket, dict[str, str]],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    sock, env = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", env["NOTIFY_SOCKET"])
    assert systemd.ready() and systemd.watchdog() and systemd.stopping()
    assert systemd.status("mode LIVE\nsecond line")
    assert systemd.extend_timeout(2.5)
    assert [sock.recv(4096) for _ in range(5)] == [
        b"READY=1", b"WATCHDOG=1", b"STOPPING=1", b"STATUS=mode LIVE second line",
        b"EXTEND_TIMEOUT_USEC=2500000",
    ]


@pytest.mark.parametrize("env", [
    {},
    {"NOTIFY_SOCKET": ""},
    {"NOTIFY_SOCKET": "@"},
    {"NOTIFY_SOCKET": "relative/notify.sock"},
    {"NOTIFY_SOCKET": "vsock:2:1234"},
])
def test_notify_is_a_no_op_outside_systemd(env: dict[str, str]) -> None:
    assert systemd.notify("READY=1", environ=env) is False


def test_notify_reports_a_socket_nobody_listens_on(tmp_path: Path) -> None:
    assert systemd.notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False


def test_notify_without_assignments_sends_nothing(path_socket: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = path_socket
    assert systemd.notify(environ=env) is False
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        sock.recv(4096)


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "400000"}, 0.2),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}, 0.2),
    ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
    ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "me"}, None),
    ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": ""}, 0.2),
])
def test_watchdog_interval_is_half_the_timeout_and_only_for_this_process(
        env: dict[str, str], expected: float | None) -> None:
    assert systemd.watchdog_interval_s(env) == expected
