"""The wire codec: every message round-trips exactly; garbage is refused with a
``MessageError`` that names the bad field."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from messages import (
    Message,
    MessageError,
    OrderFilled,
    Quote,
    Side,
    SubmitOrder,
    Trade,
    decode,
    decode_as,
    encode,
    to_builtins,
)
from messages.codec import MESSAGE_TYPES
from tests.messages.samples import QUOTE, SAMPLES, TS

# ---- round trips ------------------------------------------------------------------------


def test_every_message_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(MESSAGE_TYPES)
    for kind, sample in SAMPLES.items():
        assert type(sample) is kind


@pytest.mark.parametrize("sample", list(SAMPLES.values()), ids=lambda m: type(m).__name__)
def test_round_trip(sample: Message) -> None:
    data = encode(sample)
    decoded = decode(data)
    assert type(decoded) is type(sample)
    assert decoded == sample
    assert decode(data.decode()) == sample  # str input too
    assert decode_as(data, type(sample)) == sample
    assert encode(decoded) == data


@pytest.mark.parametrize("sample", list(SAMPLES.values()), ids=lambda m: type(m).__name__)
def test_wire_form_is_tagged_and_keeps_decimals_exact(sample: Message) -> None:
    wire = json.loads(encode(sample))
    assert wire["type"] == type(sample).__name__
    for name in wire:
        value = getattr(sample, name, None)
        if isinstance(value, Decimal):
            assert isinstance(wire[name], str), f"{name} not sent as a string"
            assert Decimal(wire[name]) == value
    # to_builtins (for logs and snapshots) gives the same JSON-ready values.
    assert json.loads(json.dumps(to_builtins(sample))) == wire


def test_small_decimals_and_large_timestamps_survive_unrounded() -> None:
    decoded = decode(encode(QUOTE))
    assert isinstance(decoded, Quote)
    assert decoded.ask_size == Decimal("0.00000001")
    assert str(decoded.bid) == "4999.75"
    assert decoded.ts_ns == TS


def test_decimal_may_arrive_as_a_json_number() -> None:
    wire = json.loads(encode(QUOTE))
    wire["bid"] = 4999.75
    decoded = decode(json.dumps(wire))
    assert isinstance(decoded, Quote) and decoded.bid == Decimal("4999.75")


# ---- garbage ------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _wire(message: Message) -> dict[str, Any]:
    wire: dict[str, Any] = json.loads(encode(message))
    return wire


def _set(**values: Any) -> Mutation:
    def mutate(wire: dict[str, Any]) -> None:
        wire.update(values)

    return mutate


def _drop(name: str) -> Mutation:
    def mutate(wire: dict[str, Any]) -> None:
        del wire[name]

    return mutate


MARKET_ORDER = SubmitOrder(
    client_order_id="c-1", venue="paper", symbol="ESZ5", side=Side.BUY, quantity=Decimal("1")
)
FILL = SAMPLES[OrderFilled]

GARBAGE: list[tuple[str, Message, Mutation, str]] = [
    # non-finite prices
    ("nan bid", QUOTE, _set(bid="NaN"), "bid"),
    ("snan bid", QUOTE, _set(bid="sNaN"), "bid"),
    ("infinite ask", QUOTE, _set(ask="Infinity"), "ask"),
    ("minus infinite trade price", SAMPLES[Trade], _set(price="-Infinity"), "price"),
    ("nan limit price", MARKET_ORDER, _set(order_type="limit", limit_price="NaN"), "limit_price"),
    ("infinite fill price", FILL, _set(price="Infinity"), "price"),
    # negative or zero quantities
    ("negative order quantity", MARKET_ORDER, _set(quantity="-1"), "quantity"),
    ("zero order quantity", MARKET_ORDER, _set(quantity="0"), "quantity"),
    ("negative bid size", QUOTE, _set(bid_size="-0.5"), "bid_size"),
    ("negative fill quantity", FILL, _set(quantity="-1.5"), "quantity"),
    ("negative leaves quantity", FILL, _set(leaves_quantity="-1"), "leaves_quantity"),
    ("zero limit price", MARKET_ORDER, _set(order_type="limit", limit_price="0"), "limit_price"),
    # missing required fields
    ("missing symbol", MARKET_ORDER, _drop("symbol"), "symbol"),
    ("missing quantity", MARKET_ORDER, _drop("quantity"), "quantity"),
    ("missing ask", QUOTE, _drop("ask"), "ask"),
    ("missing fill id", FILL, _drop("fill_id"), "fill_id"),
    ("missing type tag", QUOTE, _drop("type"), "type"),
    # unknown fields
    ("misspelt field", MARKET_ORDER, _set(qty="1"), "qty"),
    ("extra field", QUOTE, _set(spread="0.5"), "spread"),
    # wrong types
    ("bool quantity", MARKET_ORDER, _set(quantity=True), "quantity"),
    ("text sequence number", QUOTE, _set(seq="x"), "seq"),
    ("float sequence number", QUOTE, _set(seq=1.5), "seq"),
    ("unknown side", MARKET_ORDER, _set(side="hold"), "side"),
    ("unknown order type", MARKET_ORDER, _set(order_type="iceberg"), "order_type"),
    ("text flag", MARKET_ORDER, _set(reduce_only="yes"), "reduce_only"),
    ("number venue", MARKET_ORDER, _set(venue=7), "venue"),
    ("unknown message type", QUOTE, _set(type="Teleport"), "type"),
    ("not a decimal", QUOTE, _set(bid="cheap"), "bid"),
    # cross-field rules
    ("limit order without limit price", MARKET_ORDER, _set(order_type="limit"), "limit_price"),
    ("stop order without stop price", MARKET_ORDER, _set(order_type="stop"), "stop_price"),
    ("empty symbol", MARKET_ORDER, _set(symbol=""), "symbol"),
    ("empty client order id", MARKET_ORDER, _set(client_order_id=""), "client_order_id"),
]


@pytest.mark.parametrize(
    ("message", "mutate", "field"), [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE]
)
def test_garbage_is_refused_naming_the_field(message: Message, mutate: Mutation, field: str) -> None:
    wire = _wire(message)
    mutate(wire)
    with pytest.raises(MessageError) as refused:
        decode(json.dumps(wire))
    assert field in str(refused.value)


def test_bad_quote_inside_a_batch_is_refused() -> None:
    wire = _wire(QUOTE)
    batch = {"type": "QuoteBatch", "venue": "paper", "quotes": [dict(wire, bid="NaN")]}
    with pytest.raises(MessageError, match="bid"):
        decode(json.dumps(batch))


def test_book_level_with_negative_size_inside_a_book_is_refused() -> None:
    level = {"type": "BookLevel", "price": "1", "size": "-1"}
    book = {"type": "Book", "venue": "paper", "symbol": "ESZ5", "bids": [level]}
    with pytest.raises(MessageError, match="size"):
        decode(json.dumps(book))


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"", b'{"type": "Quote"', b"[1, 2]", b"null", b"42", b"\xff\xfe", '{"type": "Quote",}'],
    ids=["unquoted key", "empty", "truncated", "array", "null", "number", "not utf-8", "trailing comma"],
)
def test_bad_json_is_refused(data: bytes | str) -> None:
    with pytest.raises(MessageError):
        decode(data)


def test_decode_as_refuses_another_message_type() -> None:
    with pytest.raises(MessageError):
        decode_as(encode(QUOTE), SubmitOrder)


def test_encode_refuses_what_is_not_a_message() -> None:
    with pytest.raises(MessageError):
        encode(object())  # type: ignore[arg-type]


def test_message_error_is_a_value_error() -> None:
    assert issubclass(MessageError, ValueError)
