"""Requests between actors and from outside the actor system, and their typed replies.

They live here, not beside the actor that answers them, so no actor imports another: the
sender needs only this module and the answering actor's name (``actors.topics``).
"""

from __future__ import annotations

import msgspec


class GetRiskState(msgspec.Struct, frozen=True):
    """Ask the risk governor: its state as a dict (mode, paused, circuits, counters)."""


class EnterFailsafe(msgspec.Struct, frozen=True):
    """Tell the risk governor: go to FAILSAFE (sent by the failsafe when it was triggered
    directly)."""

    reason: str
    """What triggered the failsafe, in words."""


class Shutdown(msgspec.Struct, frozen=True):
    """Ask the risk governor: go to SHUTDOWN (the service is stopping)."""

    reason: str = "service stopping"
    """Why, in words (journaled with the transition)."""


class GetFailsafeState(msgspec.Struct, frozen=True):
    """Ask the failsafe: its state as a dict (latch, run, venues, last report)."""


class GetPortfolio(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the position keeper (from outside the actor system): the current
    ``PortfolioSnapshot``."""


class GetReconciliations(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the position keeper (from outside the actor system): the last
    ``Reconciliation`` per venue, as a dict."""


class GetOrderCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the position keeper (from outside the actor system): order traffic as the journal
    holds it since ``since_ns``; answered with ``OrderTotals``. Counted from the journal, a
    fill or a cancel re-delivered by a venue after a reconnect is never counted twice."""

    since_ns: int = 0
    """Count what was journaled at or after this wall-clock time (ns); 0: everything."""


class OrderTotals(msgspec.Struct, frozen=True, kw_only=True):
    """Reply to ``GetOrderCounts``."""

    submitted: int
    """Orders journaled as passed to a venue."""
    filled: int
    """Orders whose row reached ``filled``."""
    cancelled: int
    """Orders whose row reached ``cancelled``."""
    rejected: int
    """Orders whose row reached ``rejected`` (by a venue; pre-trade refusals never reach the
    journal)."""
    fills: int
    """Fills journaled (executions, partial ones included)."""


class GetSafetyStats(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the safety monitor for its counters; answered with ``SafetyStats``."""


class SafetyStats(msgspec.Struct, frozen=True, kw_only=True):
    """The safety monitor's counters since it started."""

    raised: dict[str, int]
    """Safety events published, per kind."""
    suppressed: dict[str, int]
    """Findings held back by the cool-down, per kind."""
    sequence_gaps: dict[str, int]
    """Sequence gaps reported by connectors (``HealthReport.gaps``), per venue."""
    quotes: int
    """Quotes checked."""
    batches: int
    """Quote batches checked."""
    last_verdict_ns: int
    """When the checks of the last batch finished, wall clock nanoseconds; 0 before any."""
