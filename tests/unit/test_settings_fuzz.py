"""Property-based tests over every setting (hypothesis).

The fields and their ranges are read from the configuration structs themselves
(msgspec.inspect), so a new setting is fuzzed without touching this file. For every leaf
field of a full configuration (every section, one connector of each kind, a strategy):

- a value outside the field's type or range is refused with a ``ConfigError`` whose text
  starts with the field's path, and nothing else is raised;
- values inside every range are accepted;
- arbitrary junk in any section, and arbitrary bytes as a file, give a ``ConfigError`` or
  a configuration, never another exception.

CI runs a few hundred examples per property (a few seconds); set
``TRADEGUARD_FUZZ_EXAMPLES`` (e.g. 20000) for a longer run.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.connectors.plugins import connector_class
from actors.errors import ConfigError
from actors.strategies.sample import SampleConfig
from messages.bounds import DECIMAL_BOUNDS
from tradeguard.settings import LIVE_ENV, LIVE_VALUE, Settings, load_settings, parse_settings

EXAMPLES = int(os.environ.get("TRADEGUARD_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIVE = {LIVE_ENV: LIVE_VALUE}

BASE: dict[str, Any] = {
    "connectors": [
        {"name": "paper", "kind": "paper", "symbols": ["AAPL"]},
        {"name": "zmq", "kind": "zmq"},
        {"name": "fix", "kind": "fix"},
        {"name": "ib", "kind": "ibkr"},
    ],
    "strategies": [{"name": "sample", "venue": "paper", "symbols": ["AAPL"]}],
}

Path_ = tuple[str | int, ...]


def _label(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _unwrap(type_: mi.Type) -> tuple[mi.Type, dict[str, str], bool]:
    """The type under metadata and ``| None``, its Decimal bounds, and whether None is allowed."""
    bounds: dict[str, str] = {}
    optional = False
    while True:
        if isinstance(type_, mi.Metadata):
            bounds.update((type_.extra or {}).get(DECIMAL_BOUNDS, {}))
            type_ = type_.type
        elif isinstance(type_, mi.UnionType):
            optional = any(isinstance(t, mi.NoneType) for t in type_.types)
            [type_] = [t for t in type_.types if not isinstance(t, mi.NoneType)]
        else:
            return type_, bounds, optional


def _leaves(struct: type[msgspec.Struct], path: Path_) -> Iterator[tuple[Path_, mi.Type]]:
    info = mi.type_info(struct)
    assert isinstance(info, mi.StructType)
    for field in info.fields:
        inner, _, _ = _unwrap(field.type)
        if isinstance(inner, mi.StructType):
            yield from _leaves(inner.cls, (*path, field.name))
        else:
            yield (*path, field.name), field.type


def _catalogue() -> list[tuple[Path_, mi.Type]]:
    fields: list[tuple[Path_, mi.Type]] = []
    info = mi.type_info(Settings)
    assert isinstance(info, mi.StructType)
    for field in info.fields:
        inner, _, _ = _unwrap(field.type)
        if isinstance(inner, mi.StructType):
            fields.extend(_leaves(inner.cls, (field.name,)))
    for index, section in enumerate(BASE["connectors"]):
        fields.extend(leaf for leaf in _leaves(connector_class(section["kind"]).config_type,
                                               ("connectors", index)) if leaf[0][-1] != "kind")
    fields.extend(_leaves(SampleConfig, ("strategies", 0)))
    return fields


FIELDS = _catalogue()
FIELD_NAMES = [_label(path) for path, _ in FIELDS]


def _with(path: Path_, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    node: Any = data
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
    node[path[-1]] = value
    return data


# --- values outside a field's type or range ------------------------------------------------

JUNK_TYPES = st.sampled_from([{"a": 1}, [1, 2], "text", 1.5, True])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
NON_FINITE_DECIMAL = st.sampled_from(["NaN", "-NaN", "sNaN", "Infinity", "-inf", "1e999999999",
                                      "1e-999999999", "1e16", "-1e16"])


def _decimal_outside(bounds: dict[str, str]) -> st.SearchStrategy[str]:
    options: list[st.SearchStrategy[str]] = [NON_FINITE_DECIMAL]
    for key, limit in bounds.items():
        bound = Decimal(limit)
        if key in ("ge", "gt"):
            below = st.decimals(max_value=bound, allow_nan=False, allow_infinity=False, places=3)
            options.append(below.filter(lambda d, b=bound, k=key: d < b or (k == "gt" and d == b))
                           .map(str))
        else:
            above = st.decimals(min_value=bound, max_value=bound + 10**9, allow_nan=False,
                                allow_infinity=False, places=3)
            options.append(above.filter(lambda d, b=bound, k=key: d > b or (k == "lt" and d == b))
                           .map(str))
    return st.one_of(options)


def _bad(type_: mi.Type) -> st.SearchStrategy[Any] | None:
    inner, bounds, _ = _unwrap(type_)
    if isinstance(inner, mi.BoolType):
        return st.sampled_from(["yes", 1, 0.0, [True]])
    if isinstance(inner, mi.IntType):
        options: list[st.SearchStrategy[Any]] = [st.sampled_from(["3", 2.5, [1], {"a": 1}])]
        if inner.ge is not None:
            options.append(st.integers(max_value=inner.ge - 1, min_value=inner.ge - 10**12))
        if inner.le is not None:
            options.append(st.integers(min_value=inner.le + 1, max_value=2**62))
        return st.one_of(options)
    if isinstance(inner, mi.FloatType):
        options = [NON_FINITE, st.sampled_from(["1.0", [1.0], {"a": 1.0}])]
        if inner.ge is not None:
            options.append(st.floats(max_value=inner.ge, exclude_max=True, allow_nan=False,
                                     allow_infinity=False, min_value=-1e12))
        if inner.le is not None:
            options.append(st.floats(min_value=inner.le, exclude_min=True, allow_nan=False,
                                     allow_infinity=False, max_value=1e300))
        return st.one_of(options)
    if isinstance(inner, mi.DecimalType):
        return st.one_of(_decimal_outside(bounds), st.sampled_from(["lots", "", [1], {"a": "1"}]))
    if isinstance(inner, mi.LiteralType):
        return st.one_of(st.text(max_size=12).filter(lambda s: s not in inner.values), JUNK_TYPES)
    if isinstance(inner, mi.StrType):
        options = [st.sampled_from([1, [], {"a": "b"}]),
                   st.text(max_size=8).map(lambda s: s + "\x00"), st.just("a\nb")]
        if inner.pattern is not None:
            regex = re.compile(inner.pattern)
            options.append(st.text(max_size=20).filter(lambda s: not regex.search(s)))
        if inner.max_length is not None:
            options.append(st.just("A" * (inner.max_length + 1)))
        if inner.min_length:
            options.append(st.just(""))
        return st.one_of(options)
    if isinstance(inner, mi.VarTupleType):
        item = _bad(inner.item_type)
        return None if item is None else st.lists(item, min_size=1, max_size=3)
    return None  # dicts are fuzzed by the junk property


BAD = [(path, strategy) for path, type_ in FIELDS if (strategy := _bad(type_)) is not None]


def test_the_catalogue_covers_every_section() -> None:
    sections = {str(path[0]) for path, _ in BAD}
    assert sections >= {"service", "risk", "safety", "keeper", "failsafe", "supervision", "dashboard",
                        "connectors", "strategies"}
    kinds = {path[1] for path, _ in BAD if path[0] == "connectors"}
    assert kinds == {0, 1, 2, 3}
    assert len(BAD) > 100


@FUZZ
@given(st.data())
def test_a_bad_value_is_refused_naming_its_field(data: st.DataObject) -> None:
    path, strategy = data.draw(st.sampled_from(BAD), label="field")
    value = data.draw(strategy, label="value")
    with pytest.raises(ConfigError) as refused:
        parse_settings(_with(path, value), environ=LIVE)
    label = _label(path)
    text = str(refused.value)
    assert text.startswith(label) and text[len(label)] in ":[.", (label, value, text)


# --- values inside every range -------------------------------------------------------------

def _good(type_: mi.Type) -> st.SearchStrategy[Any] | None:
    inner, bounds, optional = _unwrap(type_)
    strategy: st.SearchStrategy[Any] | None = None
    if isinstance(inner, mi.BoolType):
        strategy = st.booleans()
    elif isinstance(inner, mi.IntType) and (inner.ge is not None or inner.le is not None):
        strategy = st.integers(min_value=inner.ge if inner.ge is not None else -(2**63),
                               max_value=inner.le if inner.le is not None else 2**63 - 1)
    elif isinstance(inner, mi.FloatType) and inner.le is not None:
        strategy = st.floats(min_value=inner.ge if inner.ge is not None else inner.gt,
                             max_value=inner.le, exclude_min=inner.ge is None,
                             allow_nan=False, allow_infinity=False)
    elif isinstance(inner, mi.DecimalType) and bounds:
        low = Decimal(bounds.get("ge", bounds.get("gt", "0")))
        high = Decimal(bounds.get("le", bounds.get("lt", "1e15")))
        strategy = (st.decimals(min_value=low, max_value=high, places=6, allow_nan=False,
                                allow_infinity=False)
                    .filter(lambda d: ("gt" not in bounds or d > low) and ("lt" not in bounds or d < high))
                    .filter(lambda d: d == 0 or abs(d) >= Decimal("1e-12"))
                    .map(str))
    elif isinstance(inner, mi.LiteralType):
        strategy = st.sampled_from(inner.values)
    if strategy is not None and optional:
        strategy = st.one_of(strategy, st.none())
    return strategy


# Names refer to each other and the paper symbols to the paper engine: other tests cover
# them with examples; here they keep their base values.
GOOD = [(path, strategy) for path, type_ in FIELDS if (strategy := _good(type_)) is not None]


def _none_to_absent(data: dict[str, Any], path: Path_, value: Any) -> dict[str, Any]:
    if value is None:  # TOML has no null: a None means the field is left out (its default)
        return data
    node: Any = data
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
    node[path[-1]] = value
    return data


@FUZZ
@given(st.data())
def test_values_inside_every_range_are_accepted(data: st.DataObject) -> None:
    chosen = data.draw(st.lists(st.sampled_from(GOOD), min_size=1, max_size=12,
                                unique_by=lambda item: item[0]), label="fields")
    config = copy.deepcopy(BASE)
    for path, strategy in chosen:
        _none_to_absent(config, path, data.draw(strategy, label=_label(path)))
    # Cross-field rules (a backoff's first delay at most its cap): keep the pair ordered.
    for section, initial, cap in (("supervision", 0.5, 30.0), ("failsafe", 0.25, 5.0)):
        part = config.get(section, {})
        if "backoff_initial_s" in part or "backoff_max_s" in part:
            low, high = sorted((part.get("backoff_initial_s", initial), part.get("backoff_max_s", cap)))
            part.update(backoff_initial_s=low, backoff_max_s=high)
    accepted = msgspec.to_builtins(parse_settings(config, environ=LIVE))
    for path, _ in chosen:  # every chosen value is in the accepted configuration
        node: Any = config
        for part in path:
            node = node.get(part) if isinstance(node, dict) else node[part]
            if node is None:
                break  # left out: the default applies
        if node is not None:
            got: Any = accepted
            for part in path:
                got = got[part]
            assert str(got) == str(node) or float(got) == float(node), (_label(path), got, node)


def test_good_values_cover_numbers_and_enums_of_every_section() -> None:
    labels = {_label(path) for path, _ in GOOD}
    for expected in ("service.log_level", "service.shutdown_timeout_s", "risk.max_position",
                     "safety.spread_alpha", "failsafe.max_attempts", "connectors[3].port",
                     "connectors[0].engine.tick_size", "strategies[0].quantity"):
        assert expected in labels


# --- junk anywhere -------------------------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
                    st.sampled_from(["NaN", "sNaN", "-Infinity", "1e999999999", "0", "-1"]))
JUNK = st.recursive(SCALARS.filter(lambda v: v is not None),
                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                    max_leaves=8)
SECTIONS = st.sampled_from(["service", "risk", "safety", "keeper", "failsafe", "supervision",
                            "dashboard", "connectors", "strategies", "bogus"])


@FUZZ
@given(SECTIONS, JUNK, st.data())
def test_junk_in_any_section_is_a_config_error_or_accepted(section: str, junk: Any,
                                                          data: st.DataObject) -> None:
    config = copy.deepcopy(BASE)
    if section in ("connectors", "strategies") and isinstance(junk, dict) and data.draw(st.booleans()):
        config[section][0].update(junk)
    elif section not in ("connectors", "strategies") and isinstance(junk, dict):
        config[section] = junk
    else:
        config[section] = junk
    try:
        parse_settings(config, environ=LIVE)
    except ConfigError as exc:
        assert str(exc).strip()


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-16")))
def test_any_bytes_as_a_file_are_a_config_error_or_accepted(tmp_path_factory: pytest.TempPathFactory,
                                                            content: bytes) -> None:
    path: Path = tmp_path_factory.mktemp("bytes") / "config.toml"
    path.write_bytes(content)
    try:
        load_settings(path, environ={})
    except ConfigError as exc:
        assert str(exc).strip()
