"""The status document and the control channel's wire records.

One schema, used by the dashboard actor (which builds it), ``tradeguard status`` (which
prints it), the terminal dashboard (which shows it) and the tests (which check it against
the JSON Schema exported by ``status_schema``). ``docs/status.md`` documents it.

Field names are a promise to operators' scripts: fields are added, never renamed or
removed. Money and quantities are decimal strings formatted for people (at most 8 places,
no exponent), exactly as ``tradeguard status --json`` has always printed them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from messages.control import FailsafeReport

SCHEMA_VERSION = 1
"""Bumped only when a field changes meaning; new fields do not bump it."""


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """A status record: immutable, keyword-only, unknown fields ignored when decoding (a
    newer service may send more than an older client knows)."""


class PositionStatus(Record, frozen=True, kw_only=True):
    """One open position as the position keeper holds it."""

    venue: str
    """Venue (connector) name."""
    symbol: str
    """Instrument."""
    quantity: str
    """Signed quantity, a decimal string (negative is short)."""
    average_price: str
    """Average entry price, a decimal string."""
    unrealized_pnl: str
    """Unrealized P&L at the last mark, a decimal string."""
    realized_pnl: str
    """Realized P&L of this position, a decimal string."""


class PnlStatus(Record, frozen=True, kw_only=True):
    """Profit and loss over every venue."""

    realized: str
    """Realized P&L since the journal began, a decimal string."""
    unrealized: str
    """Unrealized P&L at the last marks, a decimal string."""
    daily: str
    """P&L of the current trading session (what the daily loss limit watches)."""
    daily_traded_notional: str
    """Notional traded in the current session, a decimal string."""


class VenuePositionStatus(Record, frozen=True, kw_only=True):
    """A position as the venue itself reported it at the last reconciliation."""

    symbol: str
    """Instrument."""
    quantity: str
    """Signed quantity, a decimal string."""
    average_price: str = "0"
    """Average price the venue reported, a decimal string."""


class KeeperPositionStatus(Record, frozen=True, kw_only=True):
    """A position as the journal held it at the last reconciliation."""

    symbol: str
    """Instrument."""
    quantity: str
    """Signed quantity, a decimal string."""


class ConnectorHealth(Record, frozen=True, kw_only=True):
    """What the dashboard heard about one connector on the bus (its last HealthReport)."""

    name: str
    """Venue (connector) name."""
    connected: bool = False
    """The session is up (from ConnectorUp/ConnectorDown and the last HealthReport)."""
    latency_ms: float | None = None
    """Last measured round trip; null before the first HealthReport."""
    messages_in: int | None = None
    """Messages received from the venue."""
    messages_out: int | None = None
    """Messages sent to the venue."""
    drops: int | None = None
    """Inbound messages dropped (queue full)."""
    errors: int | None = None
    """Errors the connector counted."""
    malformed: int | None = None
    """Malformed inbound messages refused."""
    gaps: int | None = None
    """Sequence gaps detected."""
    fills: int | None = None
    """Fills received."""
    last_message_ns: int | None = None
    """Wall-clock time of the last inbound message, ns since the epoch."""


class ConnectorStatus(ConnectorHealth, frozen=True, kw_only=True):
    """One connector: its health plus the position keeper's last reconciliation."""

    reconciled: bool | None = None
    """True: venue and journal agreed at the last reconciliation; False: MISMATCH; null:
    not reconciled yet."""
    reconciled_ns: int | None = None
    """When the last reconciliation ran, ns since the epoch; null before the first."""
    reconciled_since_ns: int | None = None
    """Since when ``reconciled`` has held without interruption (reconciled, or MISMATCH),
    ns since the epoch; null before the first reconciliation."""
    venue_positions: list[VenuePositionStatus] = []
    """Positions the venue reported at the last reconciliation."""
    keeper_positions: list[KeeperPositionStatus] = []
    """Positions the journal held at the last reconciliation."""
    mismatches: list[str] = []
    """What disagreed, one line each."""
    open_orders_compared: bool | None = None
    """True when the venue's last report listed its working orders and they were compared
    with the journal's; False when it did not list them (positions only); null before the
    first reconciliation."""
    venue_open_orders: list[str] = []
    """Client order ids the venue reported working at the last reconciliation."""
    keeper_open_orders: list[str] = []
    """Client order ids the journal held working at that venue at the last reconciliation."""
    order_mismatches: list[str] = []
    """The lines of ``mismatches`` about orders working on one side only."""


class OrderCounts(Record, frozen=True, kw_only=True):
    """Order traffic since the dashboard started: counted from the journal (a fill or cancel
    re-delivered after a reconnect counts once), rejections from the bus."""

    submitted: int = 0
    """Orders journaled as passed to a venue (the governor's and the failsafe's)."""
    filled: int = 0
    """Orders whose journal status reached filled."""
    rejected: int = 0
    """Orders rejected (by the governor or a venue), as seen on the bus."""
    cancelled: int = 0
    """Orders whose journal status reached cancelled."""
    fills: int = 0
    """Fills (executions) journaled, partial ones included."""


class RiskStatus(Record, frozen=True, kw_only=True):
    """The risk governor's state."""

    mode: str
    """Trading mode: STARTUP, READY, LIVE, DEGRADED, FAILSAFE or SHUTDOWN."""
    paused: bool
    """An operator paused trading: new orders are refused."""
    paused_sources: list[str] = []
    """Order sources an operator paused (``pause --source``): their new orders are refused."""
    paused_venues: list[str] = []
    """Venues an operator paused (``pause --venue``, or a venue-scoped flatten): new orders to
    them are refused."""
    connectors_up: list[str] = []
    """Venues whose connector is up."""
    circuits: dict[str, str] = {}
    """Per venue, the rejection-loop circuit breaker: CLOSED, OPEN or HALF_OPEN."""
    working_orders: int = 0
    """Orders sent and not yet in a terminal state."""
    degradations_in_window: int = 0
    """Distinct degradation incidents inside the escalation window."""
    failsafe_flat: bool = False
    """The failsafe confirmed every venue flat (a reset is allowed)."""
    live_when: str = "any"
    """LIVE needs ``any`` venue, or ``all`` of them, connected and reconciled."""
    venue_states: dict[str, str] = {}
    """Per venue, its trading state: ACTIVE (trading), REDUCING (only orders that reduce a
    position), HALTED (no new order: connector down, not reconciled, or a mismatch)."""
    venue_reasons: dict[str, str] = {}
    """Per venue, why it is in its trading state, in words."""
    venue_outages_s: dict[str, float] = {}
    """Per venue in an outage (its connector was up and is down), seconds so far."""
    open_incidents: list[str] = []
    """Open incidents (``kind venue/symbol``): each counted once, until it clears."""
    incidents_opened: int = 0
    """Incidents opened in this run (kept across a restart of the governor)."""
    core_restarts: list[str] = []
    """The latest restarts of core actors (position keeper, risk governor, failsafe, safety
    monitor) in this run, oldest first (``<UTC time> <actor>: <reason>``); each is an alert."""
    core_restarts_total: int = 0
    """Restarts of core actors in this run."""
    checked: int = 0
    """Orders the pre-trade checks looked at."""
    passed: int = 0
    """Orders that passed every check."""
    rejected: int = 0
    """Orders the checks refused."""


class FailsafeStatus(Record, frozen=True, kw_only=True):
    """The failsafe: latch, current run, last report."""

    latched: bool
    """FAILSAFE is latched until an operator resets it."""
    running: bool
    """A flatten procedure is in progress."""
    incident: str = ""
    """Id of the current incident; empty when none."""
    venues: dict[str, str] = {}
    """Per venue, where its flatten stands: pending, waiting, closing, backoff, flat, down, exhausted."""
    last_report: FailsafeReport | None = None
    """The last finished run: flat or not, attempts, incident report path."""
    scoped: list[ScopedFlattenStatus] = []
    """Scoped flattens (one venue or one source) under way or finished, one per scope."""


class ScopedFlattenStatus(Record, frozen=True, kw_only=True):
    """One scoped flatten (``tradeguard flatten --venue X`` or ``--source Y``)."""

    scope: str
    """``venue:<name>`` or ``source:<name>``."""
    started_ns: int
    """When it started, ns since the epoch."""
    venues: dict[str, str] = {}
    """Per venue it covers, where it stands (the failsafe's states: waiting, closing, flat ...)."""
    flat: bool | None = None
    """None while under way; True once every venue it covers is done (no working order of
    the scope, nothing of the scope left to close); False when attempts were spent."""
    ts_ns: int = 0
    """When ``flat`` last changed, ns since the epoch."""
    detail: str = ""
    """Summary in words."""


class Alert(Record, frozen=True, kw_only=True):
    """One alert the dashboard keeps (mode changes, safety findings, failsafe reports)."""

    ts_ns: int
    """When, ns since the epoch."""
    severity: str
    """INFO, WARNING, ERROR or CRITICAL."""
    kind: str
    """What kind of finding (mode, failsafe, stale_feed, actor_exited, ...)."""
    text: str
    """What happened, for people."""


class ControlStatus(Record, frozen=True, kw_only=True):
    """The control channel's own health and counters."""

    healthy: bool
    """The serving loop turns and its socket file is in place."""
    served: int = 0
    """Requests answered (refusals included)."""
    refused: int = 0
    """Requests refused (malformed, wrong credential, unknown verb, too large)."""


class DashboardState(Record, frozen=True, kw_only=True):
    """Reply to ``GetDashboardState``: what the dashboard actor collected from the bus."""

    mode: str
    """The last mode announced on the bus."""
    alerts: list[Alert] = []
    """The alerts kept (newest last)."""
    orders: OrderCounts = OrderCounts()
    """Order traffic counted."""
    connectors: list[ConnectorHealth] = []
    """One row per configured venue, in configuration order."""


class StatusDocument(Record, frozen=True, kw_only=True):
    """``tradeguard status --json``, the ``status`` reply and every published snapshot."""

    mode: str
    """Trading mode (the governor's; the dashboard's last known one if the governor is down;
    UNKNOWN when neither knows)."""
    paused: bool | None
    """An operator paused trading; null when the governor did not answer."""
    healthy: bool | None
    """The supervision tree answers its health check; null when not known."""
    positions: list[PositionStatus]
    """Open positions (quantity not zero)."""
    pnl: PnlStatus | None
    """P&L; null when the position keeper did not answer."""
    connectors: list[ConnectorStatus]
    """One row per configured venue."""
    orders: OrderCounts
    """Order traffic counted by the dashboard."""
    risk: RiskStatus | None
    """The governor's state; null when it did not answer."""
    failsafe: FailsafeStatus | None
    """The failsafe's state; null when it did not answer."""
    alerts: list[Alert]
    """The last ten alerts, newest last."""
    ts_ns: int
    """When this document was built, ns since the epoch."""
    control: ControlStatus | None = None
    """The control channel's health and counters."""
    schema_version: int = SCHEMA_VERSION
    """Version of this schema (see ``SCHEMA_VERSION``)."""


class ControlRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request on the control socket. ``operator`` is what the client claims; the
    service takes the operator's identity from the operating system instead."""

    token: str | None = None
    """The credential from ``control.token``."""
    verb: str | None = None
    """status, pause, resume, flatten or reset."""
    operator: str | None = None
    """Who the client says it is (recorded as claimed, never trusted)."""
    reason: str | None = None
    """Why (audited)."""
    venue: str | None = None
    """Scope of pause, resume or flatten: this venue only."""
    source: str | None = None
    """Scope of pause, resume or flatten: this order source only."""


class ControlReply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The answer to one control request."""

    ok: bool
    """The request was accepted."""
    result: StatusDocument | str | None = None
    """The status document for ``status``, the governor's answer for a command."""
    error: str | None = None
    """Why the request was refused or failed."""


REPLY_DECODER = msgspec.json.Decoder(ControlReply)
"""Decodes a control reply into typed records."""

STATUS_DECODER = msgspec.json.Decoder(StatusDocument)
"""Decodes a published snapshot or a ``status --json`` document."""


def status_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the status document."""
    schema: dict[str, Any] = msgspec.json.schema(StatusDocument)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
