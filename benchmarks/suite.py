"""Every section with its sizes, run in order into one result object."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.flatten import failsafe_flatten
from benchmarks.harness import CpuMeter, journal_commit_latency, machine, thread_handoff_latency
from benchmarks.orders import governor_submit_cost, order_round_trip, tracker_gc_pause
from benchmarks.quotes import baseline_throughput, quote_throughput, quote_verdict_latency
from benchmarks.report import HEADLINE_KEYS, evaluate
from benchmarks.restart import actor_restart, process_restart
from benchmarks.soak import rss_soak, rss_soak_in_subprocess
from benchmarks.venue_store import venue_persistence

SECTIONS: tuple[str, ...] = ("quotes", "baseline", "verdict", "orders", "failsafe", "restart", "process",
                             "venue", "soak")
"""Every section, in the order a full run takes them."""


@dataclass(frozen=True)
class Sizes:
    """How much each section measures. The defaults are the full run (about a minute on two
    cores, with the default 30 s soak); ``tiny()`` is for the smoke test."""

    quotes: int = 600_000
    """Quotes through the batched path, over ``quote_repeats`` runs."""
    batch_size: int = 500
    """Quotes per batch (one read cycle of a 500-symbol feed)."""
    quote_repeats: int = 3
    """Runs of the batched path (the median is reported)."""
    full_core_quotes: bool = True
    """Also measure the batched path with the governor, failsafe and dashboard running."""
    baseline_quotes: int = 120_000
    """Quotes through the one-message-per-quote chain, over ``quote_repeats`` runs."""
    verdict_rate: int = 10_000
    """Quotes per second while measuring the verdict latency."""
    verdict_s: float = 5.0
    """How long the verdict latency is recorded."""
    handoff_s: float = 2.0
    """How long the bare thread handoff (the machine's floor) is measured."""
    order_rate: int = 1_000
    """Orders per second while measuring the round trip."""
    orders_s: float = 5.0
    """How long orders are sent."""
    warmup_orders: int = 200
    """Orders sent first and not counted."""
    orders_on_tmpfs: bool = True
    """Also measure the round trip with the journal on /dev/shm (no disk flush), to show
    how much of it the journal's commits take."""
    tracker_orders: int = 100_000
    """Orders in the safety monitor's tracker (its default bound) for the GC pause figure."""
    governor_working: int = 1_000
    """Resting orders when the cost of one order to the risk governor is measured again."""
    governor_samples: int = 300
    """Orders timed through the risk governor per working-order count."""
    failsafe_positions: int = 50
    """Open positions (one per symbol) when the failsafe is triggered."""
    failsafe_runs: int = 5
    """Failsafe runs, each on a fresh tree (medians are reported)."""
    failsafe_history_fills: int = 20_000
    """Also run the failsafe against a paper account with this many earlier executions
    (a long-running service's venue); 0 skips it."""
    restarts: int = 200
    """Actor crashes and restarts."""
    process_runs: int = 3
    """Service process restarts (after one cold start)."""
    venue_history_small: int = 1_000
    """Executions already on the simulated venue's account (the small history)."""
    venue_history_large: int = 100_000
    """Executions already on the account (the large history)."""
    venue_orders: int = 300
    """Orders timed per history with the venue's store."""
    venue_json_orders: int = 10
    """Orders timed per history with the whole-account JSON baseline (slow at the large one)."""
    soak_s: float = 30.0
    """Length of the RSS soak."""
    soak_rate: int = 5_000
    """Quotes per second during the soak."""
    soak_subprocess: bool = True
    """Run the soak in a fresh interpreter (so the RSS is the service's alone)."""

    @classmethod
    def tiny(cls) -> Sizes:
        """Sizes small enough for a smoke test (a few seconds in all)."""
        return cls(quotes=2_000, batch_size=100, quote_repeats=1, full_core_quotes=False,
                   baseline_quotes=500, verdict_rate=1_000, verdict_s=0.3, handoff_s=0.1, order_rate=200,
                   orders_s=0.3, warmup_orders=5, orders_on_tmpfs=False, tracker_orders=100,
                   governor_working=10, governor_samples=5,
                   failsafe_positions=3, failsafe_history_fills=0,
                   failsafe_runs=1, restarts=5, process_runs=1, venue_history_small=100,
                   venue_history_large=1_000, venue_orders=20, venue_json_orders=3,
                   soak_s=0.5, soak_rate=1_000,
                   soak_subprocess=False)


def _steps(sizes: Sizes) -> dict[str, Callable[[], dict[str, Any]]]:
    def quotes() -> dict[str, Any]:
        result = quote_throughput(sizes.quotes, sizes.batch_size, sizes.quote_repeats)
        if sizes.full_core_quotes:
            full = quote_throughput(sizes.quotes, sizes.batch_size, sizes.quote_repeats, full_core=True)
            result["full_core_quotes_per_s"] = full["quotes_per_s"]
        return result

    def verdict() -> dict[str, Any]:
        handoff = thread_handoff_latency(sizes.handoff_s)
        return {**quote_verdict_latency(sizes.verdict_rate, sizes.verdict_s), "thread_handoff": handoff}

    def orders() -> dict[str, Any]:
        result = order_round_trip(sizes.order_rate, sizes.orders_s, sizes.warmup_orders)
        result["journal_commit"] = journal_commit_latency()
        result["tracker_gc"] = tracker_gc_pause(sizes.tracker_orders)
        result.update(governor_submit_cost((0, sizes.governor_working), sizes.governor_samples))
        tmpfs = Path("/dev/shm")
        if sizes.orders_on_tmpfs and tmpfs.is_dir():
            on_tmpfs = order_round_trip(sizes.order_rate, sizes.orders_s, sizes.warmup_orders,
                                        state_root=tmpfs)
            result["order_rtt_journal_on_tmpfs"] = on_tmpfs["order_rtt"]
        return result

    def failsafe() -> dict[str, Any]:
        result = failsafe_flatten(sizes.failsafe_positions, sizes.failsafe_runs)
        if sizes.failsafe_history_fills:
            history = failsafe_flatten(sizes.failsafe_positions, 1, sizes.failsafe_history_fills)
            result["failsafe_with_history"] = {
                "history_fills": sizes.failsafe_history_fills,
                "handoff_ms": history["failsafe_handoff_ms"],
                "flat_ms": history["failsafe_flat_ms"],
            }
        return result

    def soak() -> dict[str, Any]:
        if sizes.soak_subprocess:
            return rss_soak_in_subprocess(sizes.soak_s, sizes.soak_rate)
        return rss_soak(sizes.soak_s, sizes.soak_rate)

    return {
        "quotes": quotes,
        "baseline": lambda: baseline_throughput(sizes.baseline_quotes, sizes.batch_size, sizes.quote_repeats),
        "verdict": verdict,
        "orders": orders,
        "failsafe": failsafe,
        "restart": lambda: actor_restart(sizes.restarts),
        "process": lambda: process_restart(sizes.process_runs),
        "venue": lambda: venue_persistence(sizes.venue_history_small, sizes.venue_history_large,
                                           sizes.venue_orders, sizes.venue_json_orders),
        "soak": soak,
    }


def collect(sizes: Sizes, sections: Sequence[str] = SECTIONS,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``sections`` in order; one object: the headline figures at the top, then
    ``targets`` (each met, missed, or not run), the machine, notes, the load other processes
    put on the machine during each section, and every other figure under ``details``."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown section(s) {sorted(unknown)}; choose from {list(SECTIONS)}")
    steps = _steps(sizes)
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    background: dict[str, dict[str, float]] = {}
    started = time.monotonic()
    for name in sections:
        if progress is not None:
            progress(name)
        meter = CpuMeter()
        result = steps[name]()
        background[name] = meter.read()
        for key, value in result.items():
            (figures if key in HEADLINE_KEYS else details)[key] = value
    notes = []
    if "soak" in sections:
        notes.append(f"RSS soak: {sizes.soak_s:g} s at {sizes.soak_rate:,} quotes/s")
    if background:
        notes.append("load from other processes / hypervisor steal during each section, % of all cores: "
                     + ", ".join(f"{k} {v['other_processes_cpu_pct']:g}/{v['steal_pct']:g}"
                                 for k, v in background.items()))
    return {
        **figures,
        "targets": evaluate(figures),
        "machine": machine(),
        "soak_s": sizes.soak_s if "soak" in sections else None,
        "elapsed_s": round(time.monotonic() - started, 1),
        "notes": notes,
        "background": background,
        "details": details,
    }
