"""Performance measurements of tradeguard (not timed tests): ``python -m benchmarks``.

Each function builds the real actors in a clean actor system, measures one figure and
returns it with its details; ``benchmarks.report`` holds the targets.
"""

from __future__ import annotations

from benchmarks.flatten import failsafe_flatten
from benchmarks.orders import order_round_trip
from benchmarks.quotes import baseline_throughput, quote_throughput, quote_verdict_latency
from benchmarks.report import TARGETS, evaluate, table
from benchmarks.restart import actor_restart, process_restart
from benchmarks.soak import rss_soak
from benchmarks.suite import SECTIONS, Sizes, collect
from benchmarks.venue_store import venue_persistence

__all__ = [
    "SECTIONS",
    "TARGETS",
    "Sizes",
    "actor_restart",
    "baseline_throughput",
    "collect",
    "evaluate",
    "failsafe_flatten",
    "order_round_trip",
    "process_restart",
    "quote_throughput",
    "quote_verdict_latency",
    "rss_soak",
    "table",
    "venue_persistence",
]
