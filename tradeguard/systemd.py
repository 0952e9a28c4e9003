"""systemd's notify protocol, without a dependency, and a no-op outside systemd.

``notify("READY=1")`` sends one datagram to the socket named by NOTIFY_SOCKET: an absolute
path, or an abstract name written with a leading ``@`` (sent as a leading NUL byte). Any
other address (for instance ``vsock:``) is not supported and counts as "not under
systemd". The watchdog helpers read WATCHDOG_USEC and WATCHDOG_PID as systemd sets them:
the watchdog is ours only when WATCHDOG_PID is unset or names this process.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def _address(environ: Mapping[str, str]) -> str | None:
    address = environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@") and len(address) > 1:
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    return None


def notify(*assignments: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``assignments`` (e.g. ``"READY=1"``, ``"STATUS=..."``) to systemd in one
    datagram; False when not running under systemd or when it could not be sent."""
    address = _address(os.environ if environ is None else environ)
    if address is None or not assignments:
        return False
    payload = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address)
    except OSError:
        return False
    return True


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """Half the watchdog timeout systemd asked for (how often to ping), or None when the
    watchdog is off, malformed, or meant for another process (WATCHDOG_PID)."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
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
    """STATUS=<text>, shown by ``systemctl status`` (one line: newlines would start new
    assignments)."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def extend_timeout(seconds: float) -> bool:
    """EXTEND_TIMEOUT_USEC: ask for ``seconds`` more from now (a shutdown flatten is
    running); systemd expects the next extension before these run out."""
    return notify(f"EXTEND_TIMEOUT_USEC={max(1, int(seconds * 1_000_000))}")
