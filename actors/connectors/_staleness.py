"""What the FIX and ZeroMQ connectors share of staleness handling: the late acknowledgement
check on the order events they deliver, and the abortive close of a TCP socket the
library does not let them configure (found by its peer among the process's descriptors).

The rules themselves (when a session is stale or dead, when an acknowledgement is late)
are ``core.staleness``; this module only applies them to messages and sockets.
"""

from __future__ import annotations

import os
import socket
import struct
from decimal import Decimal
from typing import TYPE_CHECKING

from core.staleness import LATE_EXECUTION, LateAcks, late_detail
from messages import OrderAccepted, OrderFilled, SafetyEvent, Severity, now_ns

if TYPE_CHECKING:
    from loguru import Logger


def late_event(late: LateAcks, message: object, venue: str) -> SafetyEvent | None:
    """The WARNING for an order whose first acknowledgement (accepted or filled) comes late;
    any other order event (a rejection, a cancel) ends the watch of its order."""
    if isinstance(message, (OrderAccepted, OrderFilled)):
        delay_s = late.acknowledged(message.client_order_id, now_ns())
        if delay_s is None:
            return None
        return SafetyEvent(kind=LATE_EXECUTION, severity=Severity.WARNING, venue=venue,
                           symbol=message.symbol, detail=late_detail(message.client_order_id, delay_s),
                           value=Decimal(f"{delay_s:.3f}"), ts_ns=now_ns())
    coid = getattr(message, "client_order_id", None)
    if isinstance(coid, str):
        late.forget(coid)
    return None


def linger_zero(host: str, port: int, log: Logger, what: str) -> bool:
    """Set ``SO_LINGER`` 0 on this process's one TCP socket connected to ``host:port``, so
    that closing it sends a reset and drops what the kernel has not sent yet. The socket
    is found among the process's descriptors (Linux ``/proc``); with none or several
    matches nothing is changed. True when it was set."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = {info[4][0] for info in infos}
        descriptors = os.listdir("/proc/self/fd")
    except OSError as exc:
        log.warning(f"{what}: cannot find the session's socket: {exc!r}")
        return False
    found: list[socket.socket] = []
    seen: set[str] = set()  # socket inodes: a descriptor reused meanwhile is seen once
    for entry in descriptors:
        try:
            target = os.readlink(f"/proc/self/fd/{entry}")
            if not target.startswith("socket:") or target in seen:
                continue
            seen.add(target)
            sock = socket.socket(fileno=os.dup(int(entry)))
        except (OSError, ValueError):
            continue
        try:
            peer = sock.getpeername() if sock.type == socket.SOCK_STREAM else None
        except OSError:
            peer = None
        if peer and peer[0] in addresses and peer[1] == port:
            found.append(sock)
        else:
            sock.close()
    try:
        if len(found) != 1:
            log.warning(f"{what}: {len(found)} sockets to {host}:{port}; the dead session is "
                        "closed without SO_LINGER 0")
            return False
        found[0].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return True
    except OSError as exc:
        log.warning(f"{what}: cannot set SO_LINGER 0: {exc!r}")
        return False
    finally:
        for sock in found:
            sock.close()  # a duplicate descriptor: the session's own stays open
