"""JSON codec for messages on the wire and in logs.

One decoder reads any message (the ``type`` tag picks the class). Every failure, whether
bad JSON, a missing field, a wrong type, NaN, infinity or an absurd magnitude, a negative
quantity, or text that is not valid Unicode, is raised as ``MessageError`` whose text names
the bad field.
"""

from __future__ import annotations

from typing import Any, TypeVar, Union

import msgspec

from messages import control, market, orders, portfolio
from messages._base import Message, MessageError

T = TypeVar("T")


def _message_types() -> tuple[type[Message], ...]:
    found: list[type[Message]] = []
    for module in (market, orders, control, portfolio):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Message) and value is not Message:
                found.append(value)
    return tuple(found)


MESSAGE_TYPES: tuple[type[Message], ...] = _message_types()
"""Every message class the codec knows."""

AnyMessage: Any = Union[MESSAGE_TYPES]  # noqa: UP007 - a Union built at run time

_encoder = msgspec.json.Encoder(decimal_format="string")
_any_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AnyMessage)


def encode(message: Message) -> bytes:
    """Encode one message as JSON bytes (decimals as strings, so nothing is rounded)."""
    try:
        return _encoder.encode(message)
    except (TypeError, ValueError, OverflowError) as exc:
        raise MessageError(str(exc)) from exc


def decode(data: bytes | str) -> Message:
    """Decode any message; the ``type`` field picks the class."""
    try:
        result: Message = _any_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MessageError(str(exc)) from exc
    except UnicodeEncodeError as exc:  # a str holding lone surrogates: not text at all
        raise _not_text(exc) from None
    return result


def decode_as(data: bytes | str, kind: type[T]) -> T:
    """Decode data that must be a ``kind``."""
    try:
        return msgspec.json.decode(data, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MessageError(str(exc)) from exc
    except UnicodeEncodeError as exc:
        raise _not_text(exc) from None


def _not_text(exc: UnicodeEncodeError) -> MessageError:
    return MessageError(f"input is not valid Unicode text: lone surrogate at position {exc.start}")


def to_builtins(message: Message) -> Any:
    """The message as plain JSON-ready Python values (for logs and snapshots)."""
    return msgspec.to_builtins(message)
