"""IB's TWS API wire protocol as the fake TWS speaks it: framing, message ids, error codes,
the request field reader, and what changes with the negotiated server version.

Framing: after the handshake every message is a 4-byte big-endian length, then
NUL-terminated text fields; the first field is the message id. Whether a message version
follows the id, and which fields a message carries, depends on the server version agreed at
the handshake (see ``ServerVersion`` and ``Wire``).
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

__all__ = [
    "IGNORED_REQUESTS",
    "MAX_FRAME",
    "MIN_SERVER_VERSION",
    "NO_REQUEST",
    "SERVER_VERSION",
    "UNSUPPORTED_REQUESTS",
    "ContractQuery",
    "ErrorCode",
    "Fields",
    "In",
    "MalformedRequest",
    "Out",
    "ProtocolViolation",
    "TickType",
    "Wire",
    "encode_frame",
    "ib_time",
    "negotiate_version",
]

SERVER_VERSION = 176
"""The highest server version this venue speaks (what ib_insync 0.9.86 asks for)."""

MIN_SERVER_VERSION = 157
"""The lowest server version this venue speaks (what the ``ibapi`` 9.81 client on PyPI
asks for; ib_insync and ib_async start there too)."""

MAX_FRAME = 0xFFFFFF
"""Largest frame accepted (IB's own limit); a larger length prefix closes the session."""
NO_REQUEST = -1
"""The request id of errors and notices not tied to a request."""

HANDSHAKE_PREFIX = b"API\0"
VERSION_RANGE = re.compile(r"v(\d+)(?:\.\.(\d+))?")
UNSET_DOUBLE = 1.7976931348623157e308


class In(enum.IntEnum):
    """Ids of the requests a client sends."""

    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    PLACE_ORDER = 3
    CANCEL_ORDER = 4
    REQ_OPEN_ORDERS = 5
    REQ_ACCOUNT_UPDATES = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DETAILS = 9
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_MANAGED_ACCTS = 17
    REQ_CURRENT_TIME = 49
    REQ_GLOBAL_CANCEL = 58
    REQ_MARKET_DATA_TYPE = 59
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_POSITIONS_MULTI = 74
    CANCEL_POSITIONS_MULTI = 75
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_COMPLETED_ORDERS = 99
    REQ_FAMILY_CODES = 80
    REQ_MKT_DEPTH_EXCHANGES = 82
    REQ_NEWS_PROVIDERS = 85


class ErrorCode(enum.IntEnum):
    """IB error and notice codes this venue sends."""

    DUPLICATE_ORDER_ID = 103
    MODIFY_FILLED = 104
    MODIFY_REFUSED = 105
    NOT_CANCELLABLE = 161
    HISTORICAL_DATA_ERROR = 162
    NO_SECURITY_DEFINITION = 200
    ORDER_REJECTED = 201
    ORDER_CANCELLED = 202
    BAD_REQUEST = 320
    REQUEST_REFUSED = 321
    CLIENT_ID_IN_USE = 326
    NOT_SUBSCRIBED = 354
    FUNDAMENTAL_DATA_ERROR = 430
    CONNECTIVITY_LOST = 1100
    CONNECTIVITY_RESTORED_DATA_LOST = 1101
    CONNECTIVITY_RESTORED_DATA_KEPT = 1102
    MARKET_DATA_FARM_OK = 2104
    SERVER_CONNECTIVITY_BROKEN = 2110
    CANCEL_UNKNOWN_ORDER = 10147


UNSUPPORTED_REQUESTS: dict[int, tuple[str, ErrorCode, bool]] = {
    10: ("reqMktDepth", ErrorCode.NOT_SUBSCRIBED, True),
    20: ("reqHistoricalData", ErrorCode.HISTORICAL_DATA_ERROR, False),
    21: ("exerciseOptions", ErrorCode.REQUEST_REFUSED, True),
    22: ("reqScannerSubscription", ErrorCode.HISTORICAL_DATA_ERROR, False),
    50: ("reqRealTimeBars", ErrorCode.NOT_SUBSCRIBED, True),
    52: ("reqFundamentalData", ErrorCode.FUNDAMENTAL_DATA_ERROR, True),
    54: ("calculateImpliedVolatility", ErrorCode.REQUEST_REFUSED, True),
    55: ("calculateOptionPrice", ErrorCode.REQUEST_REFUSED, True),
    67: ("queryDisplayGroups", ErrorCode.REQUEST_REFUSED, True),
    68: ("subscribeToGroupEvents", ErrorCode.REQUEST_REFUSED, True),
    69: ("updateDisplayGroup", ErrorCode.REQUEST_REFUSED, True),
    78: ("reqSecDefOptParams", ErrorCode.REQUEST_REFUSED, False),
    79: ("reqSoftDollarTiers", ErrorCode.REQUEST_REFUSED, False),
    81: ("reqMatchingSymbols", ErrorCode.REQUEST_REFUSED, False),
    83: ("reqSmartComponents", ErrorCode.REQUEST_REFUSED, False),
    84: ("reqNewsArticle", ErrorCode.REQUEST_REFUSED, False),
    86: ("reqHistoricalNews", ErrorCode.HISTORICAL_DATA_ERROR, False),
    87: ("reqHeadTimeStamp", ErrorCode.HISTORICAL_DATA_ERROR, False),
    88: ("reqHistogramData", ErrorCode.HISTORICAL_DATA_ERROR, False),
    92: ("reqPnL", ErrorCode.REQUEST_REFUSED, False),
    94: ("reqPnLSingle", ErrorCode.REQUEST_REFUSED, False),
    96: ("reqHistoricalTicks", ErrorCode.HISTORICAL_DATA_ERROR, False),
    97: ("reqTickByTickData", ErrorCode.NOT_SUBSCRIBED, False),
    100: ("reqWshMetaData", ErrorCode.REQUEST_REFUSED, False),
    102: ("reqWshEventData", ErrorCode.REQUEST_REFUSED, False),
    104: ("reqUserInfo", ErrorCode.REQUEST_REFUSED, False),
}
"""Requests that carry a request id and that this venue does not serve: message id ->
(name, IB error code, whether a message version precedes the request id). Each is answered
with that error under its own request id, as TWS refuses a request (162 historical data,
354 market data not subscribed, 430 fundamental data, 321 request not validated)."""

IGNORED_REQUESTS: dict[int, str] = {
    11: "cancelMktDepth", 12: "reqNewsBulletins", 13: "cancelNewsBulletins",
    14: "setServerLogLevel", 23: "cancelScannerSubscription", 25: "cancelHistoricalData",
    51: "cancelRealTimeBars", 53: "cancelFundamentalData", 56: "cancelImpliedVolatility",
    57: "cancelOptionPrice", 70: "unsubscribeFromGroupEvents", 89: "cancelHistogramData",
    90: "cancelHeadTimeStamp", 93: "cancelPnL", 95: "cancelPnLSingle", 98: "cancelTickByTickData",
    101: "cancelWshMetaData", 103: "cancelWshEventData",
}
"""Requests read and dropped: cancels of requests that were refused, and settings that
change nothing here. TWS answers none of these."""


class Out(enum.IntEnum):
    """Ids of the messages this venue sends."""

    TICK_PRICE = 1
    TICK_SIZE = 2
    ORDER_STATUS = 3
    ERR_MSG = 4
    OPEN_ORDER = 5
    ACCT_VALUE = 6
    PORTFOLIO_VALUE = 7
    ACCT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    EXECUTION_DATA = 11
    MANAGED_ACCTS = 15
    CURRENT_TIME = 49
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    TICK_SNAPSHOT_END = 57
    MARKET_DATA_TYPE = 58
    COMMISSION_REPORT = 59
    POSITION_DATA = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY = 63
    ACCOUNT_SUMMARY_END = 64
    POSITION_MULTI = 71
    POSITION_MULTI_END = 72
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    FAMILY_CODES = 78
    MKT_DEPTH_EXCHANGES = 80
    NEWS_PROVIDERS = 85
    COMPLETED_ORDER = 101
    COMPLETED_ORDERS_END = 102


_OUT_VERSIONS: dict[Out, int] = {
    Out.TICK_PRICE: 6,
    Out.TICK_SIZE: 6,
    Out.ERR_MSG: 2,
    Out.ACCT_VALUE: 2,
    Out.PORTFOLIO_VALUE: 8,
    Out.ACCT_UPDATE_TIME: 1,
    Out.NEXT_VALID_ID: 1,
    Out.MANAGED_ACCTS: 1,
    Out.CURRENT_TIME: 1,
    Out.CONTRACT_DATA_END: 1,
    Out.OPEN_ORDER_END: 1,
    Out.ACCT_DOWNLOAD_END: 1,
    Out.EXECUTION_DATA_END: 1,
    Out.TICK_SNAPSHOT_END: 1,
    Out.MARKET_DATA_TYPE: 1,
    Out.COMMISSION_REPORT: 1,
    Out.POSITION_DATA: 3,
    Out.POSITION_END: 1,
    Out.ACCOUNT_SUMMARY: 1,
    Out.ACCOUNT_SUMMARY_END: 1,
    Out.POSITION_MULTI: 1,
    Out.POSITION_MULTI_END: 1,
    Out.ACCOUNT_UPDATE_MULTI: 1,
    Out.ACCOUNT_UPDATE_MULTI_END: 1,
}
"""Replies that carry a message version after their id at every server version spoken here;
orderStatus, openOrder, execDetails, familyCodes, mktDepthExchanges, newsProviders,
completedOrder and completedOrdersEnd carry none, and contractDetails carries version 8 below 164 only."""


class TickType(enum.IntEnum):
    """IB tick types sent for market data."""

    BID_SIZE = 0
    BID = 1
    ASK = 2
    ASK_SIZE = 3
    LAST = 4
    LAST_SIZE = 5


class MalformedRequest(Exception):
    """A request could not be read: a field is missing or does not parse."""


class ProtocolViolation(Exception):
    """The byte stream is not IB's protocol; the session is closed."""


class Fields:
    """A cursor over the text fields of one request."""

    def __init__(self, fields: Sequence[str], start: int) -> None:
        self._fields = fields
        self._pos = start
        self.req_id = NO_REQUEST
        """The request id, once the handler has read it; errors about the request name it."""

    def text(self) -> str:
        """The next field as text."""
        if self._pos >= len(self._fields):
            raise MalformedRequest(f"field {self._pos}: missing")
        value = self._fields[self._pos]
        self._pos += 1
        return value

    def integer(self, default: int | None = None) -> int:
        """The next field as an integer; an empty field is ``default`` when one is given."""
        raw = self.text()
        if raw == "" and default is not None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise MalformedRequest(f"field {self._pos - 1}: not an integer: {raw!r}") from None

    def decimal(self) -> Decimal | None:
        """The next field as a finite Decimal, or None when empty or IB's 'unset' value."""
        raw = self.text()
        if raw == "":
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise MalformedRequest(f"field {self._pos - 1}: not a number: {raw!r}") from None
        if not value.is_finite():
            raise MalformedRequest(f"field {self._pos - 1}: not finite: {raw!r}")
        if value >= Decimal(UNSET_DOUBLE):
            return None
        return value

    def flag(self) -> bool:
        """The next field as a boolean (``1``/``0``, empty is false)."""
        return self.integer(default=0) != 0

    def skip(self, count: int) -> None:
        """Pass over ``count`` fields."""
        for _ in range(count):
            self.text()

    def contract(self) -> ContractQuery:
        """The twelve contract fields IB clients send with most requests."""
        con_id = self.integer(default=0)
        symbol, sec_type = self.text(), self.text()
        self.skip(4)  # lastTradeDateOrContractMonth, strike, right, multiplier
        exchange, primary_exchange, currency = self.text(), self.text(), self.text()
        local_symbol = self.text()
        self.skip(1)  # tradingClass
        return ContractQuery(
            con_id, symbol, sec_type, exchange, primary_exchange, currency, local_symbol
        )


@dataclass(frozen=True)
class ContractQuery:
    """What a client said about a contract."""

    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str

    def describe(self) -> str:
        """A short human-readable name for error texts."""
        return f"{self.sec_type or '?'} {self.symbol or self.local_symbol or self.con_id}"

def field_text(value: object) -> str:
    """One field as IB text: empty for None, 1/0 for booleans, plain notation for numbers."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def encode_frame(fields: Iterable[object]) -> bytes:
    """Length-prefixed, NUL-terminated fields: one IB API frame."""
    payload = "".join(field_text(value) + "\0" for value in fields).encode()
    return struct.pack(">I", len(payload)) + payload


def ib_time(ts_ns: int) -> str:
    """IB's ``YYYYMMDD HH:MM:SS zone`` text for a wall-clock time (UTC)."""
    moment = datetime.fromtimestamp(ts_ns / 1e9, UTC) if ts_ns else datetime.now(UTC)
    return moment.strftime("%Y%m%d %H:%M:%S") + " UTC"




def negotiate_version(offer: str) -> int:
    """The server version for a client's handshake offer ``v<min>..<max>`` (connect options
    may follow): the highest version both sides speak, as TWS chooses.

    Raises ``ProtocolViolation`` for an offer that is not IB's, or a range that shares no
    version with ``MIN_SERVER_VERSION..SERVER_VERSION``."""
    match = VERSION_RANGE.match(offer)
    if match is None:
        raise ProtocolViolation(f"bad version offer {offer[:40]!r}")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if low > high:
        raise ProtocolViolation(f"bad version offer {offer[:40]!r}: {low} > {high}")
    chosen = min(high, SERVER_VERSION)
    if chosen < max(low, MIN_SERVER_VERSION):
        raise ProtocolViolation(
            f"client versions {low}..{high} share none with {MIN_SERVER_VERSION}..{SERVER_VERSION}")
    return chosen


class Wire:
    """How messages look at one negotiated server version.

    The thresholds are the IB API's own (``server_versions`` of the official client, as
    ib_insync and ib_async decode them): sizes become decimals at 160, the error message
    gains the advanced-reject field at 166, contractDetails drops its message version and
    the market-data size multiplier and gains the size rules at 164, and openOrder gains
    duration (159), postToAts (160), autoCancelParent (162) and the pegged-order tail (170),
    which completedOrder gains at 170 too.
    """

    FRACTIONAL_SIZE = 160
    ADVANCED_REJECT = 166
    SIZE_RULES = 164
    DURATION = 159
    POST_TO_ATS = 160
    AUTO_CANCEL_PARENT = 162
    PEG_BEST_PEG_MID = 170

    def __init__(self, version: int) -> None:
        if not MIN_SERVER_VERSION <= version <= SERVER_VERSION:
            raise ValueError(
                f"version: expected {MIN_SERVER_VERSION}..{SERVER_VERSION}, got {version}")
        self.version = version

    def head(self, msg_id: Out) -> list[object]:
        """The id, and the message version where the message carries one."""
        if msg_id is Out.CONTRACT_DATA and self.version < self.SIZE_RULES:
            return [int(msg_id), 8]
        version = _OUT_VERSIONS.get(msg_id)
        return [int(msg_id)] if version is None else [int(msg_id), version]

    def frame(self, msg_id: Out, fields: Iterable[object]) -> bytes:
        """One message, encoded."""
        return encode_frame([*self.head(msg_id), *fields])

    def size(self, value: Decimal) -> object:
        """A market data size: a decimal from 160 on, a whole number before."""
        if self.version >= self.FRACTIONAL_SIZE:
            return value
        return int(value)

    def error_fields(self, req_id: int, code: int, text: str) -> list[object]:
        """errMsg's fields after the version."""
        if self.version >= self.ADVANCED_REJECT:
            return [req_id, code, text, ""]
        return [req_id, code, text]

    def contract_details_tail(self, md_size_multiplier: int, size_increment: Decimal) -> tuple[
            list[object], list[object]]:
        """(the mdSizeMultiplier field after minTick, the size rules at the end)."""
        if self.version < self.SIZE_RULES:
            tail: list[object] = [size_increment] if self.version == 163 else []
            return [md_size_multiplier], tail
        return [], [size_increment, size_increment, size_increment]

    def completed_order_tail(self) -> list[object]:
        """completedOrder's fields after completedStatus: from 170 on, the five pegged-order
        fields (minTradeQty .. midOffsetAtHalf), all unset; nothing before."""
        if self.version >= self.PEG_BEST_PEG_MID:
            return ["", "", "", "", ""]
        return []

    def open_order_tail(self) -> list[object]:
        """openOrder's fields after usePriceMgmtAlgo, all unset."""
        tail: list[object] = []
        if self.version >= self.DURATION:
            tail.append("")
        if self.version >= self.POST_TO_ATS:
            tail.append("")
        if self.version >= self.AUTO_CANCEL_PARENT:
            tail.append(0)
        if self.version >= self.PEG_BEST_PEG_MID:
            tail += ["", "", "", "", ""]
        return tail
