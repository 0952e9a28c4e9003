"""The configuration schema: TOML decoded into typed structs, refused before anything
starts when any field is wrong, with the path of the bad field in the error."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from actors.connectors.base import ConnectorConfig
from actors.connectors.plugins import connector_class
from actors.dashboard import DashboardConfig
from actors.errors import ConfigError
from actors.failsafe import FailsafeConfig
from actors.order_entry.config import OrderEntryConfig, check_order_entry
from actors.position_keeper import KeeperConfig
from actors.risk_governor import RiskConfig
from actors.safety_monitor import SafetyConfig
from actors.strategies.sample import SampleConfig

LIVE_ENV = "TRADEGUARD_LIVE"
"""Live trading needs ``mode = "live"`` in the file AND this variable set to ``LIVE_VALUE``."""
LIVE_VALUE = "I-UNDERSTAND-REAL-MONEY"
STATE_DIR_ENV = "TRADEGUARD_STATE_DIR"
"""Overrides the state directory (the command line's ``--state-dir`` overrides both)."""

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "paper.toml"
"""The embedded default: the paper venue with the sample strategy."""

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
    state_dir: str = "./state"
    """Journal, sockets, logs and incident reports. Overridden by TRADEGUARD_STATE_DIR and
    by ``--state-dir``."""
    on_shutdown: Literal["leave", "cancel", "flatten"] = "cancel"
    """On SIGTERM: leave orders and positions, cancel every working order, or flatten."""
    shutdown_timeout_s: float = 20.0
    """Longest a graceful stop (including a shutdown flatten) may take."""
    log_level: str = "INFO"
    """Level of the stderr and file logs."""
    start_timeout_s: float = 30.0
    """Longest the start barrier may take."""


class SupervisionConfig(_Strict, frozen=True, kw_only=True):
    """Restart policy of the tree."""

    connectors_intensity: int = 10
    """Connector restarts within ``connectors_period_s`` before the connectors supervisor
    gives up (which triggers FAILSAFE)."""
    connectors_period_s: float = 60.0
    """Window of ``connectors_intensity``."""
    root_intensity: int = 5
    """Restarts of the root's children within ``root_period_s`` before the process gives up."""
    root_period_s: float = 60.0
    """Window of ``root_intensity``."""
    backoff_initial_s: float = 0.5
    """First restart delay."""
    backoff_max_s: float = 30.0
    """Cap on a restart delay."""
    backoff_multiplier: float = 2.0
    """Growth of the delay per consecutive restart."""
    backoff_jitter_s: float = 0.25
    """Random jitter added to each delay."""
    reset_after_s: float = 30.0
    """A child up this long starts again from the first delay."""
    heartbeat_s: float = 2.0
    """Heartbeat period for the core actors (a hung actor is replaced)."""
    heartbeat_timeout_s: float = 5.0
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
    strategies: tuple[SampleConfig, ...] = ()
    """Order sources."""
    order_entry: OrderEntryConfig = OrderEntryConfig()
    """Order sources outside the process: the client API and the FIX gateway (both off by default)."""

    def connector_configs(self) -> tuple[ConnectorConfig, ...]:
        """The connector sections, typed."""
        return tuple(c for c in self.connectors if isinstance(c, ConnectorConfig))

    def venues(self) -> dict[str, tuple[str, ...]]:
        """Connector name to its symbols."""
        return {c.name: tuple(c.symbols) for c in self.connector_configs()}


_PATH = re.compile(r"at `\$(.*)`")


def _error(prefix: str, exc: msgspec.ValidationError) -> ConfigError:
    text = str(exc)
    match = _PATH.search(text)
    path = prefix + (match.group(1) if match else "")
    message = _PATH.sub("", text).rstrip(" -")
    return ConfigError(f"{path.lstrip('.') or '(top level)'}: {message}")


def parse_settings(data: dict[str, Any], *, environ: dict[str, str] | None = None) -> Settings:
    """Decode and check a configuration; raises ``ConfigError`` naming the bad field."""
    environ = dict(os.environ) if environ is None else environ
    raw = dict(data)
    raw_connectors = raw.pop("connectors", [])
    if not isinstance(raw_connectors, list):
        raise ConfigError("connectors: expected an array of tables ([[connectors]])")
    try:
        settings = msgspec.convert(raw, type=Settings)
    except msgspec.ValidationError as exc:
        raise _error("", exc) from exc
    connectors: list[ConnectorConfig] = []
    for index, section in enumerate(raw_connectors):
        where = f"connectors[{index}]"
        if not isinstance(section, dict) or "kind" not in section:
            raise ConfigError(f"{where}.kind: every connector needs a kind")
        try:
            cls = connector_class(str(section["kind"]))
        except ConfigError as exc:
            raise ConfigError(f"{where}.kind: {exc}") from exc
        try:
            connectors.append(msgspec.convert(section, type=cls.config_type))
        except msgspec.ValidationError as exc:
            raise _error(where, exc) from exc
    settings = msgspec.structs.replace(settings, connectors=tuple(connectors))
    _check(settings, environ)
    return settings


def _check(settings: Settings, environ: dict[str, str]) -> None:
    names: set[str] = set()
    for index, connector in enumerate(settings.connector_configs()):
        where = f"connectors[{index}].name"
        if not connector.name or connector.name in RESERVED_NAMES or connector.name in names:
            raise ConfigError(f"{where}: {connector.name!r} is empty, reserved or used twice")
        names.add(connector.name)
    if not names:
        raise ConfigError("connectors: at least one connector is required")
    for index, strategy in enumerate(settings.strategies):
        where = f"strategies[{index}]"
        if strategy.name in RESERVED_NAMES or strategy.name in names:
            raise ConfigError(f"{where}.name: {strategy.name!r} is reserved or used twice")
        names.add(strategy.name)
        if strategy.venue not in settings.venues():
            raise ConfigError(f"{where}.venue: no connector named {strategy.venue!r}")
        missing = set(strategy.symbols) - set(settings.venues()[strategy.venue])
        if missing:
            raise ConfigError(f"{where}.symbols: {sorted(missing)} not subscribed by {strategy.venue}")
    check_order_entry(settings.order_entry, settings.venues(), environ)
    if settings.service.mode == "live" and environ.get(LIVE_ENV) != LIVE_VALUE:
        raise ConfigError(
            f"service.mode: \"live\" also needs the environment variable {LIVE_ENV}={LIVE_VALUE}"
        )
    for label, value in (("risk.degradations_to_failsafe", settings.risk.degradations_to_failsafe),
                         ("supervision.connectors_intensity", settings.supervision.connectors_intensity)):
        if value < 0:
            raise ConfigError(f"{label}: must not be negative, got {value}")


def load_settings(path: Path | None = None, *, environ: dict[str, str] | None = None) -> Settings:
    """Read and check a TOML file (the embedded paper default when ``path`` is None)."""
    source = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        text = source.read_text()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    return parse_settings(data, environ=environ)


def resolve_state_dir(settings: Settings, override: str | None = None,
                      environ: dict[str, str] | None = None) -> Path:
    """``--state-dir``, else TRADEGUARD_STATE_DIR, else the file's ``service.state_dir``."""
    environ = dict(os.environ) if environ is None else environ
    chosen = override or environ.get(STATE_DIR_ENV) or settings.service.state_dir
    return Path(chosen).expanduser().resolve()
