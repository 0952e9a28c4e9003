"""tradeguard's trading logic, free of actors, threads, sockets, SQLite and clocks: the
mode machine, exposure, pre-trade checks, rejection loops, the order lifecycle, orders
in flight, the failsafe's rounds, P&L, and the safety checks. Time is always passed in."""

from __future__ import annotations

from core.checks import Desk, Limits, PreTradeChecks, Refusal
from core.exposure import Exposure, is_valid_quote, mid_of, valid_mid
from core.flatten import FlattenPlan, FlattenPolicy, VenueState
from core.inflight import Answered, GiveUp, InflightAction, InflightOrders, QueryStatus
from core.l1_book import L1Book, L1Books
from core.lifecycle import OrderLifecycle, VenueEvent, WorkingOrders, event_of
from core.modes import TRANSITIONS, ForbiddenTransition, ModeChange, ModeMachine, ModeRules, latched_in
from core.pnl import DAY_NS, DailyTotals, FillEffect, Position, apply_fill, parse_boundary, session_start_ns
from core.rejections import CircuitBreaker, CircuitState, RejectionLoop, is_venue_rejection
from core.safety import Finding, SafetyChecks, SafetyRules

__all__ = [
    "DAY_NS",
    "TRANSITIONS",
    "Answered",
    "CircuitBreaker",
    "CircuitState",
    "DailyTotals",
    "Desk",
    "Exposure",
    "FillEffect",
    "Finding",
    "FlattenPlan",
    "FlattenPolicy",
    "ForbiddenTransition",
    "GiveUp",
    "InflightAction",
    "InflightOrders",
    "L1Book",
    "L1Books",
    "Limits",
    "ModeChange",
    "ModeMachine",
    "ModeRules",
    "OrderLifecycle",
    "Position",
    "PreTradeChecks",
    "QueryStatus",
    "Refusal",
    "RejectionLoop",
    "SafetyChecks",
    "SafetyRules",
    "VenueEvent",
    "VenueState",
    "WorkingOrders",
    "apply_fill",
    "event_of",
    "is_valid_quote",
    "is_venue_rejection",
    "latched_in",
    "mid_of",
    "parse_boundary",
    "session_start_ns",
    "valid_mid",
]
