"""The operator's side of the control channel: one authenticated request, one answer."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import msgspec
import zmq

from actors.dashboard import CONTROL_SOCKET, control_endpoint, read_token
from actors.errors import TradeguardError
from messages.status import REPLY_DECODER, ControlRequest, StatusDocument


class ControlError(TradeguardError):
    """The running service could not be reached, or refused the request."""


def _exchange(state_dir: Path, verb: str, *, reason: str, operator: str | None, token: str | None,
              timeout_s: float, venue: str | None = None, source: str | None = None) -> bytes:
    """Send one request; the raw answer."""
    state_dir = Path(state_dir)
    if not (state_dir / CONTROL_SOCKET).exists():
        raise ControlError(f"no running tradeguard: {state_dir / CONTROL_SOCKET} does not exist")
    if token is None:
        try:
            token = read_token(state_dir)
        except OSError as exc:
            raise ControlError(f"cannot read the control credential: {exc}") from exc
    # The service takes the operator's identity from the operating system (the socket's
    # peer credentials); the name sent here is only recorded as what the client claimed.
    request = ControlRequest(token=token, verb=verb, reason=reason,
                             operator=operator or getpass.getuser(), venue=venue, source=source)
    try:
        body = msgspec.json.encode(request)
    except UnicodeError as exc:  # a lone surrogate in a reason or name is no text to send
        raise ControlError(f"the request is not valid text: {exc}") from exc
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout_s * 1000))
    try:
        sock.connect(control_endpoint(state_dir))
        sock.send(body)
        return sock.recv()
    except zmq.Again as exc:
        raise ControlError(f"the service did not answer within {timeout_s}s") from exc
    finally:
        sock.close(linger=0)


def send_command(state_dir: Path, verb: str, *, reason: str = "", operator: str | None = None,
                 token: str | None = None, timeout_s: float = 5.0, venue: str | None = None,
                 source: str | None = None) -> Any:
    """Send ``verb`` to the service whose state directory is ``state_dir``; returns the
    result as plain JSON values or raises ``ControlError``. The credential is read from the
    state directory unless ``token`` is given. ``venue`` / ``source`` scope a pause, resume
    or flatten to one venue or one order source."""
    raw = _exchange(state_dir, verb, reason=reason, operator=operator, token=token, timeout_s=timeout_s,
                    venue=venue, source=source)
    try:
        reply = json.loads(raw)
    except ValueError as exc:
        raise ControlError(f"unreadable answer from the service: {exc}") from exc
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise ControlError(str(reply.get("error", "refused") if isinstance(reply, dict) else "refused"))
    return reply.get("result")


def fetch_status(state_dir: Path, *, timeout_s: float = 5.0, token: str | None = None) -> StatusDocument:
    """The running service's status document, typed (raises ``ControlError``)."""
    raw = _exchange(state_dir, "status", reason="", operator=None, token=token, timeout_s=timeout_s)
    try:
        reply = REPLY_DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ControlError(f"unreadable status from the service: {exc}") from exc
    if not reply.ok or not isinstance(reply.result, StatusDocument):
        raise ControlError(reply.error or "refused")
    return reply.result
