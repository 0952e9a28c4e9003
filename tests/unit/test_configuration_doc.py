"""docs/configuration.md states every setting's range as the structs declare it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import msgspec
import msgspec.inspect as mi
import pytest

from actors.connectors.base import ConnectorConfig
from actors.connectors.fix import FixConfig
from actors.connectors.ibkr import IbkrConfig
from actors.connectors.paper import PaperConfig
from actors.connectors.zmq import ZmqConfig
from actors.dashboard import DashboardConfig
from actors.failsafe import FailsafeConfig
from actors.position_keeper import KeeperConfig
from actors.risk_governor import RiskConfig
from actors.safety_monitor import SafetyConfig
from actors.strategies.base import StrategyConfig
from actors.strategies.sample import SampleConfig
from messages.bounds import DECIMAL_BOUNDS
from tradeguard.settings import ServiceConfig, SupervisionConfig
from venues.engine import AnomalyConfig, EngineConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

SECTIONS: dict[str, type[msgspec.Struct]] = {
    "[service]": ServiceConfig,
    "[risk]": RiskConfig,
    "[safety]": SafetyConfig,
    "[keeper]": KeeperConfig,
    "[failsafe]": FailsafeConfig,
    "[supervision]": SupervisionConfig,
    "[dashboard]": DashboardConfig,
    "[[connectors]] (every kind)": ConnectorConfig,
    '[[connectors]] kind = "paper"': PaperConfig,
    '[connectors.engine] (kind = "paper")': EngineConfig,
    '[connectors.engine.anomalies] (kind = "paper")': AnomalyConfig,
    '[[connectors]] kind = "zmq"': ZmqConfig,
    '[[connectors]] kind = "fix"': FixConfig,
    '[[connectors]] kind = "ibkr"': IbkrConfig,
    "[[strategies]] (every kind)": StrategyConfig,
    '[[strategies]] kind = "sample"': SampleConfig,
}

PATTERNS = {
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*$": "a name: letters, digits, `_` `.` `-`, not starting with `_` `.` `-`",
    r"^[!-~]+( [!-~]+)*$": "printable ASCII, single inner spaces",
    r"^[!-~]*$": "printable ASCII, no spaces",
    r"^[A-Za-z0-9_.:\[\]-]+$": "a host name or IP address",
    r"^(tcp://[A-Za-z0-9_.:\[\]*-]+:[0-9]{1,5}|ipc://[!-~]+)$": "`tcp://HOST:PORT` or `ipc://PATH`",
    r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$": "a file name (no directory part)",
    r"^(?!/)(?!.*(^|/)\.\.(/|$))[A-Za-z0-9_./-]+$": "a relative path without `..`",
    r"^([01][0-9]|2[0-3]):[0-5][0-9]$": "`HH:MM`, 00:00 to 23:59",
}


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(type_: mi.Type) -> str:
    """A field's type and range in words, as the documentation shows it."""
    bounds: dict[str, str] = {}
    optional = False
    while isinstance(type_, mi.Metadata | mi.UnionType):
        if isinstance(type_, mi.Metadata):
            bounds.update((type_.extra or {}).get(DECIMAL_BOUNDS, {}))
            type_ = type_.type
        else:
            optional = True
            [type_] = [t for t in type_.types if not isinstance(t, mi.NoneType)]
    text = _describe(type_, bounds)
    return text + " (0 switches it off)" if optional and ("≥ 0" in text) else text


def _limits(low: tuple[str, object] | None, high: tuple[str, object] | None) -> str:
    parts = [f"{limit[0]} {_number(limit[1])}" for limit in (low, high) if limit is not None]
    return ", ".join(parts)


def _describe(type_: mi.Type, bounds: dict[str, str]) -> str:
    if isinstance(type_, mi.BoolType):
        return "true or false"
    if isinstance(type_, mi.IntType | mi.FloatType):
        kind = "integer" if isinstance(type_, mi.IntType) else "number"
        low = ("≥", type_.ge) if type_.ge is not None else (">", type_.gt)
        high = ("≤", type_.le) if type_.le is not None else ("<", type_.lt)
        limits = _limits(low if low[1] is not None else None, high if high[1] is not None else None)
        return f"{kind} {limits}" if limits else kind
    if isinstance(type_, mi.DecimalType):
        low = ("≥", bounds["ge"]) if "ge" in bounds else ((">", bounds["gt"]) if "gt" in bounds else None)
        high = ("≤", bounds["le"]) if "le" in bounds else (("<", bounds["lt"]) if "lt" in bounds else None)
        return f"decimal {_limits(low, high)}".rstrip()
    if isinstance(type_, mi.LiteralType):
        return "one of " + ", ".join(f"`{v}`" for v in type_.values)
    if isinstance(type_, mi.StrType):
        parts = [PATTERNS[type_.pattern] if type_.pattern else "text"]
        if type_.min_length:
            parts.append("not empty")
        if type_.max_length:
            parts.append(f"at most {type_.max_length} characters")
        return ", ".join(parts)
    if isinstance(type_, mi.VarTupleType):
        text = f"list of {describe(type_.item_type)}"
        return text + ", at least one" if type_.min_length else text
    if isinstance(type_, mi.DictType):
        return f"table of ({describe(type_.key_type)}) = ({describe(type_.value_type)})"
    if isinstance(type_, mi.StructType):
        return "table (below)"
    return "text"


def _own_fields(cls: type[msgspec.Struct]) -> list[mi.Field]:
    """The fields a class declares itself (a connector kind's table leaves out the common ones)."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    own = inspect.get_annotations(cls)
    return [f for f in info.fields if f.name in own]


def expected_rows() -> dict[str, dict[str, str]]:
    """Section heading -> field -> range text."""
    return {heading: {f.name: describe(f.type) for f in _own_fields(cls)}
            for heading, cls in SECTIONS.items()}


def _documented() -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), {})
        elif current is not None and line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            assert len(cells) == 4, f"a row is field | default | range | meaning: {line}"
            current[cells[0].strip("`")] = cells[2]
    return sections


@pytest.mark.parametrize("heading", sorted(SECTIONS))
def test_every_field_is_documented_with_its_range(heading: str) -> None:
    documented = _documented()
    assert heading in documented, f"no section '## {heading}' in {DOC.name}"
    for field, text in expected_rows()[heading].items():
        assert field in documented[heading], f"{heading} {field} is not documented"
        assert documented[heading][field] == text, (heading, field)


def test_no_documented_field_is_unknown() -> None:
    expected = expected_rows()
    for heading, fields in _documented().items():
        if heading in expected:
            assert set(fields) <= set(expected[heading]), (heading, set(fields) - set(expected[heading]))


def test_the_range_words_cover_every_pattern() -> None:
    for fields in expected_rows().values():
        for text in fields.values():
            assert not re.search(r"\^|\$", text), text
