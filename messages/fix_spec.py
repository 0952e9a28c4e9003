"""The FIX subset tradeguard speaks, shared by the FIX connector and the simulated FIX venue.

Everything here is plain protocol data and needs no FIX engine: the begin strings, the
tags both sides read or write, the FIX codes of the order enumerations, how numbers and
timestamps are written, and the FIX 4.2 extension.

FIX 4.2 has no RequestForPositions (AN/AO/AP), mass cancel (q/r) or mass status (AF)
messages. tradeguard carries the 4.4 bodies on 4.2 under user-defined message types
(``U`` + the 4.4 type, ``EXTENDED_42_TYPES``) described by a FIX 4.2 data dictionary
that ``extend_fix42_dictionary`` writes from the stock FIX42.xml and FIX44.xml. Where
those stock dictionaries live is the caller's business (it depends on the installed
quickfix); they are passed in as a directory. docs/fix.md describes the subset.
"""

from __future__ import annotations

import enum
import time
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path

from messages.orders import OrderType, Side, TimeInForce

FIX42 = "FIX.4.2"
FIX44 = "FIX.4.4"
FIXT11 = "FIXT.1.1"
"""FIX 5.0 SP2 over FIXT.1.1; its application messages are the 4.4 ones used here."""

BEGIN_STRINGS = frozenset({FIX42, FIX44, FIXT11})
"""Every begin string tradeguard speaks."""


class Tag(enum.IntEnum):
    """The FIX tags the connector or the venue reads or writes."""

    ACCOUNT = 1
    AVG_PX = 6
    CL_ORD_ID = 11
    CUM_QTY = 14
    EXEC_ID = 17
    EXEC_INST = 18
    EXEC_TRANS_TYPE = 20
    HANDL_INST = 21
    LAST_PX = 31
    LAST_QTY = 32
    MSG_SEQ_NUM = 34
    MSG_TYPE = 35
    ORDER_ID = 37
    ORDER_QTY = 38
    ORD_STATUS = 39
    ORD_TYPE = 40
    ORIG_CL_ORD_ID = 41
    POSS_DUP_FLAG = 43
    PRICE = 44
    REF_SEQ_NUM = 45
    SENDING_TIME = 52
    SIDE = 54
    SYMBOL = 55
    TEXT = 58
    TIME_IN_FORCE = 59
    TRANSACT_TIME = 60
    POSS_RESEND = 97
    TEST_REQ_ID = 112
    EXPIRE_TIME = 126
    STOP_PX = 99
    CXL_REJ_REASON = 102
    ORD_REJ_REASON = 103
    NO_RELATED_SYM = 146
    EXEC_TYPE = 150
    LEAVES_QTY = 151
    MD_REQ_ID = 262
    SUBSCRIPTION_REQUEST_TYPE = 263
    MARKET_DEPTH = 264
    MD_UPDATE_TYPE = 265
    NO_MD_ENTRY_TYPES = 267
    NO_MD_ENTRIES = 268
    MD_ENTRY_TYPE = 269
    MD_ENTRY_PX = 270
    MD_ENTRY_SIZE = 271
    MD_UPDATE_ACTION = 279
    MD_REQ_REJ_REASON = 281
    REF_TAG_ID = 371
    REF_MSG_TYPE = 372
    SESSION_REJECT_REASON = 373
    BUSINESS_REJECT_REASON = 380
    CXL_REJ_RESPONSE_TO = 434
    MASS_CANCEL_REQUEST_TYPE = 530
    MASS_CANCEL_RESPONSE = 531
    MASS_CANCEL_REJECT_REASON = 532
    TOTAL_AFFECTED_ORDERS = 533
    ACCOUNT_TYPE = 581
    MASS_STATUS_REQ_ID = 584
    MASS_STATUS_REQ_TYPE = 585
    NO_POSITIONS = 702
    POS_TYPE = 703
    LONG_QTY = 704
    SHORT_QTY = 705
    POS_REQ_ID = 710
    CLEARING_BUSINESS_DATE = 715
    POS_MAINT_RPT_ID = 721
    POS_REQ_TYPE = 724
    TOTAL_NUM_POS_REPORTS = 727
    POS_REQ_RESULT = 728
    POS_REQ_STATUS = 729
    SETTL_PRICE = 730
    SETTL_PRICE_TYPE = 731
    PRIOR_SETTL_PRICE = 734
    LAST_UPDATE_TIME = 779
    TOT_NUM_REPORTS = 911
    LAST_RPT_REQUESTED = 912
    MASS_ACTION_REPORT_ID = 1369


# ---- codes of the order enumerations and value formats ----------------------------------------

SIDES: dict[str, Side] = {"1": Side.BUY, "2": Side.SELL}
"""Side (54) code -> side."""
SIDE_CODES: dict[Side, str] = {value: key for key, value in SIDES.items()}
"""Side -> Side (54) code."""

ORD_TYPES: dict[str, OrderType] = {
    "1": OrderType.MARKET, "2": OrderType.LIMIT, "3": OrderType.STOP, "4": OrderType.STOP_LIMIT,
}  # fmt: skip
"""OrdType (40) code -> order type."""
ORD_TYPE_CODES: dict[OrderType, str] = {value: key for key, value in ORD_TYPES.items()}
"""Order type -> OrdType (40) code."""

TIFS: dict[str, TimeInForce] = {
    "0": TimeInForce.DAY, "1": TimeInForce.GTC, "3": TimeInForce.IOC, "4": TimeInForce.FOK,
}  # fmt: skip
"""TimeInForce (59) code -> time in force."""
TIF_CODES: dict[TimeInForce, str] = {value: key for key, value in TIFS.items()}
"""Time in force -> TimeInForce (59) code."""
GTD = "6"
"""TimeInForce (59) Good Till Date: the order expires at its ExpireTime (126)."""


def format_decimal(value: Decimal) -> str:
    """A decimal as FIX writes numbers: plain digits, never an exponent."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def utc_timestamp(ts_ns: int | None = None) -> str:
    """A FIX UTCTimestamp with milliseconds for ``ts_ns`` (now when omitted)."""
    ns = time.time_ns() if ts_ns is None else ts_ns
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1_000_000:03d}"


# ---- FIX 4.2 extension: the 4.4 messages under user-defined message types -----------------

EXTENDED_42_TYPES: dict[str, str] = {
    "AF": "UAF",
    "AN": "UAN",
    "AO": "UAO",
    "AP": "UAP",
    "q": "Uq",
    "r": "Ur",
}
"""4.4 message type -> the user-defined type that carries the same body on FIX 4.2."""

EXTENDED_42_DICTIONARY = "FIX42-tradeguard.xml"
"""File name of the generated FIX 4.2 dictionary."""

_EXT42_FIELDS = frozenset({
    "AccountType", "ClearingBusinessDate", "LastRptRequested", "LongQty",
    "MassCancelRejectReason", "MassCancelRequestType", "MassCancelResponse",
    "MassStatusReqID", "MassStatusReqType", "NoPositions", "PosMaintRptID", "PosReqID",
    "PosReqResult", "PosReqStatus", "PosReqType", "PosType", "PriorSettlPrice", "SettlPrice",
    "SettlPriceType", "ShortQty", "TotNumReports", "TotalAffectedOrders", "TotalNumPosReports",
})  # fmt: skip
"""Fields FIX 4.2 lacks, copied with their enums from FIX44.xml."""

_Member = tuple[str, bool | tuple[str, ...]]
"""A message member: (field, required) or (repeating group, its fields)."""

_POSITION_GROUP: _Member = ("NoPositions", ("PosType", "LongQty", "ShortQty"))

# name, 4.2 type, members
_EXT42_MESSAGES: tuple[tuple[str, str, tuple[_Member, ...]], ...] = (
    ("OrderMassStatusRequest", "UAF", (
        ("MassStatusReqID", True), ("MassStatusReqType", True), ("Account", False),
        ("Symbol", False),
    )),
    ("OrderMassCancelRequest", "Uq", (
        ("ClOrdID", True), ("MassCancelRequestType", True), ("Symbol", False),
        ("TransactTime", True), ("Text", False),
    )),
    ("OrderMassCancelReport", "Ur", (
        ("ClOrdID", False), ("OrderID", True), ("MassCancelRequestType", True),
        ("MassCancelResponse", True), ("MassCancelRejectReason", False),
        ("TotalAffectedOrders", False), ("Symbol", False), ("TransactTime", False),
        ("Text", False),
    )),
    ("RequestForPositions", "UAN", (
        ("PosReqID", True), ("PosReqType", True), ("Account", True), ("AccountType", True),
        ("ClearingBusinessDate", True), ("TransactTime", True),
    )),
    ("RequestForPositionsAck", "UAO", (
        ("PosMaintRptID", True), ("PosReqID", False), ("TotalNumPosReports", False),
        ("PosReqResult", True), ("PosReqStatus", True), ("Account", True),
        ("AccountType", True), ("Text", False),
    )),
    ("PositionReport", "UAP", (
        ("PosMaintRptID", True), ("PosReqID", False), ("PosReqType", False),
        ("TotalNumPosReports", False), ("PosReqResult", True),
        ("ClearingBusinessDate", True), ("Account", True), ("AccountType", True),
        ("Symbol", False), ("SettlPrice", True), ("SettlPriceType", True),
        ("PriorSettlPrice", True), _POSITION_GROUP, ("Text", False),
    )),
)  # fmt: skip
_EXT42_EXECUTION_REPORT = ("MassStatusReqID", "TotNumReports", "LastRptRequested")
"""Fields the extension adds (optional) to the 4.2 ExecutionReport, for mass status."""


def extend_fix42_dictionary(specs: Path, target: Path) -> Path:
    """Write ``specs``/FIX42.xml plus the user-defined messages to ``target``; return it.

    ``specs`` is the directory holding the stock FIX42.xml and FIX44.xml. The file is
    written whole and then renamed into place. Raises ``ValueError`` when FIX42.xml has
    no ``<fields>`` or ``<messages>``.
    """
    base = ET.parse(specs / "FIX42.xml")
    root = base.getroot()
    fields = root.find("fields")
    messages = root.find("messages")
    if fields is None or messages is None:
        raise ValueError(f"{specs / 'FIX42.xml'}: no <fields> or <messages>")
    known = {field.get("name") for field in fields}
    for field in ET.parse(specs / "FIX44.xml").getroot().iterfind("fields/field"):
        if field.get("name") in _EXT42_FIELDS and field.get("name") not in known:
            fields.append(field)
    for field in fields:
        if field.get("name") == "MsgType":
            for name, msg_type, _ in _EXT42_MESSAGES:
                ET.SubElement(field, "value", enum=msg_type, description=name.upper())
    for name, msg_type, body in _EXT42_MESSAGES:
        message = ET.SubElement(messages, "message", name=name, msgtype=msg_type, msgcat="app")
        for item, detail in body:
            if isinstance(detail, tuple):
                group = ET.SubElement(message, "group", name=item, required="N")
                for member in detail:
                    ET.SubElement(group, "field", name=member, required="N")
            else:
                ET.SubElement(message, "field", name=item, required="Y" if detail else "N")
    for message in messages:
        if message.get("msgtype") == "8":
            for name in _EXT42_EXECUTION_REPORT:
                ET.SubElement(message, "field", name=name, required="N")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tmp")
    base.write(partial, encoding="utf-8", xml_declaration=True)
    partial.replace(target)
    return target


def data_dictionary_settings(begin_string: str, specs: Path, directory: Path) -> dict[str, str]:
    """quickfix session settings that select (and for 4.2 generate) the data dictionaries.

    ``specs`` holds the stock dictionaries; the extended FIX 4.2 one is written into
    ``directory`` as ``EXTENDED_42_DICTIONARY``. Raises ``ValueError`` for a begin string
    outside ``BEGIN_STRINGS`` or an unreadable FIX42.xml.
    """
    if begin_string == FIX44:
        return {"UseDataDictionary": "Y", "DataDictionary": str(specs / "FIX44.xml")}
    if begin_string == FIX42:
        path = extend_fix42_dictionary(specs, directory / EXTENDED_42_DICTIONARY)
        return {"UseDataDictionary": "Y", "DataDictionary": str(path)}
    if begin_string == FIXT11:
        return {
            "UseDataDictionary": "Y",
            "TransportDataDictionary": str(specs / "FIXT11.xml"),
            "AppDataDictionary": str(specs / "FIX50SP2.xml"),
            "DefaultApplVerID": "FIX.5.0SP2",
        }
    raise ValueError(f"begin_string: expected one of {sorted(BEGIN_STRINGS)}, got {begin_string!r}")
