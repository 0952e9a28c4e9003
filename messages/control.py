"""Control-plane messages: health, safety events, trading modes, escalation, operator commands."""

from __future__ import annotations

import enum
from decimal import Decimal

from messages._base import Message, require_text


class Severity(enum.IntEnum):
    """How bad a safety event is; ordered so that ``max()`` gives the worst."""

    INFO = 10
    WARNING = 30
    CRITICAL = 50


class Mode(enum.StrEnum):
    """Trading mode, owned by the risk governor."""

    STARTUP = "STARTUP"
    READY = "READY"
    LIVE = "LIVE"
    DEGRADED = "DEGRADED"
    FAILSAFE = "FAILSAFE"
    SHUTDOWN = "SHUTDOWN"


MODE_TRANSITIONS: dict[Mode, frozenset[Mode]] = {
    Mode.STARTUP: frozenset({Mode.READY, Mode.SHUTDOWN}),
    Mode.READY: frozenset({Mode.LIVE, Mode.SHUTDOWN}),
    Mode.LIVE: frozenset({Mode.DEGRADED, Mode.FAILSAFE, Mode.SHUTDOWN}),
    Mode.DEGRADED: frozenset({Mode.LIVE, Mode.FAILSAFE, Mode.SHUTDOWN}),
    Mode.FAILSAFE: frozenset({Mode.READY, Mode.SHUTDOWN}),
    Mode.SHUTDOWN: frozenset(),
}
"""Every allowed transition: ``MODE_TRANSITIONS[a]`` holds the modes reachable from ``a``."""


class HealthReport(Message, frozen=True, kw_only=True):
    """A connector's view of its own session."""

    name: str
    """Connector name."""
    connected: bool
    """True while the venue session is up and synchronised."""
    latency_ms: float = 0.0
    """Last measured round trip to the venue in milliseconds (a measurement, never summed)."""
    messages_in: int = 0
    """Inbound messages read from the venue since the actor started."""
    messages_out: int = 0
    """Outbound messages sent to the venue since the actor started."""
    drops: int = 0
    """Inbound messages dropped as duplicates or out of the reorder window."""
    errors: int = 0
    """Errors reported by the venue or met on the session."""
    malformed: int = 0
    """Inbound messages that could not be decoded or failed validation."""
    gaps: int = 0
    """Sequence gaps detected in the market data."""
    fills: int = 0
    """Executions received since the actor started."""
    last_message_ns: int = 0
    """When the last inbound message arrived, wall clock nanoseconds."""
    ts_ns: int = 0
    """When the report was made, wall clock nanoseconds."""


class ConnectorUp(Message, frozen=True, kw_only=True):
    """A connector finished connecting and synchronising with its venue."""

    name: str
    """Connector name."""
    generation: int = 0
    """How many times the connector has started before (0 the first time)."""
    ts_ns: int = 0
    """When the session came up, wall clock nanoseconds."""


class ConnectorDown(Message, frozen=True, kw_only=True):
    """A connector lost its venue session or stopped."""

    name: str
    """Connector name."""
    reason: str = ""
    """Why, in words."""
    ts_ns: int = 0
    """When it went down, wall clock nanoseconds."""
    lost: bool = True
    """True when the venue session was lost (an outage of the venue); False when the
    connector itself stopped (a stop its supervisor ordered, or the actor's end): that is
    no incident of the venue's, and an abnormal end is reported by the supervisor."""


class SafetyEvent(Message, frozen=True, kw_only=True):
    """An anomaly seen by the safety monitor, a connector or the position keeper."""

    kind: str
    """Machine-readable kind, e.g. ``negative_price``, ``crossed_market``, ``sequence_gap``."""
    severity: Severity
    """INFO, WARNING or CRITICAL."""
    detail: str = ""
    """Human-readable detail."""
    venue: str = ""
    """Venue concerned, when any."""
    symbol: str = ""
    """Symbol concerned, when any."""
    value: Decimal | None = None
    """The measured value that tripped the check, when any."""
    ts_ns: int = 0
    """When the event was raised, wall clock nanoseconds."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_text("kind", self.kind)


class ModeChanged(Message, frozen=True, kw_only=True):
    """The trading mode changed."""

    previous: Mode
    """Mode before the transition."""
    current: Mode
    """Mode after the transition."""
    reason: str = ""
    """Why, in words."""
    ts_ns: int = 0
    """When, wall clock nanoseconds."""


class Escalation(Message, frozen=True, kw_only=True):
    """A supervisor gave up on its children, or the tree is otherwise beyond repair."""

    source: str
    """Name of the supervisor (or component) escalating."""
    reason: str
    """Why, in words."""
    ts_ns: int = 0
    """When, wall clock nanoseconds."""


class OperatorVerb(enum.StrEnum):
    """What an operator can ask of the running service."""

    STATUS = "status"
    PAUSE = "pause"
    RESUME = "resume"
    FLATTEN = "flatten"
    RESET = "reset"


class OperatorCommand(Message, frozen=True, kw_only=True):
    """A command from an operator, already authenticated by the control channel."""

    verb: OperatorVerb
    """What to do."""
    operator: str = "operator"
    """Who asked (audited)."""
    reason: str = ""
    """Why, as the operator put it (audited)."""
    ts_ns: int = 0
    """When the command was received, wall clock nanoseconds."""
    scope_venue: str = ""
    """Pause, resume or flatten only this venue; empty: not scoped to a venue."""
    scope_source: str = ""
    """Pause, resume or flatten only this order source (``fix:<SenderCompID>``, a strategy
    name, ``api:<user>``); empty: not scoped to a source."""


class FlattenRequested(Message, frozen=True, kw_only=True):
    """Start the failsafe procedure; with a scope, a scoped flatten that does not latch
    FAILSAFE."""

    reason: str
    """What triggered it, in words; goes into the incident report."""
    source: str = ""
    """Who triggered it: ``risk_governor``, ``operator``, ``shutdown`` ..."""
    ts_ns: int = 0
    """When, wall clock nanoseconds."""
    scope_venue: str = ""
    """Flatten only this venue (cancel everything there, close every position there)."""
    scope_source: str = ""
    """Flatten only this order source: cancel its working orders and close what it opened,
    as far as positions can be attributed to it."""


class FailsafeReport(Message, frozen=True, kw_only=True):
    """The outcome of one failsafe procedure run."""

    flat: bool
    """True when every venue reported flat."""
    attempts: int
    """Closing rounds used."""
    incident_path: str = ""
    """Where the incident report was written."""
    detail: str = ""
    """Summary in words."""
    ts_ns: int = 0
    """When the run ended, wall clock nanoseconds."""
