"""The operator's side of the control channel: one authenticated request, one answer."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import zmq

from actors.dashboard import CONTROL_SOCKET, control_endpoint, read_token
from actors.errors import TradeguardError


class ControlError(TradeguardError):
    """The running service could not be reached, or refused the request."""


def send_command(state_dir: Path, verb: str, *, reason: str = "", operator: str | None = None,
                 token: str | None = None, timeout_s: float = 5.0) -> Any:
    """Send ``verb`` to the service whose state directory is ``state_dir``; returns the
    result or raises ``ControlError``. The credential is read from the state directory
    unless ``token`` is given."""
    state_dir = Path(state_dir)
    if not (state_dir / CONTROL_SOCKET).exists():
        raise ControlError(f"no running tradeguard: {state_dir / CONTROL_SOCKET} does not exist")
    if token is None:
        try:
            token = read_token(state_dir)
        except OSError as exc:
            raise ControlError(f"cannot read the control credential: {exc}") from exc
    request = {"token": token, "verb": verb, "reason": reason,
               "operator": operator or getpass.getuser()}
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout_s * 1000))
    try:
        sock.connect(control_endpoint(state_dir))
        sock.send(json.dumps(request).encode())
        reply = json.loads(sock.recv())
    except zmq.Again as exc:
        raise ControlError(f"the service did not answer within {timeout_s}s") from exc
    finally:
        sock.close(linger=0)
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "refused")))
    return reply.get("result")
