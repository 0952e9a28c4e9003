"""The FIX acceptor against a bare quickfix initiator over loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import quickfix as fix

from messages import OrderType, Side, SubmitOrder
from tests.helpers import wait_for
from venues.engine import EngineConfig, VenueEngine
from venues.fix_venue import (
    EXTENDED_42_TYPES,
    FIX42,
    FIX44,
    FixBehaviour,
    FixVenue,
    Tag,
    dictionary_settings,
    free_port,
    utc_timestamp,
)

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "TRADEGUARD"


class Received:
    """One application message as the client saw it: type, fields and groups."""

    def __init__(self, message: fix.Message, wire_type: str) -> None:
        self.type = wire_type
        self.raw = message.toString().replace("\x01", "|")
        self.fields: dict[int, str] = {}
        self.header: dict[int, str] = {}
        for part in self.raw.split("|"):
            if "=" in part:
                tag, _, value = part.partition("=")
                self.fields.setdefault(int(tag), value)
        for tag in (Tag.POSS_DUP_FLAG, Tag.POSS_RESEND):
            if message.getHeader().isSetField(tag):
                self.header[tag] = message.getHeader().getField(tag)

    def __getitem__(self, tag: int) -> str:
        return self.fields[tag]

    def get(self, tag: int) -> str | None:
        """A field's value or ``None``."""
        return self.fields.get(tag)

    def __repr__(self) -> str:
        return f"Received({self.raw})"


class Client(fix.Application):  # type: ignore[misc]
    """A bare quickfix initiator that records every application message it receives."""

    def __init__(self, port: int, state_dir: Path, begin_string: str = FIX44) -> None:
        super().__init__()
        self.begin_string = begin_string
        self.session_id = fix.SessionID(begin_string, ACCOUNT, "VENUE")
        self.messages: list[Received] = []
        self.rejects: list[Received] = []
        """Session-level Rejects (35=3) the venue sent."""
        self.logged_on = threading.Event()
        self.errors: list[str] = []
        values = {
            "ConnectionType": "initiator",
            "SocketConnectHost": "127.0.0.1",
            "SocketConnectPort": str(port),
            "HeartBtInt": "5",
            "ReconnectInterval": "1",
            "FileStorePath": str(state_dir / "store"),
            "FileLogPath": str(state_dir / "log"),
            "StartTime": "00:00:00",
            "EndTime": "00:00:00",
            **dictionary_settings(begin_string, state_dir),
        }
        defaults = fix.Dictionary()
        for key, value in values.items():
            defaults.setString(key, value)
        settings = fix.SessionSettings()
        settings.set(defaults)
        settings.set(self.session_id, fix.Dictionary())
        self.initiator: fix.SocketInitiator | None = fix.SocketInitiator(
            self, fix.FileStoreFactory(settings), settings, fix.FileLogFactory(settings)
        )

    # quickfix callbacks: never raise
    def onCreate(self, session_id: fix.SessionID) -> None:
        pass

    def onLogon(self, session_id: fix.SessionID) -> None:
        self.logged_on.set()

    def onLogout(self, session_id: fix.SessionID) -> None:
        self.logged_on.clear()

    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        try:
            if message.getHeader().getField(Tag.MSG_TYPE) == "3":
                self.errors.append(message.toString().replace("\x01", "|"))
        except Exception as exc:
            self.errors.append(repr(exc))

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        try:
            if message.getHeader().getField(Tag.MSG_TYPE) == "3":
                self.rejects.append(Received(message, "3"))
        except Exception as exc:
            self.errors.append(repr(exc))

    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        pass

    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        try:
            wire_type = message.getHeader().getField(Tag.MSG_TYPE)
            self.messages.append(Received(message, wire_type))
        except Exception as exc:
            self.errors.append(repr(exc))

    # test API
    def start(self, timeout_s: float = 5.0) -> None:
        assert self.initiator is not None
        self.initiator.start()
        assert self.logged_on.wait(timeout_s), "client did not log on"

    def stop(self) -> None:
        if self.initiator is not None:
            self.initiator.stop(True)
            self.initiator = None

    def app_type(self, msg_type: str) -> str:
        if self.begin_string == FIX42:
            return EXTENDED_42_TYPES.get(msg_type, msg_type)
        return msg_type

    def send(self, msg_type: str, fields: list[tuple[int, str]],
             groups: tuple[tuple[int, int, list[list[tuple[int, str]]]], ...] = ()) -> None:
        message = fix.Message()
        message.getHeader().setField(Tag.MSG_TYPE, self.app_type(msg_type))
        for tag, value in fields:
            message.setField(tag, value)
        for count_tag, delimiter, instances in groups:
            for instance in instances:
                group = fix.Group(count_tag, delimiter)
                for tag, value in instance:
                    group.setField(tag, value)
                message.addGroup(group)
        assert fix.Session.sendToTarget(message, self.session_id)

    def wait(self, predicate: Callable[[Received], bool], count: int = 1,
             timeout_s: float = 5.0) -> list[Received]:
        def found() -> list[Received]:
            hits = [m for m in list(self.messages) if predicate(m)]
            return hits if len(hits) >= count else []

        return wait_for(found, timeout_s, what=f"{count} matching message(s)")  # type: ignore[return-value]

    def order(self, coid: str, symbol: str, side: str, qty: str, ord_type: str = "1",
              price: str | None = None, tif: str = "0") -> None:
        fields = [(Tag.CL_ORD_ID, coid), (21, "1"), (Tag.SYMBOL, symbol), (Tag.SIDE, side),
                  (Tag.TRANSACT_TIME, utc_timestamp()), (Tag.ORDER_QTY, qty),
                  (Tag.ORD_TYPE, ord_type), (Tag.TIME_IN_FORCE, tif)]
        if price is not None:
            fields.append((Tag.PRICE, price))
        self.send("D", fields)

    def reports(self, coid: str) -> list[Received]:
        return [m for m in self.messages if m.type == "8" and m.get(Tag.CL_ORD_ID) == coid]


def by(msg_type: str, **tags: str) -> Callable[[Received], bool]:
    """A predicate: message type and field values (tag names from ``Tag``)."""
    wanted = {Tag[name.upper()]: value for name, value in tags.items()}
    return lambda m: m.type == msg_type and all(m.get(t) == v for t, v in wanted.items())


@pytest.fixture
def engine() -> VenueEngine:
    return VenueEngine("fixsim", EngineConfig(depth=Decimal(100), seed=3))


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[object]]:
    """Everything a test starts, stopped at the end even when the test fails."""
    things: list[object] = []
    yield things
    for thing in reversed(things):
        thing.stop()  # type: ignore[attr-defined]


def start_pair(engine: VenueEngine, tmp_path: Path, started: list[object],
               begin_string: str = FIX44, port: int | None = None,
               behaviour: FixBehaviour | None = None) -> tuple[FixVenue, Client]:
    port = port or free_port()
    venue = FixVenue(engine, port, tmp_path / "venue", begin_string=begin_string,
                     behaviour=behaviour)
    venue.start()
    started.append(venue)
    client = Client(port, tmp_path / "client", begin_string)
    started.append(client)
    client.start()
    assert venue.wait_logged_on(5.0)
    return venue, client


def test_fix44_market_data_orders_cancels_positions_and_status(
    engine: VenueEngine, tmp_path: Path, started: list[object]
) -> None:
    # trade replay on AF is asked for: it is not what a standard venue does
    venue, client = start_pair(engine, tmp_path, started,
                               behaviour=FixBehaviour(replay_trades=True))
    engine.step()

    # market data: snapshot, then one incremental refresh per step
    client.send("V", [(Tag.MD_REQ_ID, "md1"), (Tag.SUBSCRIPTION_REQUEST_TYPE, "1"),
                      (Tag.MARKET_DEPTH, "1")],
                groups=((Tag.NO_MD_ENTRY_TYPES, Tag.MD_ENTRY_TYPE, [[(269, "0")], [(269, "1")]]),
                        (Tag.NO_RELATED_SYM, Tag.SYMBOL, [[(Tag.SYMBOL, "AAPL")]])))
    [snapshot] = client.wait(by("W", symbol="AAPL", md_req_id="md1"))
    assert snapshot[Tag.NO_MD_ENTRIES] == "2"
    quote = engine.step()[0]
    [update] = client.wait(lambda m: m.type == "X" and str(quote.ask) in m.raw)
    assert f"55=AAPL|270={quote.bid}" in update.raw and "MSFT" not in update.raw

    # market buy within the displayed depth: New then one full Trade
    client.order("B1", "AAPL", "1", "10")
    new, trade = client.wait(lambda m: m.type == "8" and m.get(Tag.CL_ORD_ID) == "B1", count=2)
    assert (new[Tag.EXEC_TYPE], new[Tag.ORD_STATUS]) == ("0", "0")
    assert (trade[Tag.EXEC_TYPE], trade[Tag.ORD_STATUS]) == ("F", "2")
    assert Decimal(trade[Tag.LAST_QTY]) == 10 and Decimal(trade[Tag.CUM_QTY]) == 10
    assert Decimal(trade[Tag.LAST_PX]) == quote.ask == Decimal(trade[Tag.AVG_PX])
    assert Decimal(trade[Tag.LEAVES_QTY]) == 0 and trade[Tag.EXEC_ID] != new[Tag.EXEC_ID]

    # larger than the depth: a partial fill now, the rest at the next step
    client.order("B2", "AAPL", "1", "150")
    client.wait(by("8", cl_ord_id="B2", exec_type="F"))
    engine.step()
    _, part, rest = client.wait(lambda m: m.get(Tag.CL_ORD_ID) == "B2", count=3)
    assert (part[Tag.ORD_STATUS], part[Tag.LEAVES_QTY], part[Tag.CUM_QTY]) == ("1", "60", "90")
    assert (rest[Tag.ORD_STATUS], rest[Tag.LEAVES_QTY], rest[Tag.CUM_QTY]) == ("2", "0", "150")

    # venue reject: unknown symbol, with the venue's code in Text
    client.order("X1", "NOPE", "1", "1")
    [rejected] = client.wait(by("8", cl_ord_id="X1", exec_type="8"))
    assert rejected[Tag.ORD_REJ_REASON] == "1" and "SIM-101" in rejected[Tag.TEXT]

    # cancel a resting limit; cancel of an unknown order is refused with 9
    client.order("L1", "AAPL", "1", "5", ord_type="2", price="1.00")
    client.wait(by("8", cl_ord_id="L1", exec_type="0"))
    client.send("F", [(Tag.ORIG_CL_ORD_ID, "L1"), (Tag.CL_ORD_ID, "C1"), (Tag.SYMBOL, "AAPL"),
                      (Tag.SIDE, "1"), (Tag.TRANSACT_TIME, utc_timestamp()),
                      (Tag.ORDER_QTY, "5")])
    [cancelled] = client.wait(by("8", cl_ord_id="C1", exec_type="4"))
    assert cancelled[Tag.ORIG_CL_ORD_ID] == "L1" and cancelled[Tag.ORD_STATUS] == "4"
    client.send("F", [(Tag.ORIG_CL_ORD_ID, "L1"), (Tag.CL_ORD_ID, "C2"), (Tag.SYMBOL, "AAPL"),
                      (Tag.SIDE, "1"), (Tag.TRANSACT_TIME, utc_timestamp()),
                      (Tag.ORDER_QTY, "5")])
    client.wait(by("9", cl_ord_id="C2", orig_cl_ord_id="L1"))

    # mass cancel: every resting order cancelled, then the report
    for coid in ("L2", "L3"):
        client.order(coid, "MSFT", "2", "3", ord_type="2", price="99999")
    client.wait(lambda m: m.type == "8" and m.get(Tag.EXEC_TYPE) == "0"
                and m.get(Tag.CL_ORD_ID) in ("L2", "L3"), count=2)
    client.send("q", [(Tag.CL_ORD_ID, "MC1"), (Tag.MASS_CANCEL_REQUEST_TYPE, "7"),
                      (Tag.TRANSACT_TIME, utc_timestamp())])
    [report] = client.wait(by("r", cl_ord_id="MC1"))
    assert report[Tag.MASS_CANCEL_RESPONSE] == "7" and report[Tag.TOTAL_AFFECTED_ORDERS] == "2"
    assert len(client.wait(lambda m: m.get(Tag.EXEC_TYPE) == "4", count=3)) == 3
    assert engine.open_orders(ACCOUNT) == []

    # positions as the venue keeps them
    client.order("S1", "MSFT", "2", "4")
    client.wait(by("8", cl_ord_id="S1", exec_type="F"))
    client.send("AN", [(Tag.POS_REQ_ID, "P1"), (Tag.POS_REQ_TYPE, "0"), (Tag.ACCOUNT, ACCOUNT),
                       (Tag.ACCOUNT_TYPE, "1"), (Tag.CLEARING_BUSINESS_DATE, "20260101"),
                       (Tag.TRANSACT_TIME, utc_timestamp())])
    [ack] = client.wait(by("AO", pos_req_id="P1"))
    assert (ack[Tag.POS_REQ_RESULT], ack[Tag.TOTAL_NUM_POS_REPORTS]) == ("0", "2")
    reports = client.wait(by("AP", pos_req_id="P1"), count=2)
    reported = {r[Tag.SYMBOL]: Decimal(r[Tag.LONG_QTY]) - Decimal(r[Tag.SHORT_QTY])
                for r in reports}
    assert reported == {p.symbol: p.quantity for p in engine.positions(ACCOUNT)}
    assert reported == {"AAPL": Decimal(160), "MSFT": Decimal(-4)}

    # mass status: the working order's status, then every execution replayed
    client.order("L4", "AAPL", "1", "7", ord_type="2", price="1.00")
    client.wait(by("8", cl_ord_id="L4", exec_type="0"))
    client.send("AF", [(Tag.MASS_STATUS_REQ_ID, "S1"), (Tag.MASS_STATUS_REQ_TYPE, "7")])
    statuses = client.wait(lambda m: m.get(Tag.MASS_STATUS_REQ_ID) == "S1", count=5)
    assert [s[Tag.EXEC_TYPE] for s in statuses] == ["I", "F", "F", "F", "F"]
    assert statuses[0][Tag.CL_ORD_ID] == "L4" and statuses[-1][Tag.LAST_RPT_REQUESTED] == "Y"
    replayed = {s[Tag.EXEC_ID] for s in statuses[1:]}
    assert replayed == {f.fill_id for f in engine.executions(ACCOUNT)}
    assert all(s.header.get(Tag.POSS_RESEND) == "Y" for s in statuses[1:])

    # an unsupported message type is answered with a business reject
    client.send("G", [(Tag.ORIG_CL_ORD_ID, "L4"), (Tag.CL_ORD_ID, "R1"), (Tag.SYMBOL, "AAPL"),
                      (Tag.SIDE, "1"), (Tag.TRANSACT_TIME, utc_timestamp()), (Tag.ORD_TYPE, "2"),
                      (Tag.ORDER_QTY, "7"), (Tag.PRICE, "1.01")])
    client.wait(lambda m: m.type == "j" and m.get(Tag.REF_MSG_TYPE) == "G")
    assert client.errors == [] and venue.callback_errors == 0


def test_fix42_logs_on_trades_and_reads_positions(
    engine: VenueEngine, tmp_path: Path, started: list[object]
) -> None:
    venue, client = start_pair(engine, tmp_path, started, begin_string=FIX42,
                               behaviour=FixBehaviour(replay_trades=True))
    engine.step()
    client.order("B1", "EURUSD", "1", "150")
    client.wait(by("8", cl_ord_id="B1", exec_type="1"))
    engine.step()
    new, part, full = client.wait(lambda m: m.get(Tag.CL_ORD_ID) == "B1", count=3)
    assert [m[Tag.EXEC_TRANS_TYPE] for m in (new, part, full)] == ["0", "0", "0"]
    assert [m[Tag.EXEC_TYPE] for m in (new, part, full)] == ["0", "1", "2"]
    assert (full[Tag.LAST_QTY], full[Tag.CUM_QTY], full[Tag.LEAVES_QTY]) == ("50", "150", "0")

    client.order("L1", "EURUSD", "2", "5", ord_type="2", price="99")
    client.wait(by("8", cl_ord_id="L1", exec_type="0"))
    client.send("q", [(Tag.CL_ORD_ID, "MC1"), (Tag.MASS_CANCEL_REQUEST_TYPE, "7"),
                      (Tag.TRANSACT_TIME, utc_timestamp())])
    [report] = client.wait(by("Ur", cl_ord_id="MC1"))
    assert report[Tag.TOTAL_AFFECTED_ORDERS] == "1"
    client.wait(by("8", cl_ord_id="L1", exec_type="4"))

    client.send("AN", [(Tag.POS_REQ_ID, "P1"), (Tag.POS_REQ_TYPE, "0"), (Tag.ACCOUNT, ACCOUNT),
                       (Tag.ACCOUNT_TYPE, "1"), (Tag.CLEARING_BUSINESS_DATE, "20260101"),
                       (Tag.TRANSACT_TIME, utc_timestamp())])
    client.wait(by("UAO", pos_req_id="P1", total_num_pos_reports="1"))
    [position] = client.wait(by("UAP", pos_req_id="P1"))
    assert (position[Tag.SYMBOL], position[Tag.LONG_QTY]) == ("EURUSD", "150")

    client.send("AF", [(Tag.MASS_STATUS_REQ_ID, "S1"), (Tag.MASS_STATUS_REQ_TYPE, "7")])
    [replay, last] = client.wait(lambda m: m.get(Tag.MASS_STATUS_REQ_ID) == "S1", count=2)
    assert replay[Tag.EXEC_TYPE] == "1" and last[Tag.LAST_RPT_REQUESTED] == "Y"
    assert client.errors == [] and venue.callback_errors == 0


def test_restart_keeps_sequence_numbers_and_resends_missed_executions(
    engine: VenueEngine, tmp_path: Path, started: list[object]
) -> None:
    port = free_port()
    venue, client = start_pair(engine, tmp_path, started, port=port)
    engine.step()
    client.order("L1", "AAPL", "1", "5", ord_type="2", price="150")
    client.wait(by("8", cl_ord_id="L1", exec_type="0"))

    # the client drops off, the venue restarts, and the order fills while nobody is there
    client.stop()
    wait_for(lambda: not venue.logged_on(), what="venue sees the client go")
    venue.stop()
    venue = FixVenue(engine, port, tmp_path / "venue")
    venue.start()
    started.append(venue)
    engine.set_mid("AAPL", Decimal("140"))
    engine.step()
    assert engine.executions(ACCOUNT)

    # a new client instance gets the missed fill by the session's resend
    client = Client(port, tmp_path / "client")
    started.append(client)
    client.start()
    [fill] = client.wait(by("8", cl_ord_id="L1", exec_type="F"))
    assert fill.header.get(Tag.POSS_DUP_FLAG) == "Y"
    assert fill[Tag.EXEC_ID] == engine.executions(ACCOUNT)[0].fill_id
    assert (fill[Tag.CUM_QTY], fill[Tag.LEAVES_QTY], fill[Tag.ORDER_QTY]) == ("5", "0", "5")
    assert client.errors == []


def test_main_serves_fix_and_saves_state_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    engine = VenueEngine("check")
    engine.submit(ACCOUNT, SubmitOrder(client_order_id="x", venue="check", symbol="AAPL",
                                       side=Side.BUY, quantity=Decimal(1),
                                       order_type=OrderType.LIMIT, limit_price=Decimal(1)))
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    engine.save(state_dir / "fix-venue.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "venues.fix_venue", "--port", str(port), "--state-dir",
         str(state_dir), "--interval", "0.02", "--name", "check"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    client = Client(port, tmp_path / "client")
    try:
        assert process.stdout is not None
        assert "fix venue" in process.stdout.readline()
        client.start()
        client.send("AF", [(Tag.MASS_STATUS_REQ_ID, "S1"), (Tag.MASS_STATUS_REQ_TYPE, "7")])
        client.wait(by("8", cl_ord_id="x", exec_type="I"))
        client.stop()
        before = time.time()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        client.stop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    assert (state_dir / "fix-venue.json").stat().st_mtime >= before - 1
    restored = VenueEngine("check")
    restored.load(state_dir / "fix-venue.json")
    assert [w.order.client_order_id for w in restored.open_orders(ACCOUNT)] == ["x"]
    assert (state_dir / "fix" / "store").is_dir()


def test_a_peer_that_is_not_127_0_0_1_is_refused(
    engine: VenueEngine, tmp_path: Path, started: list[object]
) -> None:
    port = free_port()
    venue = FixVenue(engine, port, tmp_path / "venue")
    venue.start()
    started.append(venue)
    logon = fix.Message()
    header = logon.getHeader()
    for tag, value in ((8, FIX44), (35, "A"), (49, ACCOUNT), (56, "VENUE"), (34, "1"),
                       (52, utc_timestamp())):
        header.setField(tag, value)
    logon.setField(98, "0")
    logon.setField(108, "30")
    with socket.socket() as peer:
        peer.bind(("127.0.0.2", 0))  # loopback, but not the one address the venue admits
        peer.settimeout(5.0)
        peer.connect(("127.0.0.1", port))
        peer.sendall(logon.toString().encode())
        answer = b""
        try:
            while chunk := peer.recv(4096):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    assert b"35=A" not in answer  # no Logon back: the connection is dropped
    assert not venue.logged_on()


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp{,6})."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.rpartition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    if len(address) == 8:
                        found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                    else:
                        found.add(address)
    return found


def test_the_acceptor_listens_on_127_0_0_1_only(
    engine: VenueEngine, tmp_path: Path, started: list[object]
) -> None:
    venue, client = start_pair(engine, tmp_path, started)
    assert _listening_addresses(venue.port) == {"127.0.0.1"}
    spare = venue._accept_port  # where quickfix itself was told to listen
    if spare != venue.port:
        wait_for(lambda: not _listening_addresses(spare), what="the spare port released")
    client.order("B1", "AAPL", "1", "1")  # the session works through the loopback socket
    client.wait(by("8", cl_ord_id="B1", exec_type="0"))
    venue.stop()
    wait_for(lambda: not _listening_addresses(venue.port), what="nothing listening after stop")
