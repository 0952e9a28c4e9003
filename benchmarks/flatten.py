"""The failsafe procedure with open positions: how long until every cancel and closing
order is handed to the connector, and until the venue reports flat."""

from __future__ import annotations

import statistics
import time
from decimal import Decimal
from typing import Any

from actors import topics
from actors.connectors.paper import PaperConfig
from actors.position_keeper import GetPortfolio
from benchmarks.harness import (
    ACCOUNT,
    NS_PER_MS,
    VENUE,
    Barrier,
    FeedablePaperConnector,
    GetSinkState,
    StampingRef,
    ask,
    core_specs,
    paper_config,
    section,
    start_tree,
    symbols,
    wait_until,
    write_ahead,
)
from messages import FAILSAFE_SOURCE, CancelAll, FlattenRequested, Side, SubmitOrder, now_ns
from supervision import registry
from venues.paper import paper_venue


def _is_failsafe_command(message: Any) -> bool:
    return isinstance(message, (CancelAll, SubmitOrder)) and message.source == FAILSAFE_SOURCE


def _trade_history(config: PaperConfig, fills: int) -> None:
    """Give the paper account ``fills`` earlier executions (bought and sold back, so flat):
    the venue a long-running service talks to has a history."""
    venue = paper_venue(config.name, config.engine, interval_s=config.quote_interval_s)
    symbol = config.symbols[0]
    for n in range(fills):
        venue.engine.submit(ACCOUNT, SubmitOrder(
            client_order_id=f"history-{n}", venue=config.name, symbol=symbol,
            side=Side.BUY if n % 2 == 0 else Side.SELL, quantity=Decimal(1), source="benchmark"))


def _one_flatten(positions: int, history_fills: int = 0) -> dict[str, float]:
    names = symbols(positions)
    with section("failsafe") as state_dir:
        config = paper_config(names, interval_s=0.05)
        if history_fills:
            _trade_history(config, history_fills)
        specs = core_specs(state_dir, config,
                           sink_topics=(topics.POSITIONS, topics.FAILSAFE, topics.DASHBOARD))
        tree = start_tree(specs)
        connector = FeedablePaperConnector.instances[VENUE]
        venue = connector.venue
        assert venue is not None
        # Open one position per symbol, straight at the connector (as if traded earlier),
        # the orders written ahead as the governor does.
        opening = [SubmitOrder(client_order_id=f"open-{i}", venue=VENUE, symbol=symbol,
                               side=Side.BUY if i % 2 == 0 else Side.SELL,
                               quantity=Decimal(10), source="benchmark", created_ns=now_ns())
                   for i, symbol in enumerate(names)]
        write_ahead(state_dir, opening)
        for order in opening:
            registry.tell(VENUE, order)
        wait_until(lambda: len(venue.engine.positions(ACCOUNT)) == positions, 60, "positions at the venue")
        wait_until(lambda: sum(1 for p in ask("position_keeper", GetPortfolio()).positions if p.quantity)
                   == positions, 60, "positions in the keeper")
        for name in ("risk_governor", "failsafe", VENUE, "dashboard_sink"):
            ask(name, Barrier())
        stamps = StampingRef(connector.actor_ref, _is_failsafe_command)
        stamps.install(VENUE)
        triggered = time.perf_counter_ns()
        registry.tell("failsafe", FlattenRequested(reason="benchmark", source="benchmark", ts_ns=now_ns()))
        wait_until(lambda: ask("dashboard_sink", GetSinkState())["report_ns"], 30, "the failsafe report")
        sink = ask("dashboard_sink", GetSinkState())
        left = venue.engine.positions(ACCOUNT)
        tree.stop()
    closing = [ns for ns, m in stamps.stamps if isinstance(m, SubmitOrder)]
    first_cancel = [ns for ns, m in stamps.stamps if isinstance(m, CancelAll)][:1]
    complete = len(closing) == positions and first_cancel and sink["flat_ns"] and sink["report_flat"]
    if not complete or left:
        raise RuntimeError(f"benchmark: the failsafe did not flatten {positions} positions "
                           f"({len(closing)} closing orders, {len(left)} left at the venue)")
    handoff = max(max(closing), first_cancel[0]) - triggered
    return {
        "handoff_ms": handoff / NS_PER_MS,
        "flat_ms": (sink["flat_ns"] - triggered) / NS_PER_MS,
        "report_ms": (sink["report_ns"] - triggered) / NS_PER_MS,
    }


def failsafe_flatten(positions: int = 50, runs: int = 5, history_fills: int = 0) -> dict[str, Any]:
    """The failsafe triggered with ``positions`` open positions (one per symbol) at the
    paper venue, with the whole core running: ``failsafe_handoff_ms`` from the trigger
    (``FlattenRequested`` told to the failsafe) until the mass cancel and every closing
    order were handed to the connector, ``failsafe_flat_ms`` until the venue's answer to
    the failsafe's re-read reports no position. Medians over ``runs`` fresh trees. With
    ``history_fills`` the paper account has that many earlier executions."""
    results = [_one_flatten(positions, history_fills) for _ in range(runs)]
    handoffs = [r["handoff_ms"] for r in results]
    flats = [r["flat_ms"] for r in results]
    reports = [r["report_ms"] for r in results]
    return {
        "failsafe_handoff_ms": round(statistics.median(handoffs), 3),
        "failsafe_flat_ms": round(statistics.median(flats), 3),
        "failsafe_report_ms": round(statistics.median(reports), 3),
        "failsafe_runs": {"handoff_ms": [round(x, 3) for x in handoffs],
                          "flat_ms": [round(x, 3) for x in flats],
                          "report_ms": [round(x, 3) for x in reports]},
        "failsafe_positions": positions,
    }
