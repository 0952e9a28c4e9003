"""systemd's notify protocol, without a dependency, and a no-op outside systemd.

``notify("READY=1")`` sends one datagram to the socket named by NOTIFY_SOCKET (a path, or
an abstract name starting with ``@``). The watchdog helpers read WATCHDOG_USEC and
WATCHDOG_PID as systemd sets them.
"""

from __future__ import annotations

import os
import socket


def notify(*assignments: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``assignments`` (e.g. ``"READY=1"``, ``"STATUS=..."``) to systemd; False when
    not running under systemd or when the datagram could not be sent."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address or not assignments:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    payload = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(payload)
    except OSError:
        return False
    return True


def watchdog_interval_s(environ: dict[str, str] | None = None) -> float | None:
    """Half the watchdog timeout systemd asked for (how often to ping), or None when the
    watchdog is off or meant for another process (WATCHDOG_PID)."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2_000_000


def ready() -> bool:
    """READY=1: the start barrier passed."""
    return notify("READY=1")


def stopping() -> bool:
    """STOPPING=1: a graceful stop began."""
    return notify("STOPPING=1")


def watchdog() -> bool:
    """WATCHDOG=1: the tree is healthy."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """STATUS=<text>, shown by ``systemctl status``."""
    return notify(f"STATUS={text}")


def extend_timeout(seconds: float) -> bool:
    """EXTEND_TIMEOUT_USEC: ask for more time (a shutdown flatten is running)."""
    return notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")
