"""The configuration schema: TOML decoded into typed structs, refused before anything
starts when any field is wrong, with the path of the bad field in the error."""

from __future__ import annotations

import functools
import math
import os
import re
import tomllib
from decimal import Decimal
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect as mi
from msgspec import Meta

from actors.connectors.base import ConnectorConfig
from actors.connectors.plugins import connector_class
from actors.dashboard import DashboardConfig
from actors.errors import ConfigError
from actors.failsafe import FailsafeConfig
from actors.order_entry.config import OrderEntryConfig, check_order_entry
from actors.position_keeper import KeeperConfig
from actors.risk_governor import RiskConfig
from actors.safety_monitor import SafetyConfig
from actors.strategies import DEFAULT_KIND, StrategyConfig, strategy_class
from messages.bounds import (
    DECIMAL_BOUNDS,
    DECIMAL_MAGNITUDE,
    DECIMAL_RESOLUTION,
    Duration,
    Interval,
    Tally,
)

LIVE_ENV = "TRADEGUARD_LIVE"
"""Live trading needs ``mode = "live"`` in the file AND this variable set to ``LIVE_VALUE``."""
LIVE_VALUE = "I-UNDERSTAND-REAL-MONEY"
STATE_DIR_ENV = "TRADEGUARD_STATE_DIR"
"""Overrides the state directory (the command line's ``--state-dir`` overrides both)."""

DEFAULT_CONFIG: Traversable = resources.files("tradeguard").joinpath("paper.toml")
"""The embedded default, shipped inside the package: the paper venue with the sample
strategy. ``config/paper.toml`` in the source tree is the same file, as an example."""
MAX_CONFIG_BYTES = 1 << 20
"""A configuration file larger than this is refused unread."""

RESERVED_NAMES = frozenset({
    "root", "position_keeper", "risk_governor", "failsafe", "safety_monitor", "connectors",
    "strategies", "dashboard", "order_entry", "client_api", "fix_gateway",
})


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ServiceConfig(_Strict, frozen=True, kw_only=True):
    """The process as a whole."""

    mode: Literal["paper", "live"] = "paper"
    """``live`` also needs the environment flag TRADEGUARD_LIVE (see the operations guide)."""
    state_dir: Annotated[str, Meta(min_length=1, max_length=4096)] = "./state"
    """Journal, sockets, logs and incident reports. Overridden by TRADEGUARD_STATE_DIR and
    by ``--state-dir``."""
    on_shutdown: Literal["leave", "cancel", "flatten"] = "cancel"
    """On SIGTERM: leave orders and positions, cancel every working order, or flatten."""
    shutdown_timeout_s: Annotated[float, Meta(ge=0.1, le=3600.0)] = 20.0
    """Longest a graceful stop (including a shutdown flatten) may take."""
    log_level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Level of the stderr and file logs."""
    start_timeout_s: Annotated[float, Meta(ge=0.1, le=3600.0)] = 30.0
    """Longest the start barrier may take."""


class SupervisionConfig(_Strict, frozen=True, kw_only=True):
    """Restart policy of the tree."""

    connectors_intensity: Tally = 10
    """Connector restarts within ``connectors_period_s`` before the connectors supervisor
    gives up (which triggers FAILSAFE)."""
    connectors_period_s: Duration = 60.0
    """Window of ``connectors_intensity``."""
    root_intensity: Tally = 5
    """Restarts of the root's children within ``root_period_s`` before the process gives up."""
    root_period_s: Duration = 60.0
    """Window of ``root_intensity``."""
    backoff_initial_s: Annotated[float, Meta(ge=0.001, le=3600.0)] = 0.5
    """First restart delay."""
    backoff_max_s: Annotated[float, Meta(ge=0.001, le=3600.0)] = 30.0
    """Cap on a restart delay."""
    backoff_multiplier: Annotated[float, Meta(ge=1.0, le=100.0)] = 2.0
    """Growth of the delay per consecutive restart."""
    backoff_jitter_s: Annotated[float, Meta(ge=0.0, le=3600.0)] = 0.25
    """Random jitter added to each delay."""
    reset_after_s: Duration = 30.0
    """A child up this long starts again from the first delay."""
    heartbeat_s: Interval = 2.0
    """Heartbeat period for the core actors (a hung actor is replaced)."""
    heartbeat_timeout_s: Duration = 5.0
    """How long a heartbeat may go unanswered."""


class Settings(_Strict, frozen=True, kw_only=True):
    """A whole configuration file."""

    service: ServiceConfig = ServiceConfig()
    risk: RiskConfig = RiskConfig()
    safety: SafetyConfig = SafetyConfig()
    keeper: KeeperConfig = KeeperConfig()
    failsafe: FailsafeConfig = FailsafeConfig()
    supervision: SupervisionConfig = SupervisionConfig()
    dashboard: DashboardConfig = DashboardConfig()
    connectors: tuple[Any, ...] = ()
    """Connector sections (decoded by their kind's own config type)."""
    strategies: tuple[Any, ...] = ()
    """In-process order sources (decoded by their kind's own config type; the kind defaults
    to ``sample``)."""
    order_entry: OrderEntryConfig = OrderEntryConfig()
    """Order sources outside the process: the client API and the FIX gateway (both off by default)."""

    def connector_configs(self) -> tuple[ConnectorConfig, ...]:
        """The connector sections, typed."""
        return tuple(c for c in self.connectors if isinstance(c, ConnectorConfig))

    def strategy_configs(self) -> tuple[StrategyConfig, ...]:
        """The strategy sections, typed."""
        return tuple(s for s in self.strategies if isinstance(s, StrategyConfig))

    def venues(self) -> dict[str, tuple[str, ...]]:
        """Connector name to its symbols."""
        return {c.name: tuple(c.symbols) for c in self.connector_configs()}


_PATH = re.compile(r" - at `\$(.*)`")
_FIELD_FIRST = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*): (.*)$", re.S)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _join(prefix: str, path: str) -> str:
    if not path:
        return prefix
    if path.startswith("["):
        return prefix + path
    return f"{prefix}.{path}" if prefix else path


def _error(prefix: str, exc: msgspec.ValidationError) -> ConfigError:
    """A msgspec error as ``path.of.field: what is wrong``.

    A struct's own check (``__post_init__``) names its field at the start of its message;
    that name is joined to the struct's path."""
    text = str(exc)
    match = _PATH.search(text)
    path = _join(prefix, match.group(1).lstrip(".") if match else "")
    message = _PATH.sub("", text).strip()
    inner = _FIELD_FIRST.match(message)
    if inner:
        path, message = _join(path, inner.group(1)), inner.group(2)
    return ConfigError(f"{path or '(top level)'}: {message}")


def _convert(data: Any, type_: type[Any], prefix: str) -> Any:
    """``msgspec.convert`` with every failure turned into a ``ConfigError`` with a path."""
    try:
        return msgspec.convert(data, type=type_)
    except msgspec.ValidationError as exc:
        error = _error(prefix, exc)
        where = str(error).split(": ", 1)[0]
        found = _first_non_finite(data, prefix)
        if found and found.startswith(where) and found[len(where):][:1] in (".", "["):
            # A struct's own check refused a NaN without naming it: name it.
            raise ConfigError(f"{found}: not a finite number") from exc
        raise error from exc
    except (ArithmeticError, ValueError, TypeError) as exc:
        # A struct's own check choked on a value (a NaN decimal compared): find it.
        found = _first_non_finite(data, prefix)
        if found:
            raise ConfigError(f"{found}: not a finite number") from exc
        raise ConfigError(f"{prefix or '(top level)'}: invalid ({type(exc).__name__}: {exc})") from exc


def _first_non_finite(data: Any, path: str) -> str | None:
    """Path of the first NaN or infinite number (or decimal string) in raw TOML data."""
    if isinstance(data, dict):
        for key, value in data.items():
            found = _first_non_finite(value, _join(path, str(key)))
            if found:
                return found
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found = _first_non_finite(value, f"{path}[{index}]")
            if found:
                return found
    elif isinstance(data, float) and not math.isfinite(data):
        return path
    elif isinstance(data, str):
        try:
            if not Decimal(data).is_finite():
                return path
        except ArithmeticError:
            pass
    return None


def parse_settings(data: dict[str, Any], *, environ: dict[str, str] | None = None) -> Settings:
    """Decode and check a configuration; raises ``ConfigError`` naming the bad field.

    This is the only way a configuration is accepted: ``run`` and ``check-config`` both
    come through here. It checks types, every field's range, that every name refers to
    something, and the live-trading flag."""
    environ = dict(os.environ) if environ is None else environ
    if not isinstance(data, dict):
        raise ConfigError("(top level): expected a table")
    raw = dict(data)
    raw_connectors = raw.pop("connectors", [])
    if not isinstance(raw_connectors, list):
        raise ConfigError("connectors: expected an array of tables ([[connectors]])")
    raw_strategies = raw.pop("strategies", [])
    if not isinstance(raw_strategies, list):
        raise ConfigError("strategies: expected an array of tables ([[strategies]])")
    settings: Settings = _convert(raw, Settings, "")
    connectors: list[ConnectorConfig] = []
    for index, section in enumerate(raw_connectors):
        where = f"connectors[{index}]"
        if not isinstance(section, dict) or "kind" not in section:
            raise ConfigError(f"{where}.kind: every connector needs a kind")
        if not isinstance(section["kind"], str):
            raise ConfigError(f"{where}.kind: expected a string")
        try:
            config_type = _connector_config_type(section["kind"])
        except ConfigError as exc:
            raise ConfigError(f"{where}.kind: {exc}") from exc
        connectors.append(_convert(section, config_type, where))
    strategies: list[StrategyConfig] = []
    for index, section in enumerate(raw_strategies):
        where = f"strategies[{index}]"
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: expected a table")
        kind = section.get("kind", DEFAULT_KIND)
        if not isinstance(kind, str):
            raise ConfigError(f"{where}.kind: expected a string")
        try:
            strategy_type = _strategy_config_type(kind)
        except ConfigError as exc:
            raise ConfigError(f"{where}.kind: {exc}") from exc
        strategies.append(_convert(section, strategy_type, where))
    settings = msgspec.structs.replace(settings, connectors=tuple(connectors), strategies=tuple(strategies))
    check_values(settings)
    _check(settings, environ)
    return settings


@functools.lru_cache(maxsize=64)
def _connector_config_type(kind: str) -> type[ConnectorConfig]:
    return connector_class(kind).config_type


@functools.lru_cache(maxsize=64)
def _strategy_config_type(kind: str) -> type[StrategyConfig]:
    config_type = strategy_class(kind).config_type
    if not (isinstance(config_type, type) and issubclass(config_type, StrategyConfig)):
        raise ConfigError(f"strategy kind {kind!r}: its config_type is not a StrategyConfig")
    return config_type


@functools.lru_cache(maxsize=256)
def _struct_fields(cls: type[msgspec.Struct]) -> tuple[mi.Field, ...]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return info.fields


def check_values(value: Any, path: str = "") -> None:
    """Check what msgspec cannot while decoding, over every field of ``value``.

    Every ``Decimal`` is finite, zero or within [DECIMAL_RESOLUTION, DECIMAL_MAGNITUDE] in
    magnitude, and within its field's ``decimal_range``; every float is finite; no string
    holds a control character. Raises ``ConfigError`` naming the first bad field."""
    _walk(value, mi.AnyType(), path)


def _walk(value: Any, type_: mi.Type, path: str) -> None:
    bounds: dict[str, str] = {}
    while True:
        if isinstance(type_, mi.Metadata):
            bounds.update((type_.extra or {}).get(DECIMAL_BOUNDS, {}))
            type_ = type_.type
        elif isinstance(type_, mi.UnionType):
            members = [t for t in type_.types if not isinstance(t, mi.NoneType)]
            type_ = members[0] if len(members) == 1 else mi.AnyType()
        else:
            break
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, Decimal):
        _check_decimal(value, bounds, path)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value}")
    elif isinstance(value, str):
        if _CONTROL.search(value):
            raise ConfigError(f"{path}: control characters are not allowed")
    elif isinstance(value, msgspec.Struct):
        for field in _struct_fields(type(value)):
            _walk(getattr(value, field.name), field.type, _join(path, field.name))
    elif isinstance(value, tuple | list):
        item = type_.item_type if isinstance(type_, mi.VarTupleType | mi.ListType) else mi.AnyType()
        for index, element in enumerate(value):
            _walk(element, item, f"{path}[{index}]")
    elif isinstance(value, dict):
        key_type = type_.key_type if isinstance(type_, mi.DictType) else mi.AnyType()
        value_type = type_.value_type if isinstance(type_, mi.DictType) else mi.AnyType()
        for key, element in value.items():
            _walk(key, key_type, _join(path, str(key)))
            _walk(element, value_type, _join(path, str(key)))


_RELATIONS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _check_decimal(value: Decimal, bounds: dict[str, str], path: str) -> None:
    if not value.is_finite():
        raise ConfigError(f"{path}: expected a finite decimal, got {value}")
    if value != 0 and not DECIMAL_RESOLUTION <= value.copy_abs() <= DECIMAL_MAGNITUDE:
        raise ConfigError(f"{path}: expected 0 or a magnitude between {DECIMAL_RESOLUTION} and "
                          f"{DECIMAL_MAGNITUDE:E}, got {value}")
    for key, limit in bounds.items():
        bound = Decimal(limit)
        ok = {"gt": value > bound, "ge": value >= bound, "lt": value < bound, "le": value <= bound}[key]
        if not ok:
            wanted = " and ".join(f"{_RELATIONS[k]} {v}" for k, v in bounds.items())
            raise ConfigError(f"{path}: expected a decimal {wanted}, got {value}")


def _check(settings: Settings, environ: dict[str, str]) -> None:
    """The checks between fields: names are unique and refer to something."""
    names: set[str] = set()
    for index, connector in enumerate(settings.connector_configs()):
        where = f"connectors[{index}].name"
        if connector.name in RESERVED_NAMES or connector.name in names:
            raise ConfigError(f"{where}: {connector.name!r} is reserved or used twice")
        names.add(connector.name)
        # Kind-specific references, read by name so that this module need not import every
        # connector (and its protocol library) to check a file.
        engine = getattr(connector, "engine", None)
        traded = getattr(engine, "symbols", None)
        if connector.kind == "paper" and isinstance(traded, dict):
            unknown = sorted(set(connector.symbols) - set(traded))
            if unknown:
                raise ConfigError(f"connectors[{index}].symbols: {unknown} not traded by the paper "
                                  f"venue (its engine.symbols: {sorted(traded)})")
        sender = getattr(connector, "sender_comp_id", None)
        if sender is not None and sender == getattr(connector, "target_comp_id", None):
            raise ConfigError(f"connectors[{index}].target_comp_id: must differ from sender_comp_id")
    if not names:
        raise ConfigError("connectors: at least one connector is required")
    venues = settings.venues()
    for index, strategy in enumerate(settings.strategy_configs()):
        where = f"strategies[{index}]"
        if strategy.name in RESERVED_NAMES or strategy.name in names:
            raise ConfigError(f"{where}.name: {strategy.name!r} is reserved or used twice")
        names.add(strategy.name)
        if strategy.venue not in venues:
            raise ConfigError(f"{where}.venue: no connector named {strategy.venue!r}")
        missing = set(strategy.symbols) - set(venues[strategy.venue])
        if missing:
            raise ConfigError(f"{where}.symbols: {sorted(missing)} not subscribed by {strategy.venue}")
    for index, venue in enumerate(settings.safety.watched_venues):
        if venue not in venues:
            raise ConfigError(f"safety.watched_venues[{index}]: no connector named {venue!r}")
    sup = settings.supervision
    if sup.backoff_initial_s > sup.backoff_max_s:
        raise ConfigError(f"supervision.backoff_initial_s: {sup.backoff_initial_s} is above "
                          f"supervision.backoff_max_s ({sup.backoff_max_s})")
    check_order_entry(settings.order_entry, venues, environ)
    if settings.service.mode == "live" and environ.get(LIVE_ENV) != LIVE_VALUE:
        raise ConfigError(
            f"service.mode: \"live\" also needs the environment variable {LIVE_ENV}={LIVE_VALUE}"
        )


def disabled_checks(settings: Settings) -> list[str]:
    """The pre-trade limits set to 0, which switches their check off (reported by
    ``check-config`` so that nobody switches one off unknowingly)."""
    return [f"risk.{field}" for field in msgspec.structs.asdict(settings.risk)
            if field not in _RISK_NOT_LIMITS and getattr(settings.risk, field) == 0]


_RISK_NOT_LIMITS = frozenset({"degradation_window_s", "recover_after_s", "circuit_window_s",
                              "circuit_cooldown_s"})


def read_config_text(source: Path | Traversable) -> str:
    """The text of a configuration file, or a one-line ``ConfigError`` saying why not."""
    try:
        if isinstance(source, Path):
            with source.open("rb") as handle:
                data = handle.read(MAX_CONFIG_BYTES + 1)
        else:
            data = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_CONFIG_BYTES} bytes; not a configuration file")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{source}: looks like UTF-16; TOML files must be UTF-8")
    if b"\x00" in data:
        raise ConfigError(f"{source}: binary data (a NUL byte); TOML files are UTF-8 text")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start}); TOML files must be UTF-8") from exc


def load_settings(path: Path | None = None, *, environ: dict[str, str] | None = None) -> Settings:
    """Read and check a TOML file (the embedded paper default when ``path`` is None)."""
    source: Path | Traversable = Path(path) if path is not None else DEFAULT_CONFIG
    text = read_config_text(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{source}: not valid TOML: nested too deeply") from exc
    return parse_settings(data, environ=environ)


def resolve_state_dir(settings: Settings, override: str | None = None,
                      environ: dict[str, str] | None = None) -> Path:
    """``--state-dir``, else TRADEGUARD_STATE_DIR, else the file's ``service.state_dir``."""
    environ = dict(os.environ) if environ is None else environ
    chosen = override or environ.get(STATE_DIR_ENV) or settings.service.state_dir
    return Path(chosen).expanduser().resolve()
