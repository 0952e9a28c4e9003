"""A small programmatic client of a running tradeguard, for scripts and notebooks.

It speaks over the local control channel, authenticated like operator commands (the
credential in the state directory's ``control.token``; the service takes the user from
the operating system), so it only works on the machine and for the user that run the
service. Orders go through every pre-trade check like any other; their source is
``api:<user>``. Fills arrive on the ``fills.pub`` socket of the state directory::

    from tradeguard.client import Client

    with Client("./state") as client, client.fills() as fills:
        order = client.submit("AAPL", "buy", 10)
        fill = fills.next(timeout_s=5.0)
        print(order.status, fill)
        print(client.orders(), client.positions())

docs/order-entry.md describes the verbs and what they answer.
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import time
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import msgspec
import zmq

from actors.dashboard import CONTROL_SOCKET, control_endpoint, read_token
from actors.order_entry.protocol import (
    API_SOURCE_PREFIX,
    BEAT_TOPIC,
    ApiFill,
    ApiOrder,
    ApiPosition,
    fills_endpoint,
)
from tradeguard.control import ControlError

__all__ = ["ApiFill", "ApiOrder", "ApiPosition", "Client", "ControlError", "FillStream"]

_T = TypeVar("_T")


def _me() -> str:
    """The user name the service will see for this process (its uid's)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid:{os.getuid()}"


class FillStream:
    """Fills of this user's orders, as they happen (subscribe before submitting)."""

    def __init__(self, state_dir: Path, source: str, *, ready_timeout_s: float = 5.0) -> None:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._sock = context.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, source.encode())
        self._sock.setsockopt(zmq.SUBSCRIBE, BEAT_TOPIC)
        self._sock.connect(fills_endpoint(state_dir))
        self._decoder = msgspec.json.Decoder(ApiFill)
        self._pending: list[ApiFill] = []
        # The service beats on the socket: the first beat received says the subscription
        # is in place, so no fill from now on is lost.
        deadline = time.monotonic() + ready_timeout_s
        while not self._receive(deadline, beat_ends=True):
            if time.monotonic() >= deadline:
                self.close()
                raise ControlError(f"no beat on the fills socket within {ready_timeout_s}s")

    def _receive(self, deadline: float, *, beat_ends: bool = False) -> bool:
        """Read until a fill (or with ``beat_ends`` a beat) arrives or ``deadline`` passes."""
        while True:
            remaining_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            if not self._sock.poll(remaining_ms):
                return False
            frames = self._sock.recv_multipart()
            if len(frames) != 2:
                continue
            if frames[0] == BEAT_TOPIC:
                if beat_ends:
                    return True
                continue
            try:
                self._pending.append(self._decoder.decode(frames[1]))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            return True

    def next(self, timeout_s: float = 5.0) -> ApiFill | None:
        """The next fill, or None when none came within ``timeout_s``."""
        if not self._pending:
            self._receive(time.monotonic() + timeout_s)
        return self._pending.pop(0) if self._pending else None

    def close(self) -> None:
        """Stop listening."""
        self._sock.close(linger=0)

    def __enter__(self) -> FillStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class Client:
    """Submit, cancel and look at orders and positions of a running tradeguard."""

    def __init__(self, state_dir: Path | str, *, token: str | None = None, timeout_s: float = 5.0) -> None:
        self.state_dir = Path(state_dir)
        self.timeout_s = timeout_s
        if not (self.state_dir / CONTROL_SOCKET).exists():
            raise ControlError(f"no running tradeguard: {self.state_dir / CONTROL_SOCKET} does not exist")
        if token is None:
            try:
                token = read_token(self.state_dir)
            except OSError as exc:
                raise ControlError(f"cannot read the control credential: {exc}") from exc
        self._token = token
        self.user = _me()
        self.source = f"{API_SOURCE_PREFIX}{self.user}"
        """The ``source`` the service gives this user's orders."""
        self._ids = itertools.count(1)
        self._prefix = f"api-{self.user}-{time.time_ns():x}"

    # ---- the verbs --------------------------------------------------------------------

    def submit(self, symbol: str, side: str, quantity: Decimal | int | str, *, venue: str = "paper",
               order_type: str = "market", limit_price: Decimal | str | None = None,
               stop_price: Decimal | str | None = None, time_in_force: str = "day",
               reduce_only: bool = False, client_order_id: str | None = None) -> ApiOrder:
        """Send an order; answers it as it stands (``pending`` until the venue acknowledges,
        ``rejected`` with the reason in ``text`` when refused)."""
        order = {
            "client_order_id": client_order_id or f"{self._prefix}-{next(self._ids)}",
            "venue": venue, "symbol": symbol, "side": side, "quantity": str(quantity),
            "order_type": order_type, "time_in_force": time_in_force, "reduce_only": reduce_only,
            "limit_price": None if limit_price is None else str(limit_price),
            "stop_price": None if stop_price is None else str(stop_price),
        }
        answer: ApiOrder = self._call("submit", ApiOrder, order=order)
        return answer

    def cancel(self, client_order_id: str) -> ApiOrder:
        """Ask to cancel one of this user's orders; answers it as it stands."""
        answer: ApiOrder = self._call("cancel", ApiOrder, client_order_id=client_order_id)
        return answer

    def orders(self, *, working_only: bool = False) -> list[ApiOrder]:
        """This user's orders, oldest first."""
        orders: list[ApiOrder] = self._call("orders", list[ApiOrder], working_only=working_only)
        return orders

    def order(self, client_order_id: str) -> ApiOrder | None:
        """One of this user's orders, or None."""
        return next((o for o in self.orders() if o.client_order_id == client_order_id), None)

    def positions(self) -> list[ApiPosition]:
        """Every open position in the journal."""
        positions: list[ApiPosition] = self._call("positions", list[ApiPosition])
        return positions

    def fills(self) -> FillStream:
        """A stream of this user's fills from now on."""
        return FillStream(self.state_dir, self.source)

    # ---- the exchange -----------------------------------------------------------------

    def _call(self, verb: str, kind: type[_T] | Any, **fields: Any) -> Any:
        body = json.dumps({"token": self._token, "verb": verb, "operator": self.user, **fields}).encode()
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, int(self.timeout_s * 1000))
        sock.setsockopt(zmq.SNDTIMEO, int(self.timeout_s * 1000))
        try:
            sock.connect(control_endpoint(self.state_dir))
            sock.send(body)
            raw = sock.recv()
        except zmq.Again as exc:
            raise ControlError(f"the service did not answer within {self.timeout_s}s") from exc
        finally:
            sock.close(linger=0)
        try:
            reply = json.loads(raw)
        except ValueError as exc:
            raise ControlError(f"unreadable answer from the service: {exc}") from exc
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise ControlError(str(reply.get("error", "refused") if isinstance(reply, dict) else "refused"))
        result = reply.get("result")
        if not isinstance(result, str):
            raise ControlError(f"unexpected answer to {verb}: {result!r}")
        try:
            return msgspec.json.decode(result, type=kind)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ControlError(f"unreadable answer to {verb}: {exc}") from exc

    def close(self) -> None:
        """Nothing is held between calls; for symmetry with ``with``."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
