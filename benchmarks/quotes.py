"""Market data: throughput of the batched fan-out, the one-message-per-quote baseline, and
the latency from a quote leaving the venue to the safety monitor's verdict on it."""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pykka

from actors import topics
from actors.safety_monitor import SafetyChecks, SafetyConfig, SafetyMonitor
from benchmarks.harness import (
    VENUE,
    Barrier,
    FeedablePaperConnector,
    GetSinkState,
    ask,
    core_specs,
    frozen_heap,
    latency_summary_ms,
    paced,
    paper_config,
    section,
    seed_positions,
    start_mid,
    start_tree,
    symbols,
)
from messages import GetSafetyStats, Quote, QuoteBatch, SafetyEvent

ZERO = Decimal(0)
_TICK = Decimal("0.01")
_SIZE = Decimal(100)


def quote_rounds(names: Sequence[str], rounds: int, *, start_ns: int, step_ns: int = 2_000_000,
                 seed: int = 1) -> list[list[Quote]]:
    """``rounds`` read cycles of one quote per symbol: mids on a one-tick random walk,
    spreads of two or three ticks, venue timestamps ``step_ns`` apart from ``start_ns``.
    Prices are shared ``Decimal`` objects, as a decoder with a price cache would hand out."""
    rng = random.Random(seed)
    prices: dict[int, Decimal] = {}

    def price(ticks: int) -> Decimal:
        value = prices.get(ticks)
        if value is None:
            value = prices[ticks] = Decimal(ticks) * _TICK
        return value

    mids = [int(start_mid(i) / _TICK) for i in range(len(names))]
    steps = (-1, 0, 1)
    out: list[list[Quote]] = []
    ts = start_ns
    for r in range(rounds):
        ts += step_ns
        batch: list[Quote] = []
        for i, symbol in enumerate(names):
            mid = mids[i] = mids[i] + steps[rng.randrange(3)]
            ask = price(mid + 1 + (r + i) % 2)
            batch.append(Quote(venue=VENUE, symbol=symbol, bid=price(mid - 1), ask=ask, bid_size=_SIZE,
                               ask_size=_SIZE, seq=r + 1, ts_ns=ts))
        out.append(batch)
    return out


def _drain(names: Sequence[str]) -> None:
    for name in names:
        ask(name, Barrier())


def quote_throughput(total_quotes: int = 600_000, batch_size: int = 500, repeats: int = 3,
                     *, full_core: bool = False) -> dict[str, Any]:
    """Quotes per second from the paper connector's engine listener through the connector
    actor, the MARKET fan-out, the safety monitor's checks, the position keeper's marks and
    a dashboard-side subscriber, in batches of ``batch_size`` (one quote per symbol).

    Each of ``repeats`` runs hands ``total_quotes / repeats`` pre-built quotes to the
    connector as fast as it takes them and stops the clock when every subscriber has handled
    the last batch. With ``full_core`` the risk governor and the failsafe are in the tree too
    (the governor also keeps a mid per quote)."""
    names = symbols(batch_size)
    per_run = max(batch_size, total_quotes // max(1, repeats) // batch_size * batch_size)
    subscribers = ["safety_monitor", "position_keeper", "dashboard_sink"]
    if full_core:
        subscribers.append("risk_governor")
    with section("quotes") as state_dir:
        specs = core_specs(state_dir, paper_config(names, interval_s=3600.0), governor=full_core,
                           failsafe=full_core, dashboard=full_core,
                           sink_topics=(topics.MARKET, topics.PORTFOLIO, topics.DASHBOARD))
        tree = start_tree(specs)
        connector = FeedablePaperConnector.instances[VENUE]
        seed_positions(names, 10, state_dir)
        _drain([VENUE, *subscribers])
        rates: list[float] = []
        start_ns = time.time_ns()
        for _ in range(repeats):
            rounds = quote_rounds(names, per_run // batch_size, start_ns=start_ns)
            start_ns = rounds[-1][0].ts_ns
            checked_before = ask("safety_monitor", GetSafetyStats()).quotes
            with frozen_heap():
                started = time.perf_counter()
                for batch in rounds:
                    connector.feed(batch)
                _drain([VENUE, *subscribers])
                elapsed = time.perf_counter() - started
            checked = ask("safety_monitor", GetSafetyStats()).quotes - checked_before
            if checked != per_run:
                raise RuntimeError(f"benchmark: the safety monitor checked {checked} of {per_run} quotes")
            rates.append(per_run / elapsed)
            del rounds
        sink = ask("dashboard_sink", GetSinkState())
        tree.stop()
    return {
        "quotes_per_s": round(statistics.median(rates)),
        "runs_quotes_per_s": [round(r) for r in rates],
        "batch_size": batch_size,
        "quotes_per_run": per_run,
        "subscribers": subscribers,
        "snapshots_seen": sink["snapshots"],
    }


# ---- the baseline: one actor message per quote ---------------------------------------------


class _Stage(pykka.ThreadingActor):
    """One link of a plain chain: does its work on a quote and tells the next link."""

    def __init__(self, work: Callable[[Quote], None], next_ref: pykka.ActorRef[Any] | None,
                 expected: int, done: threading.Event) -> None:
        super().__init__()
        self._work = work
        self._next = next_ref
        self._expected = expected
        self._done = done
        self._seen = 0

    def on_receive(self, message: Any) -> None:
        self._work(message)
        if self._next is not None:
            self._next.tell(message)
            return
        self._seen += 1
        if self._seen == self._expected:
            self._done.set()


def _baseline_once(quotes: list[Quote], wanted: set[str]) -> float:
    """One run of the plain chain over ``quotes``; quotes per second."""
    checks = SafetyChecks(SafetyConfig())
    marks: dict[str, Quote] = {}
    count = [0]

    def connector(q: Quote) -> None:
        if q.symbol not in wanted:
            raise ValueError(q.symbol)

    def safety(q: Quote) -> None:
        checks.on_quotes(QuoteBatch(venue=q.venue, quotes=(q,)))

    def keeper(q: Quote) -> None:
        if q.bid > ZERO and q.ask > ZERO:
            marks[q.symbol] = q

    def dashboard(_q: Quote) -> None:
        count[0] += 1

    done = threading.Event()
    with section("baseline"):
        ref: pykka.ActorRef[Any] | None = None
        for work in (dashboard, keeper, safety, connector):
            ref = _Stage.start(work, ref, len(quotes), done)
        assert ref is not None
        with frozen_heap():
            started = time.perf_counter()
            for q in quotes:
                ref.tell(q)
            if not done.wait(600):
                raise TimeoutError("benchmark: the baseline chain did not finish")
            elapsed = time.perf_counter() - started
    if checks.quotes != len(quotes) or count[0] != len(quotes):
        raise RuntimeError("benchmark: the baseline chain lost quotes")
    return len(quotes) / elapsed


def baseline_throughput(total_quotes: int = 120_000, batch_size: int = 500,
                        repeats: int = 3) -> dict[str, Any]:
    """The same path as ``quote_throughput``, built as one Pykka message per quote through
    a plain chain of plain actors: connector (symbol filter) -> safety (the same checks, on
    a one-quote batch) -> keeper (mark) -> dashboard (count). Quotes per second, the median
    of ``repeats`` runs of ``total_quotes / repeats`` quotes."""
    names = symbols(batch_size)
    per_run = max(batch_size, total_quotes // max(1, repeats) // batch_size * batch_size)
    rates: list[float] = []
    start_ns = time.time_ns()
    for _ in range(repeats):
        rounds = quote_rounds(names, per_run // batch_size, start_ns=start_ns)
        start_ns = rounds[-1][0].ts_ns
        rates.append(_baseline_once([q for batch in rounds for q in batch], set(names)))
        del rounds
    return {
        "baseline_quotes_per_s": round(statistics.median(rates)),
        "baseline_runs_quotes_per_s": [round(r) for r in rates],
        "baseline_quotes_per_run": per_run,
    }


# ---- latency to the safety verdict ---------------------------------------------------------


class TimedSafetyMonitor(SafetyMonitor):
    """The safety monitor; after each batch it notes, per quote, the time from the quote's
    venue timestamp to the monitor's verdict (``last_verdict_ns``), while ``recording``."""

    def __init__(self, config: SafetyConfig, state_dir: Path | None = None, *,
                 samples: list[int], recording: threading.Event, events: list[SafetyEvent]) -> None:
        super().__init__(config, state_dir)
        self._samples = samples
        self._recording = recording
        self._events = events

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        table = super().handlers()
        check = table[QuoteBatch]

        def timed(batch: QuoteBatch) -> Any:
            events = check(batch)
            if self._recording.is_set():
                verdict = self.last_verdict_ns
                self._samples.extend(verdict - q.ts_ns for q in batch.quotes)
                if events:
                    self._events.extend(events)
            return events

        table[QuoteBatch] = timed
        return table


def quote_verdict_latency(rate: int = 10_000, seconds: float = 5.0, step_s: float = 0.001,
                          warmup_s: float = 0.5) -> dict[str, Any]:
    """p50/p99 from a quote's venue timestamp (``Quote.ts_ns``, stamped by the paper engine
    as it steps) to the safety monitor's verdict on its batch, at ``rate`` quotes per
    second: the engine steps every ``step_s`` with ``rate * step_s`` symbols, and the whole
    core (keeper, governor, failsafe, monitor, connector, a dashboard-side subscriber)
    is running."""
    per_step = max(1, round(rate * step_s))
    names = symbols(per_step)
    samples: list[int] = []
    events: list[SafetyEvent] = []
    recording = threading.Event()
    with section("verdict") as state_dir:
        specs = core_specs(state_dir, paper_config(names, interval_s=3600.0),
                           monitor_class=TimedSafetyMonitor,
                           monitor_kwargs={"samples": samples, "recording": recording, "events": events})
        tree = start_tree(specs)
        venue = FeedablePaperConnector.instances[VENUE].venue
        assert venue is not None
        engine = venue.engine
        seed_positions(names, min(5, len(names)), state_dir)

        def step(_n: int) -> None:
            engine.step()

        paced(step_s, warmup_s, step)
        _drain([VENUE, "safety_monitor"])
        recording.set()
        pace = paced(step_s, seconds, step)
        _drain([VENUE, "safety_monitor"])
        recording.clear()
        tree.stop()
    summary = latency_summary_ms(samples)
    return {
        "quote_verdict_p50_ms": summary["p50_ms"],
        "quote_verdict_p99_ms": summary["p99_ms"],
        "quote_verdict": summary,
        "verdict_quotes_per_s": round(pace["calls"] * per_step / pace["elapsed_s"]),
        "verdict_batch_size": per_step,
        "verdict_safety_events": len(events),
    }
