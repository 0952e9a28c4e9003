"""Numbers and text at the boundary: every message type refuses, naming the field, a
number its users could not compute with (NaN, infinity, an absurd magnitude or exponent,
an integer beyond 64 bits) and text that is not valid Unicode, whether the message is
decoded from the wire or built by a connector from a venue's fields."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from messages import (
    MAX_DECIMAL,
    MAX_PRICE,
    MAX_QUANTITY,
    Message,
    MessageError,
    OrderFilled,
    PortfolioSnapshot,
    PositionState,
    Quote,
    SubmitOrder,
    VenuePosition,
    decode,
    decode_as,
    encode,
)
from messages import zmq_wire as wire
from tests.messages.samples import QUOTE, SAMPLES

Path = tuple[str | int, ...]

BAD_DECIMAL_TEXTS = [
    "NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "inf",
    "1e999999999", "-1e999999999", "1E+1000000", "1e-999999999", "0E+999999999", "0E-999999999",
    "1e30", "1e-101", "0." + "0" * 100 + "1",
]
"""Decimals as the wire may send them (strings) that no message may carry."""

BAD_DECIMAL_NUMBERS = ["1e999999999", "-1e999999999", "1e-999999999", "1e400", "-1e400", "1" + "0" * 40]
"""The same as bare JSON numbers."""

BAD_INTS = [str(2**63), str(-(2**63) - 1), str(2**64), "1" + "0" * 30]
"""Integers beyond a signed 64-bit integer (SQLite's INTEGER)."""

BAD_FLOATS = ["1e999", "-1e999"]
"""JSON numbers a float field would read as infinity."""

LONE_SURROGATES = ["\ud800", "a\udfffb", "\ud83d x"]
"""Text with a lone surrogate: no UTF-8 encodes it, so no log, journal or wire takes it."""


def leaves(message: Message, kind: type) -> list[tuple[Path, str]]:
    """(wire path, field name) of every value of exactly ``kind`` in ``message``, nested
    records and tuples included."""
    found: list[tuple[Path, str]] = []
    for name in message.__struct_fields__:
        value = getattr(message, name)
        if type(value) is kind:
            found.append(((name,), name))
        elif isinstance(value, tuple):
            for index, item in enumerate(value):
                if isinstance(item, Message):
                    found += [((name, index, *path), field) for path, field in leaves(item, kind)]
                elif type(item) is kind:
                    found.append(((name, index), name))
    return found


def with_raw(message: Message, path: Path, token: str) -> bytes:
    """``message``'s wire form with the value at ``path`` replaced by the raw JSON ``token``."""
    data = json.loads(encode(message))
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "@@BAD@@"
    text = json.dumps(data)
    assert text.count('"@@BAD@@"') == 1
    return text.replace('"@@BAD@@"', token).encode()


def cases(kind: type, tokens: list[str]) -> list[Any]:
    params = []
    for message_type, sample in SAMPLES.items():
        for path, field in leaves(sample, kind):
            for token in tokens:
                where = ".".join(map(str, path))
                params.append(pytest.param(sample, path, field, token,
                                           id=f"{message_type.__name__}.{where}={token[:24]}"))
    return params


def refused(data: bytes, field: str) -> None:
    with pytest.raises(MessageError) as caught:
        decode(data)
    assert field in str(caught.value), str(caught.value)


# ---- every message type, decoded from the wire ------------------------------------------------


def test_the_samples_carry_every_kind_of_field_checked_here() -> None:
    for kind in (Decimal, int, float, str):
        assert cases(kind, ["x"]), f"no sample carries a {kind.__name__}"
    assert len({type(s) for s in SAMPLES.values() if leaves(s, Decimal)}) >= 10


@pytest.mark.parametrize(("sample", "path", "field", "token"),
                         cases(Decimal, [json.dumps(t) for t in BAD_DECIMAL_TEXTS]))
def test_every_decimal_refuses_non_finite_and_absurd_text(
    sample: Message, path: Path, field: str, token: str
) -> None:
    refused(with_raw(sample, path, token), field)


@pytest.mark.parametrize(("sample", "path", "field", "token"), cases(Decimal, BAD_DECIMAL_NUMBERS))
def test_every_decimal_refuses_absurd_json_numbers(
    sample: Message, path: Path, field: str, token: str
) -> None:
    refused(with_raw(sample, path, token), field)


@pytest.mark.parametrize(("sample", "path", "field", "token"), cases(int, BAD_INTS))
def test_every_integer_must_fit_64_bits(sample: Message, path: Path, field: str, token: str) -> None:
    refused(with_raw(sample, path, token), field)


@pytest.mark.parametrize(("sample", "path", "field", "token"), cases(float, BAD_FLOATS))
def test_every_float_refuses_infinity(sample: Message, path: Path, field: str, token: str) -> None:
    refused(with_raw(sample, path, token), field)


@pytest.mark.parametrize(("sample", "path", "field", "token"), cases(str, LONE_SURROGATES))
def test_every_text_refuses_lone_surrogates(sample: Message, path: Path, field: str, token: str) -> None:
    escaped = with_raw(sample, path, json.dumps(token))  # as JSON escapes: not JSON at all
    with pytest.raises(MessageError):
        decode(escaped)
    text = escaped.decode().replace(json.dumps(token), json.dumps(token, ensure_ascii=False))
    assert token in text  # as a Python str holding the surrogate itself
    with pytest.raises(MessageError, match="lone surrogate"):
        decode(text)
    with pytest.raises(MessageError, match="lone surrogate"):
        decode_as(text, type(sample))


def test_a_surrogate_pair_is_valid_text() -> None:
    wire_form = with_raw(SAMPLES[OrderFilled], ("client_order_id",), '"\\ud83d\\ude00-1"')
    decoded = decode(wire_form)
    assert isinstance(decoded, OrderFilled) and decoded.client_order_id == "\U0001f600-1"
    assert decode(encode(decoded)) == decoded


# ---- every message type, built in the process (a connector building from venue fields) -------


def built_cases() -> list[Any]:
    params = []
    texts = ("NaN", "sNaN", "-Infinity", "1e999999999", "1e-999999999", "0E+999999999")
    bad: list[tuple[type, object]] = [(Decimal, Decimal(t)) for t in texts]
    bad += [(int, 2**63), (float, float("inf")), (float, float("nan")), (str, "ok\udc80")]
    for message_type, sample in SAMPLES.items():
        for name in sample.__struct_fields__:
            for kind, value in bad:
                if type(getattr(sample, name)) is kind:
                    params.append(pytest.param(sample, name, value,
                                               id=f"{message_type.__name__}.{name}={value!r}"[:80]))
    return params


@pytest.mark.parametrize(("sample", "name", "value"), built_cases())
def test_building_any_message_with_a_bad_value_raises_message_error(
    sample: Message, name: str, value: object
) -> None:
    fields = msgspec.structs.asdict(sample)
    fields[name] = value
    with pytest.raises(MessageError, match=name):
        type(sample)(**fields)


def test_message_error_is_what_connectors_already_catch() -> None:
    with pytest.raises(ValueError, match="bid"):
        Quote(venue="v", symbol="S", bid=Decimal("1e999999999"), ask=Decimal(1),
              bid_size=Decimal(1), ask_size=Decimal(1))


# ---- the bounds themselves ----------------------------------------------------------------------


def quote(**values: str) -> Quote:
    fields: dict[str, Any] = msgspec.structs.asdict(QUOTE)
    fields.update({k: Decimal(v) for k, v in values.items()})
    return Quote(**fields)


def test_prices_and_sizes_up_to_the_bounds_pass_and_beyond_are_refused() -> None:
    below = MAX_PRICE - Decimal("0.000001")
    assert quote(bid=str(below), ask=str(below)).bid == below
    assert quote(bid_size=str(MAX_QUANTITY - 1)).bid_size == MAX_QUANTITY - 1
    assert quote(ask_size="1e-40").ask_size == Decimal("1e-40")  # 40 places
    average = Decimal(12301) / Decimal(3)  # a venue's average price, at full precision
    assert quote(bid=str(average / 10**9)).bid == average / 10**9
    assert quote(bid="-5", ask="0").bid == Decimal(-5)  # a faulty feed, judged by the monitor
    with pytest.raises(MessageError, match="bid: magnitude must be below"):
        quote(bid=str(MAX_PRICE))
    with pytest.raises(MessageError, match="ask: magnitude must be below"):
        quote(ask=str(-MAX_PRICE))
    with pytest.raises(MessageError, match="bid_size: magnitude must be below"):
        quote(bid_size=str(MAX_QUANTITY))
    with pytest.raises(MessageError, match="ask_size: at most 40 decimal places"):
        quote(ask_size="1.0e-41")


def test_totals_and_pnl_may_be_finer_than_a_price_but_not_unbounded() -> None:
    tiny = Decimal("1e-40") * Decimal("1e-40")  # the P&L of the smallest position, exactly
    state = PositionState(venue="v", symbol="S", quantity=Decimal("1e-40"), average_price=Decimal(1),
                          unrealized_pnl=tiny)
    assert state.unrealized_pnl == Decimal("1e-80")
    with pytest.raises(MessageError, match="unrealized_pnl: at most 100 decimal places"):
        PositionState(venue="v", symbol="S", quantity=Decimal(1), average_price=Decimal(1),
                      unrealized_pnl=Decimal("1e-101"))


def test_totals_may_exceed_a_price_but_not_the_decimal_bound() -> None:
    big = MAX_PRICE * MAX_QUANTITY  # a notional of the largest order
    assert PortfolioSnapshot(daily_traded_notional=big).daily_traded_notional == big
    with pytest.raises(MessageError, match="realized_pnl"):
        PortfolioSnapshot(realized_pnl=-MAX_DECIMAL)


def test_fill_order_and_position_quantities_are_bounded() -> None:
    fill = msgspec.structs.asdict(SAMPLES[OrderFilled])
    with pytest.raises(MessageError, match="price"):
        OrderFilled(**{**fill, "price": Decimal("1e12")})
    with pytest.raises(MessageError, match="quantity"):
        SubmitOrder(client_order_id="c", venue="v", symbol="S", side="buy",  # type: ignore[arg-type]
                    quantity=Decimal("1e12"))
    with pytest.raises(MessageError, match="quantity"):
        VenuePosition(venue="v", symbol="S", quantity=Decimal("-1e12"))


def test_the_largest_values_allowed_cannot_overflow_the_arithmetic_downstream() -> None:
    """What the governor, keeper and monitor compute from fills and quotes, at the bounds:
    notional, totals over many fills, mids, averages, and a cent rounding for display."""
    price = MAX_PRICE - Decimal("1e-16")
    quantity = MAX_QUANTITY - Decimal("1e-16")
    tiny = Decimal("1e-40")
    notional = abs(price * quantity)
    total = sum((notional for _ in range(1000)), Decimal(0))
    mid = (price + price) / 2
    average = total / (quantity * 1000)
    pnl = (tiny - price) * quantity
    for value in (notional, total, mid, average, pnl, price / tiny, tiny * tiny):
        assert value.is_finite()
    assert notional.quantize(Decimal("0.01")) > 0 and pnl.quantize(Decimal("0.01")) < 0
    assert PortfolioSnapshot(daily_traded_notional=total.quantize(Decimal(1))).daily_traded_notional > 0


# ---- the ZeroMQ wire frames (decoded before any message is built) --------------------------------


QUOTE_FRAME = wire.QuoteFrame(session="s", seq=1, symbol="AAPL", bid=Decimal("1"), ask=Decimal("2"),
                              bid_size=Decimal("3"), ask_size=Decimal("4"), ts_ns=1)
FILLED_FRAME = wire.FilledEvent(client_order_id="c", fill_id="f", symbol="AAPL", side="buy",  # type: ignore[arg-type]
                                quantity=Decimal("1"), price=Decimal("2"), leaves=Decimal("0"),
                                venue_order_id="v", ts_ns=1)


@pytest.mark.parametrize(
    ("frame", "decoder", "field"),
    [
        (QUOTE_FRAME, wire.market_decoder, "bid"),
        (QUOTE_FRAME, wire.market_decoder, "ask_size"),
        (FILLED_FRAME, wire.order_channel_decoder, "price"),
        (FILLED_FRAME, wire.order_channel_decoder, "quantity"),
        (FILLED_FRAME, wire.order_channel_decoder, "leaves"),
    ],
)
@pytest.mark.parametrize("token", ['"1e999999999"', "1e999999999", '"NaN"', '"Infinity"', '"1e-41"'])
def test_wire_frames_refuse_absurd_numbers(frame: wire.Frame, decoder: Any, field: str, token: str) -> None:
    data = json.loads(wire.encoder.encode(frame))
    data[field] = "@@BAD@@"
    raw = json.dumps(data).replace('"@@BAD@@"', token)
    with pytest.raises(msgspec.ValidationError, match=field):
        decoder.decode(raw)


def test_wire_frames_refuse_lone_surrogates_and_64_bit_overflow() -> None:
    data = json.loads(wire.encoder.encode(QUOTE_FRAME))
    with pytest.raises(msgspec.ValidationError, match="ts_ns"):
        wire.market_decoder.decode(json.dumps({**data, "ts_ns": 2**63}))
    fields = msgspec.structs.asdict(QUOTE_FRAME)
    with pytest.raises(MessageError, match="session"):
        wire.QuoteFrame(**{**fields, "session": "\udc00"})
