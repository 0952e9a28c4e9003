"""Order round trip: strategy -> risk governor checks -> paper venue -> fill -> the
position keeper has journaled the fill."""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from actors import topics
from actors.position_keeper import KeeperConfig, PositionKeeper
from actors.risk_governor import RiskGovernor
from actors.safety_monitor import SafetyChecks, SafetyConfig
from benchmarks.harness import (
    BENCH_RISK,
    VENUE,
    Barrier,
    GcPauses,
    ask,
    core_specs,
    latency_summary_ms,
    paced,
    paper_config,
    section,
    start_mid,
    start_tree,
    symbols,
    wait_until,
)
from messages import (
    ConnectorUp,
    GetRiskState,
    GetSafetyStats,
    Mode,
    OrderFilled,
    OrderType,
    Quote,
    QuoteBatch,
    Reconciliation,
    Side,
    SubmitOrder,
    now_ns,
)
from supervision import ChildSpec, SupervisedActor, bus, registry


class _SendNext(msgspec.Struct, frozen=True):
    """Tells the order source to send its next order."""


class BenchOrderSource(SupervisedActor):
    """An order source (a strategy): on each ``_SendNext`` it sends one market order for one
    unit to the risk governor, buying and selling each symbol in turn so positions stay
    small, and notes (monotonic ns) when it sent it."""

    def __init__(self, venue: str, symbol_names: tuple[str, ...], sent: dict[str, int]) -> None:
        super().__init__()
        self.venue = venue
        self.symbol_names = symbol_names
        self.sent = sent
        self.count = 0

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {_SendNext: self._send}

    def _send(self, _message: _SendNext) -> None:
        n = self.count
        self.count += 1
        order = SubmitOrder(
            client_order_id=f"bench-{n}", venue=self.venue,
            symbol=self.symbol_names[(n // 2) % len(self.symbol_names)],
            side=Side.BUY if n % 2 == 0 else Side.SELL, quantity=Decimal(1), source=self.name,
            created_ns=now_ns(),
        )
        self.sent[order.client_order_id] = time.perf_counter_ns()
        registry.tell("risk_governor", order)


class TimedPositionKeeper(PositionKeeper):
    """The position keeper; once it has journaled (and applied) a fill of a benchmark order
    it notes the time since the source sent that order."""

    def __init__(self, config: KeeperConfig, state_dir: Path, *, sent: dict[str, int],
                 done: dict[str, int]) -> None:
        super().__init__(config, state_dir)
        self._sent = sent
        self._done = done

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        table = super().handlers()
        on_fill = table[OrderFilled]

        def timed(fill: OrderFilled) -> None:
            on_fill(fill)
            started = self._sent.get(fill.client_order_id)
            if started is not None and fill.leaves_quantity == 0:
                self._done[fill.client_order_id] = time.perf_counter_ns() - started

        table[OrderFilled] = timed
        return table


def order_round_trip(rate: int = 1_000, seconds: float = 5.0, warmup_orders: int = 200,
                     state_root: Path | None = None) -> dict[str, Any]:
    """p50/p99 of the order round trip at ``rate`` orders per second (paced) for
    ``seconds``: the source actor sends, the governor runs every pre-trade check, journals
    the order (write-ahead), publishes it on SUBMITTED and passes it to the paper
    connector, the engine fills it at once (no simulated latency; the venue's account is
    not persisted), and the clock stops when the keeper has committed the fill to its
    journal. The first ``warmup_orders`` are not counted. The state directory (and the
    journal in it) is made under ``state_root``, else the system's temporary directory."""
    names = symbols(4)
    sent: dict[str, int] = {}
    done: dict[str, int] = {}
    with section("orders", state_root) as state_dir:
        source = ChildSpec(name="bench_source", actor_class=BenchOrderSource, args=(VENUE, names, sent))
        specs = core_specs(state_dir, paper_config(names, interval_s=0.1), keeper_class=TimedPositionKeeper,
                           keeper_kwargs={"sent": sent, "done": done}, strategies=[source],
                           sink_topics=(topics.PORTFOLIO, topics.DASHBOARD))
        tree = start_tree(specs)
        wait_until(lambda: ask("risk_governor", GetRiskState())["mode"] == Mode.LIVE, 10, "the governor LIVE")
        # The governor prices market orders from the last mid: wait for a quote per symbol.
        wait_until(lambda: ask("safety_monitor", GetSafetyStats()).quotes >= len(names), 10, "quotes")
        ask("risk_governor", Barrier())
        source_ref = registry.lookup("bench_source")
        assert source_ref is not None
        cpu_before = os.times()
        with GcPauses() as collections:
            pace = paced(1.0 / rate, seconds, lambda _n: source_ref.tell(_SendNext()))
            # Every order sent must come back filled and journaled (or the run is broken).
            try:
                wait_until(lambda: len(done) >= len(sent), 30, "every fill journaled")
            except TimeoutError:
                pass  # reported below, with the governor's counters
        cpu_after = os.times()
        risk = ask("risk_governor", GetRiskState())
        tree.stop()
    if len(done) < len(sent):
        raise RuntimeError(f"benchmark: {len(sent) - len(done)} of {len(sent)} orders were not filled and "
                           f"journaled (governor: {risk})")
    ordered = [done[f"bench-{n}"] for n in range(warmup_orders, len(sent))]
    summary = latency_summary_ms(ordered)
    return {
        "order_rtt_p50_ms": summary["p50_ms"],
        "order_rtt_p99_ms": summary["p99_ms"],
        "order_rtt": summary,
        "orders_per_s": round(pace["rate_per_s"]),
        "orders_rejected": risk.get("rejected", 0),
        "order_gc": collections.summary(),
        # The whole process's CPU while orders flowed (every actor, the market data, the
        # dashboard), per order: how much of the one interpreter lock an order takes.
        "order_cpu_ms_per_order": round(
            ((cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system))
            / max(1, pace["calls"]) * 1000.0, 3),
    }


def tracker_gc_pause(orders: int = 100_000, collections: int = 3) -> dict[str, Any]:
    """The longest stall the safety monitor's order state can cause: a full garbage
    collection with its order tracker at its bound (``orders`` submitted orders, each with
    one fill, fed through the real checks), against the same collection without it.
    Median of ``collections`` collections each."""

    def full_collection_ms() -> float:
        times = []
        for _ in range(collections):
            started = time.perf_counter()
            gc.collect()
            times.append((time.perf_counter() - started) * 1000.0)
        return statistics.median(times)

    gc.collect()
    without = full_collection_ms()
    checks = SafetyChecks(SafetyConfig(max_tracked_orders=orders))
    one, price = Decimal(1), Decimal(100)
    for n in range(orders):
        checks.check(SubmitOrder(client_order_id=f"t-{n}", venue=VENUE, symbol="S0000", side=Side.BUY,
                                 quantity=one, source="benchmark"))
        checks.check(OrderFilled(client_order_id=f"t-{n}", venue=VENUE, fill_id=f"tf-{n}", symbol="S0000",
                                 side=Side.BUY, quantity=one, price=price, leaves_quantity=Decimal(0)))
    tracked = len(checks.orders)
    with_tracker = full_collection_ms()
    del checks
    gc.collect()
    return {
        "gc_full_pause_ms_tracker_at_bound": round(with_tracker, 2),
        "gc_full_pause_ms_without_tracker": round(without, 2),
        "tracked_orders": tracked,
    }


class _RestingVenue(SupervisedActor):
    """Stands in for a connector whose venue rests every order (never fills it): says it is
    up and publishes one quote per symbol, then takes orders and says nothing."""

    def __init__(self, symbol_names: tuple[str, ...]) -> None:
        super().__init__()
        self.symbol_names = symbol_names

    def setup(self) -> None:
        bus.publish(topics.CONNECTORS, ConnectorUp(name=self.name, ts_ns=now_ns()))
        # No position keeper here: the venue is reconciled as the keeper would say (flat).
        bus.publish(topics.PORTFOLIO, Reconciliation(venue=self.name, reconciled=True, ts_ns=now_ns()))
        quotes = tuple(Quote(venue=self.name, symbol=s, bid=start_mid(i) - Decimal("0.01"),
                             ask=start_mid(i) + Decimal("0.01"), bid_size=Decimal(100), ask_size=Decimal(100),
                             ts_ns=now_ns()) for i, s in enumerate(self.symbol_names))
        bus.publish(topics.MARKET, QuoteBatch(venue=self.name, quotes=quotes, recv_ns=now_ns()))


def governor_submit_cost(working: tuple[int, ...] = (0, 1_000), samples: int = 300) -> dict[str, Any]:
    """What one order costs the risk governor with ``working`` orders already resting at
    the venue (limit orders it never fills): p50 of asking the governor to take an order
    (every check, the write-ahead journal record, the SUBMITTED publish and the hand-off to
    the connector), in milliseconds, per working-order count."""
    names = symbols(4)
    out: dict[str, Any] = {}
    with section("governor") as state_dir:
        tree = start_tree([
            ChildSpec(name="risk_governor", actor_class=RiskGovernor,
                      args=(BENCH_RISK, state_dir, {VENUE: names})),
            ChildSpec(name=VENUE, actor_class=_RestingVenue, args=(names,)),
        ])
        wait_until(lambda: ask("risk_governor", GetRiskState())["mode"] == Mode.LIVE, 10, "the governor LIVE")
        ref = registry.lookup("risk_governor")
        assert ref is not None
        sent = 0

        def order() -> SubmitOrder:
            nonlocal sent
            sent += 1
            i = sent % len(names)
            return SubmitOrder(client_order_id=f"rest-{sent}", venue=VENUE, symbol=names[i], side=Side.BUY,
                               quantity=Decimal(1), order_type=OrderType.LIMIT,
                               limit_price=start_mid(i) - Decimal("0.50"), source="benchmark")

        for target in sorted(working):
            while ask("risk_governor", GetRiskState())["working_orders"] < target:
                for _ in range(min(500, target - ask("risk_governor", GetRiskState())["working_orders"])):
                    ref.tell(order())
            timings = []
            for _ in range(samples):
                started = time.perf_counter_ns()
                if ref.ask(order(), timeout=10) is not None:
                    raise RuntimeError("benchmark: the governor refused a resting order")
                timings.append(time.perf_counter_ns() - started)
            out[str(target)] = latency_summary_ms(timings)["p50_ms"]
        tree.stop()
    return {"governor_submit_p50_ms_by_working_orders": out}
