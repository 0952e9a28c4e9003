"""A FIX 4.4 order-entry client for tests: a real quickfix initiator that logs on to the
gateway with a username and password, sends orders and collects what comes back."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import quickfix as fix

from actors.order_entry._quickfix import spec_dir
from messages.fix_spec import FIX44, data_dictionary_settings, utc_timestamp

SOH = "\x01"


def fields_of(message: fix.Message) -> dict[int, str]:
    """Every field of a message, header included (a repeated tag keeps its last value)."""
    out: dict[int, str] = {}
    for part in message.toString().split(SOH):
        if "=" in part:
            tag, _, value = part.partition("=")
            if tag.isdigit():
                out[int(tag)] = value
    return out


class _App(fix.Application):  # type: ignore[misc]
    def __init__(self, client: FixClient) -> None:
        super().__init__()
        self.client = client

    def onCreate(self, session_id: fix.SessionID) -> None:
        pass

    def onLogon(self, session_id: fix.SessionID) -> None:
        self.client.logons += 1
        self.client.logged_on.set()
        self.client.logged_out.clear()

    def onLogout(self, session_id: fix.SessionID) -> None:
        self.client.logged_on.clear()
        self.client.logged_out.set()

    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        try:
            if message.getHeader().getField(35) == "A":
                message.setField(553, self.client.username)
                message.setField(554, self.client.password)
        except Exception:  # never into quickfix
            self.client.errors += 1

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        try:
            fields = fields_of(message)
            if fields.get(35) == "5":
                self.client.logout_texts.append(fields.get(58, ""))
            if fields.get(35) == "3":
                self.client.received(fields)
        except Exception:
            self.client.errors += 1

    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        pass

    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        try:
            self.client.received(fields_of(message))
        except Exception:
            self.client.errors += 1


class FixClient:
    """One initiator session ``sender`` -> ``TRADEGUARD`` on 127.0.0.1:``port``."""

    def __init__(self, port: int, directory: Path, sender: str = "STRAT1", password: str = "secret",
                 *, username: str | None = None, target: str = "TRADEGUARD", heartbeat_s: int = 1) -> None:
        self.sender = sender
        self.username = username or sender
        self.password = password
        self.logged_on = threading.Event()
        self.logged_out = threading.Event()
        self.logons = 0
        self.errors = 0
        self.logout_texts: list[str] = []
        self.messages: list[dict[int, str]] = []
        self._lock = threading.Lock()
        self._inbox: queue.Queue[dict[int, str]] = queue.Queue()
        self._ids = itertools.count(1)
        self._started = False
        self.session_id = fix.SessionID(FIX44, sender, target)
        directory.mkdir(parents=True, exist_ok=True)
        values = {
            "ConnectionType": "initiator", "SocketConnectHost": "127.0.0.1",
            "SocketConnectPort": str(port), "HeartBtInt": str(heartbeat_s), "ReconnectInterval": "1",
            "FileStorePath": str(directory / "store"), "FileLogPath": str(directory / "log"),
            "StartTime": "00:00:00", "EndTime": "00:00:00",
            "NonStopSession": "Y", "ResetOnLogon": "Y", "LogonTimeout": "5",
            **data_dictionary_settings(FIX44, spec_dir(), directory),
        }
        defaults = fix.Dictionary()
        for key, value in values.items():
            defaults.setString(key, value)
        settings = fix.SessionSettings()
        settings.set(defaults)
        settings.set(self.session_id, fix.Dictionary())
        self._app = _App(self)
        self._initiator: fix.SocketInitiator | None = fix.SocketInitiator(
            self._app, fix.MemoryStoreFactory(), settings, fix.FileLogFactory(settings))

    # ---- lifecycle ------------------------------------------------------------------

    def start(self) -> FixClient:
        assert self._initiator is not None
        self._initiator.start()
        self._started = True
        return self

    def logon(self, timeout_s: float = 15.0) -> None:
        self.start()
        assert self.logged_on.wait(timeout_s), f"{self.sender} did not log on"

    def stop(self) -> None:
        """Stop once (a second stop of a quickfix initiator crashes the process)."""
        initiator, self._initiator = self._initiator, None
        if initiator is not None and self._started:
            self._started = False
            initiator.stop(True)
        del initiator  # the last reference: quickfix frees the session (its id can be used again)

    def drop_connection(self) -> None:
        """Lose the TCP connection without a Logout."""
        session = fix.Session.lookupSession(self.session_id)
        assert session is not None
        session.disconnect()

    # ---- sending --------------------------------------------------------------------

    def next_id(self, prefix: str = "c") -> str:
        return f"{prefix}{time.time_ns():x}-{next(self._ids)}"

    def send(self, msg_type: str, fields: dict[int, str]) -> None:
        message = fix.Message()
        message.getHeader().setField(35, msg_type)
        for tag, value in fields.items():
            message.setField(tag, value)
        assert fix.Session.sendToTarget(message, self.session_id), "not sent"

    def new_order(self, symbol: str, side: str, quantity: Decimal | int | str, *,
                  price: Decimal | str | None = None, cl_ord_id: str | None = None,
                  venue: str | None = None) -> str:
        cl_ord_id = cl_ord_id or self.next_id()
        fields = {11: cl_ord_id, 55: symbol, 54: "1" if side == "buy" else "2", 38: str(quantity),
                  40: "2" if price is not None else "1", 60: utc_timestamp(), 59: "0"}
        if price is not None:
            fields[44] = str(price)
        if venue is not None:
            fields[100] = venue
        self.send("D", fields)
        return cl_ord_id

    def cancel(self, orig: str, symbol: str = "AAPL", side: str = "buy") -> str:
        cancel_id = self.next_id("x")
        self.send("F", {11: cancel_id, 41: orig, 55: symbol, 54: "1" if side == "buy" else "2",
                        60: utc_timestamp()})
        return cancel_id

    def replace(self, orig: str, symbol: str, side: str, quantity: Decimal | int | str, *,
                price: Decimal | str | None = None, cl_ord_id: str | None = None,
                venue: str | None = None) -> str:
        """An OrderCancelReplaceRequest (G) of ``orig``: the new quantity and price."""
        cl_ord_id = cl_ord_id or self.next_id("r")
        fields = {11: cl_ord_id, 41: orig, 55: symbol, 54: "1" if side == "buy" else "2",
                  38: str(quantity), 40: "2" if price is not None else "1", 60: utc_timestamp(), 59: "0"}
        if price is not None:
            fields[44] = str(price)
        if venue is not None:
            fields[100] = venue
        self.send("G", fields)
        return cl_ord_id

    def cancel_reject(self, cl_ord_id: str, timeout_s: float = 10.0) -> dict[int, str]:
        """The OrderCancelReject (9) answering the request ``cl_ord_id``."""
        return self.wait(lambda m: m.get(35) == "9" and m.get(11) == cl_ord_id, timeout_s,
                         f"OrderCancelReject for {cl_ord_id}")

    # ---- receiving ------------------------------------------------------------------

    def received(self, fields: dict[int, str]) -> None:
        with self._lock:
            self.messages.append(fields)

    def wait(self, predicate: Callable[[dict[int, str]], bool], timeout_s: float = 10.0,
             what: str = "") -> dict[int, str]:
        """The first message received (ever) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                for message in self.messages:
                    if predicate(message):
                        return message
            if time.monotonic() >= deadline:
                with self._lock:
                    seen = [{k: m[k] for k in (35, 11, 150, 39, 58) if k in m} for m in self.messages]
                raise AssertionError(f"timed out waiting for {what}; received {seen}")
            time.sleep(0.01)

    def reports(self, cl_ord_id: str) -> list[dict[int, str]]:
        with self._lock:
            return [m for m in self.messages if m.get(35) == "8" and m.get(11) == cl_ord_id]

    def report(self, cl_ord_id: str, exec_type: str, timeout_s: float = 10.0) -> dict[int, str]:
        return self.wait(lambda m: m.get(35) == "8" and m.get(11) == cl_ord_id and m.get(150) == exec_type,
                         timeout_s, f"ExecType {exec_type} for {cl_ord_id}")
