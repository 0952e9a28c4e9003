"""Property-based fuzzing of the wire codec: whatever arrives, ``decode`` either returns a
message whose every value tradeguard can compute with, store and log, or raises
``MessageError``; nothing else escapes.

Bounded to a few seconds by default; ``TRADEGUARD_FUZZ_EXAMPLES=20000`` (say) runs longer.
"""

from __future__ import annotations

import json
import os
import sqlite3
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messages import MAX_DECIMAL, MAX_PRICE, Message, MessageError, decode, encode
from tests.messages.samples import SAMPLES

EXAMPLES = int(os.environ.get("TRADEGUARD_FUZZ_EXAMPLES", "300"))
"""Examples per property (hypothesis ``max_examples``)."""

pytestmark = pytest.mark.timeout(60 + EXAMPLES // 10)  # a longer run gets a longer deadline

FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NASTY_NUMBERS = [
    "NaN", "-NaN", "sNaN", "Infinity", "-inf", "1e999999999", "-1e999999999", "1e-999999999",
    "0E+999999999", "1" + "0" * 400, "0." + "0" * 400 + "1", "1e30", "-0", "0E-18", "1e-18",
    "999999999999.999999999999999999", "12", "-3.5",
]
NASTY_TEXTS = ["", "\ud800", "a\udfffb", "\U0001f600", "\x00", "line\nforged", "x" * 1000, "é"]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(NASTY_NUMBERS), st.sampled_from(NASTY_TEXTS), st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Raw JSON tokens json.dumps cannot produce: numbers beyond a float, and escapes of lone surrogates.
raw_tokens = st.sampled_from(
    ["1e999999999", "-1e999999999", "1e-999999999", "1e400", str(2**64), "1" + "0" * 400,
     '"\\ud800"', '"\\udc00x"', "NaN", "Infinity"]
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def assert_usable(message: Message) -> None:
    """Every value of ``message`` survives what tradeguard does with it: arithmetic in the
    core, a journal row in SQLite, a log line, and the wire again."""
    assert decode(encode(message)) == message
    db = sqlite3.connect(":memory:")
    for name in message.__struct_fields__:
        value = getattr(message, name)
        if isinstance(value, Message):
            assert_usable(value)
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, Message):
                    assert_usable(item)
        elif isinstance(value, Decimal):
            assert value.is_finite() and abs(value) < MAX_DECIMAL
            # What the core computes from such values (mids, notionals, averages, ratios)
            # is finite: nothing raises decimal.Overflow or InvalidOperation.
            for result in ((value + value) / 2, value * MAX_PRICE, value / 3, MAX_PRICE / (value or 1)):
                assert result.is_finite()
            db.execute("SELECT ?", (str(value),))
        elif isinstance(value, int):
            db.execute("SELECT ?", (value,))
        elif isinstance(value, str):
            db.execute("SELECT ?", (value,))
            value.encode("utf-8")
    db.close()


def decode_or_refuse(data: bytes | str) -> None:
    try:
        message = decode(data)
    except MessageError:
        return
    assert_usable(message)


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    decode_or_refuse(data)


@FUZZ
@given(st.sampled_from(list(SAMPLES.values())), st.data())
def test_a_valid_message_with_one_value_replaced(sample: Message, data: st.DataObject) -> None:
    wire = json.loads(encode(sample))
    path = data.draw(st.sampled_from(_paths(wire)))
    _set(wire, path, data.draw(json_values))
    decode_or_refuse(json.dumps(wire))


@FUZZ
@given(st.sampled_from(list(SAMPLES.values())), st.data())
def test_a_valid_message_with_one_raw_token_spliced_in(sample: Message, data: st.DataObject) -> None:
    wire = json.loads(encode(sample))
    path = data.draw(st.sampled_from(_paths(wire)))
    _set(wire, path, "@@TOKEN@@")
    decode_or_refuse(json.dumps(wire).replace('"@@TOKEN@@"', data.draw(raw_tokens)))


@FUZZ
@given(st.sampled_from(list(SAMPLES.values())), st.integers(min_value=0), st.binary(min_size=1, max_size=4))
def test_a_valid_message_with_bytes_overwritten(sample: Message, at: int, junk: bytes) -> None:
    data = bytearray(encode(sample))
    start = at % len(data)
    data[start:start + len(junk)] = junk
    decode_or_refuse(bytes(data))


@pytest.mark.parametrize("depth", [10, 1000, 100_000])
def test_deep_nesting_is_refused_not_a_crash(depth: int) -> None:
    decode_or_refuse("[" * depth + "]" * depth)
    decode_or_refuse('{"type": "QuoteBatch", "venue": "v", "quotes": ' + "[" * depth + "]" * depth + "}")
