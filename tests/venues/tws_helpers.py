"""Clients and waits shared by the fake TWS tests: the official ``ibapi`` client (from PyPI)
running its reader and message loop in threads, and a raw IB API socket."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ibapi.client import EClient
from ibapi.wrapper import EWrapper

from venues.engine import EngineConfig, VenueEngine

HOST = "127.0.0.1"
ACCOUNT = "DU000001"

_RECORDED = (
    "nextValidId", "managedAccounts", "error", "contractDetails", "contractDetailsEnd",
    "tickPrice", "tickSize", "openOrder", "openOrderEnd", "orderStatus", "execDetails",
    "execDetailsEnd", "commissionReport", "position", "positionEnd", "accountSummary",
    "accountSummaryEnd", "updateAccountValue", "accountDownloadEnd", "pnl",
    "symbolSamples", "historicalData", "historicalDataEnd", "familyCodes", "currentTime",
    "completedOrder", "completedOrdersEnd",
)


def make_engine(**overrides: Any) -> VenueEngine:
    """A calm market (no random moves) showing 100 at each side, first quotes published."""
    settings: dict[str, Any] = {
        "symbols": {"AAPL": Decimal("190"), "MSFT": Decimal("410"), "EURUSD": Decimal("1.1")},
        "volatility_bps": Decimal(0),
        "depth": Decimal(100),
        **overrides,
    }
    engine = VenueEngine("tws", EngineConfig(**settings))
    engine.step()
    return engine


class IbapiClient(EWrapper, EClient):  # type: ignore[misc]
    """The official IB API client, recording every callback as (name, args)."""

    def __init__(self) -> None:
        EWrapper.__init__(self)
        EClient.__init__(self, self)
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self._changed = threading.Condition()
        self._loop: threading.Thread | None = None

    def start(self, port: int, client_id: int) -> None:
        """Connect and run the message loop in a thread; wait for nextValidId."""
        self.connect(HOST, port, client_id)
        self._loop = threading.Thread(target=self.run, name=f"ibapi-{client_id}", daemon=True)
        self._loop.start()
        self.wait_for("nextValidId")

    def stop(self) -> None:
        self.disconnect()
        if self._loop is not None:
            self._loop.join(timeout=5)

    def record(self, name: str, args: tuple[Any, ...]) -> None:
        with self._changed:
            self.events.append((name, args))
            self._changed.notify_all()

    def of(self, name: str) -> list[tuple[Any, ...]]:
        """Arguments of every ``name`` callback so far."""
        with self._changed:
            return [args for event, args in self.events if event == name]

    def wait_for(self, name: str, match: Callable[[tuple[Any, ...]], bool] = lambda _: True,
                 timeout: float = 10.0) -> tuple[Any, ...]:
        """The first ``name`` callback whose arguments match; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event, args in self.events:
                    if event == name and match(args):
                        return args
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {name} callback within {timeout} s; got "
                                         f"{[e for e, _ in self.events][-20:]}")
                self._changed.wait(left)


def _recorder(name: str) -> Callable[..., None]:
    def callback(self: IbapiClient, *args: Any) -> None:
        self.record(name, args)

    return callback


for _name in _RECORDED:
    setattr(IbapiClient, _name, _recorder(_name))


def prefixed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def frame(*fields: object) -> bytes:
    return prefixed("".join(f"{field}\0" for field in fields).encode())


class RawClient:
    """A hand-rolled IB API socket, to see the bytes and the writes as they arrive."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def hello(self, offer: bytes) -> list[str]:
        """Send the handshake with ``offer`` (``v<min>..<max>``); the venue's answer."""
        self.sock.sendall(b"API\0" + prefixed(offer))
        return self.read()

    def start_api(self, client_id: int) -> None:
        self.sock.sendall(frame(71, 2, client_id, ""))

    def read(self) -> list[str]:
        """The next message's fields."""
        while True:
            message = self.take()
            if message is not None:
                return message
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the venue")
            self.buffer += chunk

    def take(self) -> list[str] | None:
        """A whole message already received, if any."""
        if len(self.buffer) >= 4:
            (size,) = struct.unpack(">I", self.buffer[:4])
            if len(self.buffer) >= 4 + size:
                payload, self.buffer = self.buffer[4:4 + size], self.buffer[4 + size:]
                return payload.decode().split("\0")[:-1]
        return None

    def read_until(self, msg_id: str, limit: int = 200) -> list[str]:
        for _ in range(limit):
            fields = self.read()
            if fields[0] == msg_id:
                return fields
        raise AssertionError(f"no message {msg_id} in {limit} messages")

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True once the venue has closed the socket."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True
