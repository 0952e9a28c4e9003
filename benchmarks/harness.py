"""What every benchmark shares: a clean actor system per section, the real trading actors
in the tree layout of the application, timing and memory measures, and a few probes that
observe the real actors without changing what they do.

The probes are the only benchmark-specific code on a measured path:

- ``FeedablePaperConnector`` is the paper connector; ``feed`` calls its own engine quote
  listener, so a benchmark can hand it quote batches exactly as the engine thread would.
- ``DashboardSink`` stands in for the display end of the market data fan-out (the
  dashboard actor itself does not subscribe to market data): it subscribes to topics and
  counts or time-stamps what arrives.
- ``StampingRef`` wraps a connector's ``ActorRef`` in the registry and notes when a
  command is handed to the connector (the moment ``registry.tell`` runs).

Elsewhere, ``quotes.TimedSafetyMonitor`` and ``orders.TimedPositionKeeper`` are the real
actors with one handler wrapped to note the time once it has run.
"""

from __future__ import annotations

import gc
import os
import platform
import queue
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pykka

from actors import topics
from actors.connectors.paper import PaperConfig, PaperConnector
from actors.dashboard import Dashboard, DashboardConfig
from actors.failsafe import Failsafe, FailsafeConfig
from actors.journal import GOVERNOR_WRITER, Journal
from actors.position_keeper import KeeperConfig, PositionKeeper
from actors.risk_governor import RiskConfig, RiskGovernor
from actors.safety_monitor import SafetyConfig, SafetyMonitor
from messages import (
    FailsafeReport,
    OrderFilled,
    PortfolioSnapshot,
    Quote,
    QuoteBatch,
    Side,
    SubmitOrder,
    VenuePositions,
    now_ns,
)
from supervision import NO_BACKOFF, ChildSpec, Strategy, SupervisedActor, Supervisor, Tree, bus, registry
from venues.engine import EngineConfig
from venues.paper import stop_paper_venues

VENUE = "paper"
"""Name of the paper connector (and of its venue) in every benchmark."""

ACCOUNT = "PAPER-1"
"""The paper connector's account at the venue."""

NS_PER_MS = 1_000_000

BENCH_RISK = RiskConfig(
    max_order_quantity=Decimal(1_000_000),
    max_order_notional=Decimal(10) ** 12,
    max_position=Decimal(10) ** 9,
    max_open_positions=10_000,
    max_daily_notional=Decimal(10) ** 15,
    daily_loss_limit=Decimal(10) ** 12,
    max_orders_per_s=1_000_000,
)
"""Pre-trade limits raised so that the benchmark's order flow is never refused; every
check still runs."""


# ---- numbers -------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile of ``values`` (nearest rank); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def latency_summary_ms(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50, p90, p99, max and count of latencies given in nanoseconds, in milliseconds."""
    ms = [s / NS_PER_MS for s in samples_ns]
    return {
        "p50_ms": round(percentile(ms, 50), 4),
        "p90_ms": round(percentile(ms, 90), 4),
        "p99_ms": round(percentile(ms, 99), 4),
        "max_ms": round(max(ms), 4) if ms else 0.0,
        "samples": len(ms),
    }


def rss_mb() -> float:
    """Resident set size of this process in MiB (from /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def machine() -> dict[str, Any]:
    """The machine the figures were taken on."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


# ---- a clean actor system per section ------------------------------------------------------


def reset_actor_system() -> None:
    """Stop every actor and paper venue; forget every name and subscription."""
    pykka.ActorRegistry.stop_all(block=True, timeout=10)
    stop_paper_venues()
    registry.reset()
    bus.reset()


@contextmanager
def section(name: str, root: Path | None = None) -> Iterator[Path]:
    """A fresh state directory (under ``root``, else the system's temporary directory) and
    an empty registry and bus; everything started inside is stopped on the way out and the
    directory removed."""
    reset_actor_system()
    state_dir = Path(tempfile.mkdtemp(prefix=f"tg-bench-{name}-", dir=root))
    try:
        yield state_dir
    finally:
        reset_actor_system()
        shutil.rmtree(state_dir, ignore_errors=True)


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect, then keep what exists now out of the collector's sight (the benchmark's own
    pre-built data would otherwise be scanned by every full collection it triggers)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class GcPauses:
    """Notes every garbage collection while in use (a ``with`` block): a collection holds
    the interpreter lock, so it stalls every actor for as long as it runs."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append((time.perf_counter() - self._started) * 1000.0)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, float]:
        """Collections per generation and the longest pause of each, in milliseconds."""
        out: dict[str, float] = {}
        for generation, pauses in self.pauses.items():
            out[f"gen{generation}_collections"] = len(pauses)
            out[f"gen{generation}_max_ms"] = round(max(pauses), 3) if pauses else 0.0
        return out


# ---- the real actors, laid out as the application does -------------------------------------


def symbols(count: int) -> tuple[str, ...]:
    """``count`` synthetic symbol names."""
    return tuple(f"S{i:04d}" for i in range(count))


def start_mid(index: int) -> Decimal:
    """A starting mid for the ``index``-th synthetic symbol, between 20 and about 520."""
    return Decimal(20 + index % 500) + Decimal(index % 7) / 10


def paper_config(names: Sequence[str], *, interval_s: float, depth: int = 1_000_000) -> PaperConfig:
    """The paper connector for ``names`` (subscribed and traded), stepping every
    ``interval_s``; the venue's account is not persisted."""
    engine = EngineConfig(symbols={s: start_mid(i) for i, s in enumerate(names)}, depth=Decimal(depth),
                          volatility_bps=Decimal(2))
    return PaperConfig(name=VENUE, kind="paper", symbols=tuple(names), quote_interval_s=interval_s,
                       persist=False, engine=engine)


def core_specs(
    state_dir: Path,
    connector: PaperConfig,
    *,
    keeper_class: type[PositionKeeper] = PositionKeeper,
    keeper_kwargs: dict[str, Any] | None = None,
    monitor_class: type[SafetyMonitor] = SafetyMonitor,
    monitor_kwargs: dict[str, Any] | None = None,
    governor: bool = True,
    failsafe: bool = True,
    strategies: Sequence[ChildSpec] = (),
    dashboard: bool = True,
    sink_topics: Sequence[str] = (),
) -> list[ChildSpec]:
    """The root's children in the application's order (keeper, governor, failsafe, safety
    monitor, connectors, strategies, dashboard) plus, last, a ``DashboardSink`` on
    ``sink_topics``. The dashboard is the real one: its sockets in ``state_dir``, a status
    snapshot (an ask of every core actor) published every half second."""
    specs = [ChildSpec(name="position_keeper", actor_class=keeper_class, args=(KeeperConfig(), state_dir),
                       kwargs=keeper_kwargs or {})]
    if governor:
        specs.append(ChildSpec(name="risk_governor", actor_class=RiskGovernor,
                               args=(BENCH_RISK, state_dir, {VENUE: tuple(connector.symbols)})))
    if failsafe:
        specs.append(ChildSpec(name="failsafe", actor_class=Failsafe,
                               args=(FailsafeConfig(), state_dir, (VENUE,))))
    specs.append(ChildSpec(name="safety_monitor", actor_class=monitor_class,
                           args=(SafetyConfig(), state_dir), kwargs=monitor_kwargs or {}))
    paper = ChildSpec(name=VENUE, actor_class=FeedablePaperConnector, args=(connector, state_dir))
    specs.append(ChildSpec(name="connectors", actor_class=Supervisor, args=([paper],),
                           kwargs={"strategy": Strategy.ONE_FOR_ONE, "backoff": NO_BACKOFF}))
    if strategies:
        specs.append(ChildSpec(name="strategies", actor_class=Supervisor, args=(list(strategies),),
                               kwargs={"strategy": Strategy.ONE_FOR_ONE, "backoff": NO_BACKOFF}))
    if dashboard:
        specs.append(ChildSpec(name="dashboard", actor_class=Dashboard,
                               args=(DashboardConfig(), state_dir, (VENUE,))))
    if sink_topics:
        specs.append(ChildSpec(name="dashboard_sink", actor_class=DashboardSink, args=(tuple(sink_topics),)))
    return specs


def start_tree(specs: Sequence[ChildSpec]) -> Tree:
    """Start a root (rest_for_one, as the application) over ``specs``; returns once every
    child passed the start barrier."""
    tree = Tree(list(specs), name="root", strategy=Strategy.REST_FOR_ONE, intensity=100, period_s=1.0)
    tree.start(timeout_s=30.0)
    return tree


def write_ahead(state_dir: Path, orders: Sequence[SubmitOrder]) -> None:
    """Journal ``orders`` as the risk governor writes its orders ahead of sending them (a
    fill of an order the journal never held is activity from elsewhere: a WARNING)."""
    with Journal(state_dir / KeeperConfig().journal_name, writer=GOVERNOR_WRITER) as journal:
        for order in orders:
            journal.record_order(order)


def seed_positions(names: Sequence[str], count: int, state_dir: Path) -> None:
    """Give the position keeper ``count`` open positions (orders written ahead, their fills
    published on ORDERS, as a connector does), so quotes move its marks and it publishes
    snapshots as in service."""
    write_ahead(state_dir, [
        SubmitOrder(client_order_id=f"seed-{i}", venue=VENUE, symbol=symbol, side=Side.BUY,
                    quantity=Decimal(10), source="benchmark")
        for i, symbol in enumerate(names[:count])
    ])
    for i, symbol in enumerate(names[:count]):
        bus.publish(topics.ORDERS, OrderFilled(
            client_order_id=f"seed-{i}", venue=VENUE, fill_id=f"seed-{i}", symbol=symbol, side=Side.BUY,
            quantity=Decimal(10), price=start_mid(i), leaves_quantity=Decimal(0), ts_ns=now_ns(),
        ))


def ask(name: str, message: Any, timeout_s: float = 30.0) -> Any:
    """Ask the actor ``name`` (from outside the actor system). Being queued behind every
    message told before it, an answer also means those were handled."""
    ref = registry.lookup(name)
    if ref is None:
        raise RuntimeError(f"benchmark: actor {name} is not running")
    return ref.ask(message, timeout=timeout_s)


class Barrier(msgspec.Struct, frozen=True):
    """Asked of any actor: answered (with None) once everything before it was handled."""


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``condition`` (every millisecond) until it is truthy; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.001)


# ---- probes --------------------------------------------------------------------------------


class FeedablePaperConnector(PaperConnector):
    """The paper connector, reachable from a driver thread as its engine reaches it."""

    instances: ClassVar[dict[str, FeedablePaperConnector]] = {}
    """Running connectors by name (the last generation started)."""

    def setup(self) -> None:
        super().setup()
        FeedablePaperConnector.instances[self.name] = self

    def feed(self, quotes: list[Quote]) -> None:
        """Hand ``quotes`` to the connector as the engine's quote listener does (any thread)."""
        self._on_engine_quotes(quotes)


class GetSinkState(msgspec.Struct, frozen=True):
    """Ask the ``DashboardSink`` for what it counted and time-stamped."""


class DashboardSink(SupervisedActor):
    """The display end of the fan-out: counts quotes and snapshots, and notes (monotonic ns)
    when the venue first reports flat to a failsafe read and when the failsafe reports."""

    def __init__(self, topic_names: tuple[str, ...]) -> None:
        super().__init__()
        self.topic_names = topic_names
        self.quotes = 0
        self.batches = 0
        self.snapshots = 0
        self.flat_ns = 0
        self.report_ns = 0
        self.report_flat = False

    def setup(self) -> None:
        for topic in self.topic_names:
            bus.subscribe(topic, self.name)

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            QuoteBatch: self._on_quotes,
            PortfolioSnapshot: self._on_snapshot,
            VenuePositions: self._on_positions,
            FailsafeReport: self._on_report,
            GetSinkState: lambda _m: {
                "quotes": self.quotes, "batches": self.batches, "snapshots": self.snapshots,
                "flat_ns": self.flat_ns, "report_ns": self.report_ns, "report_flat": self.report_flat,
            },
        }

    def _on_quotes(self, batch: QuoteBatch) -> None:
        self.quotes += len(batch.quotes)
        self.batches += 1

    def _on_snapshot(self, _snapshot: PortfolioSnapshot) -> None:
        self.snapshots += 1

    def _on_positions(self, report: VenuePositions) -> None:
        if not self.flat_ns and report.request_id.startswith("fs-") and not report.positions:
            self.flat_ns = time.perf_counter_ns()

    def _on_report(self, report: FailsafeReport) -> None:
        if not self.report_ns:
            self.report_ns = time.perf_counter_ns()
            self.report_flat = report.flat


class StampingRef:
    """Stands in for an ``ActorRef`` in the registry: forwards every message and notes
    (monotonic ns) when each message accepted by ``watch`` was handed over."""

    def __init__(self, ref: pykka.ActorRef[Any], watch: Callable[[Any], bool]) -> None:
        self._ref = ref
        self._watch = watch
        self.stamps: list[tuple[int, Any]] = []

    def tell(self, message: Any) -> None:
        """Note the message when watched, then tell the real actor."""
        if self._watch(message):
            self.stamps.append((time.perf_counter_ns(), message))
        self._ref.tell(message)

    def ask(self, message: Any, timeout: float | None = None) -> Any:
        """Ask the real actor."""
        return self._ref.ask(message, timeout=timeout)

    def is_alive(self) -> bool:
        """True while the real actor runs."""
        return self._ref.is_alive()

    def install(self, name: str) -> None:
        """Put this wrapper in the registry in place of ``name``'s ref."""
        generation = registry.generation(name) or 0
        registry.register(name, self, generation)  # type: ignore[arg-type]


# ---- pacing --------------------------------------------------------------------------------


def paced(interval_s: float, duration_s: float, action: Callable[[int], None],
          stop: threading.Event | None = None) -> dict[str, float]:
    """Call ``action(n)`` every ``interval_s`` for ``duration_s`` (on this thread) on a fixed
    schedule; a late call is made at once, but a schedule more than one interval behind is
    restarted from now rather than caught up in a burst. Returns calls and achieved rate."""
    calls = 0
    started = time.perf_counter()
    end = started + duration_s
    due = started
    while True:
        now = time.perf_counter()
        if now >= end or (stop is not None and stop.is_set()):
            break
        if now < due:
            time.sleep(due - now)
            continue
        action(calls)
        calls += 1
        due += interval_s
        if now - due > interval_s:
            due = now
    elapsed = time.perf_counter() - started
    return {"calls": calls, "elapsed_s": elapsed, "rate_per_s": calls / elapsed if elapsed else 0.0}


# ---- the machine's own noise ---------------------------------------------------------------


def _cpu_jiffies() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies of every CPU since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    total = sum(fields[:8])
    return total - idle - steal, steal, total


class CpuMeter:
    """How busy the machine was outside this process (and its children) over a section:
    other processes compete for the same cores and show up in every latency tail."""

    def __init__(self) -> None:
        self._start = _cpu_jiffies()
        self._own = self._own_seconds()
        self._wall = time.monotonic()

    @staticmethod
    def _own_seconds() -> float:
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    def read(self) -> dict[str, float]:
        """Percent of the whole machine (all cores): busy in other processes, and stolen by
        the hypervisor, since this meter was made."""
        busy, steal, total = _cpu_jiffies()
        d_total = max(1, total - self._start[2])
        hz = os.sysconf("SC_CLK_TCK")
        own = (self._own_seconds() - self._own) * hz
        others = max(0.0, (busy - self._start[0]) - own)
        return {"other_processes_cpu_pct": round(100.0 * others / d_total, 1),
                "steal_pct": round(100.0 * (steal - self._start[1]) / d_total, 1)}


def journal_commit_latency(directory: Path | None = None, commits: int = 300) -> dict[str, float]:
    """The floor under every journaled record: p50/p99 of one small insert committed by
    SQLite in WAL mode with ``synchronous=FULL`` (as the journal does) in ``directory``,
    else the system's temporary directory."""
    samples: list[int] = []
    with tempfile.TemporaryDirectory(prefix="tg-bench-commit-", dir=directory) as scratch:
        db = sqlite3.connect(Path(scratch) / "probe.sqlite3", isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            for i in range(commits):
                started = time.perf_counter_ns()
                db.execute("INSERT INTO probe (id, body) VALUES (?, ?)", (i, "x" * 200))
                samples.append(time.perf_counter_ns() - started)
        finally:
            db.close()
    return latency_summary_ms(samples)


def thread_handoff_latency(seconds: float = 2.0, interval_s: float = 0.001) -> dict[str, float]:
    """The floor under every actor hop on this machine: p50/p99 from putting a timestamp on
    a ``queue.Queue`` to a plain waiting thread taking it, paced like the quote feed."""
    inbox: queue.Queue[int | None] = queue.Queue()
    samples: list[int] = []

    def take() -> None:
        while True:
            sent = inbox.get()
            if sent is None:
                return
            samples.append(time.perf_counter_ns() - sent)

    thread = threading.Thread(target=take, name="handoff-probe")
    thread.start()
    paced(interval_s, seconds, lambda _n: inbox.put(time.perf_counter_ns()))
    inbox.put(None)
    thread.join()
    return latency_summary_ms(samples)
