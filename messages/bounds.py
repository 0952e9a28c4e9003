"""Bounded field types for configuration records.

Every setting has a type and a range: these aliases state the common ones once. Numeric
``int`` and ``float`` ranges are msgspec ``Meta`` constraints, checked while a file is
decoded (NaN fails every range, and every float range has an upper bound, so infinity
fails too). msgspec has no ranges for ``Decimal``: ``decimal_range`` records the bounds in
the field's metadata (``extra``) and the settings loader checks them after decoding,
with the same wording. A field typed with one of these is refused with its path.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from msgspec import Meta

__all__ = [
    "DECIMAL_BOUNDS",
    "DECIMAL_MAGNITUDE",
    "DECIMAL_RESOLUTION",
    "Amount",
    "Count",
    "Duration",
    "Endpoint",
    "FileName",
    "Host",
    "Interval",
    "Label",
    "Name",
    "OffDuration",
    "Port",
    "PositiveAmount",
    "Probability",
    "RelativePath",
    "Symbol",
    "Tally",
    "decimal_range",
]

DECIMAL_BOUNDS = "decimal_bounds"
"""Key of a Decimal field's bounds in its ``Meta.extra``."""
DECIMAL_MAGNITUDE = Decimal("1e15")
"""No decimal setting is larger than this in magnitude (every Decimal, bounded or not)."""
DECIMAL_RESOLUTION = Decimal("1e-12")
"""No non-zero decimal setting is smaller than this in magnitude."""

DAY_S = 86_400.0
HOUR_S = 3_600.0


def decimal_range(*, gt: Decimal | int | None = None, ge: Decimal | int | None = None,
                  lt: Decimal | int | None = None, le: Decimal | int | None = None,
                  description: str | None = None) -> Meta:
    """Bounds of a ``Decimal`` field, checked by the settings loader after decoding."""
    bounds: dict[str, Any] = {
        key: str(Decimal(value)) for key, value in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le))
        if value is not None
    }
    return Meta(extra={DECIMAL_BOUNDS: bounds}, description=description)


Interval = Annotated[float, Meta(ge=0.001, le=HOUR_S)]
"""A timer's period in seconds: at least a millisecond (no busy loop), at most an hour."""
Duration = Annotated[float, Meta(ge=0.001, le=DAY_S)]
"""A timeout or a window in seconds: at least a millisecond, at most a day."""
OffDuration = Annotated[float, Meta(ge=0.0, le=DAY_S)]
"""Seconds, where 0 switches the thing off; at most a day."""
Count = Annotated[int, Meta(ge=1, le=1_000_000_000)]
"""A positive count."""
Tally = Annotated[int, Meta(ge=0, le=1_000_000_000)]
"""A count where 0 is meaningful (a limit of 0 switches its check off)."""
Port = Annotated[int, Meta(ge=1, le=65_535)]
"""A TCP port."""
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
"""A chance or a share, from 0 to 1."""

Amount = Annotated[Decimal, decimal_range(ge=0, le=DECIMAL_MAGNITUDE)]
"""A quantity or an amount of money, not negative (a limit of 0 switches its check off)."""
PositiveAmount = Annotated[Decimal, decimal_range(gt=0, le=DECIMAL_MAGNITUDE)]
"""A quantity or an amount of money above 0."""

Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
"""A name other settings refer to (a connector, a strategy): letters, digits, ``_ . -``,
not starting with a punctuation mark; it also names files under the state directory."""
Symbol = Annotated[str, Meta(pattern=r"^[!-~]+( [!-~]+)*$", max_length=32)]
"""An instrument symbol: printable ASCII, single inner spaces allowed."""
Label = Annotated[str, Meta(pattern=r"^[!-~]*$", max_length=64)]
"""An identifier sent to a venue (an account, a CompID, a currency): printable ASCII, no
spaces; may be empty where the field says so."""
Host = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:\[\]-]+$", max_length=255)]
"""A host name or an IP address."""
Endpoint = Annotated[str, Meta(pattern=r"^(tcp://[A-Za-z0-9_.:\[\]*-]+:[0-9]{1,5}|ipc://[!-~]+)$",
                               max_length=255)]
"""A ZeroMQ endpoint: ``tcp://host:port`` or ``ipc://path``."""
FileName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$", max_length=255)]
"""A plain file name (no directory part)."""
RelativePath = Annotated[str, Meta(pattern=r"^(?!/)(?!.*(^|/)\.\.(/|$))[A-Za-z0-9_./-]+$",
                                   max_length=255)]
"""A path relative to a state directory, without ``..``."""
