"""The simulated venue's persistence: cost of one order event against the account's history.

A venue with a store (``VenueEngine.persist``) commits what each event changed in one
small SQLite transaction; the way it used to be done (and the baseline measured here in
the same run) rewrote and fsynced the whole account as JSON after every event. Each is
timed on an account that already holds a small and a large number of executions; the
figure that matters is the ratio large/small: about 1 when the cost does not grow with
the history, about large/small when it does.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from messages import OrderEvent, OrderFilled, Side, SubmitOrder
from venues.engine import EngineConfig, VenueEngine

_ACCOUNT = "BENCH"
_CONFIG = EngineConfig(symbols={"AAPL": Decimal(100)}, volatility_bps=Decimal(0),
                       depth=Decimal(10**12))


def _engine_with_history(executions: int) -> VenueEngine:
    """A venue whose account already holds ``executions`` fills (built, not traded)."""
    engine = VenueEngine("bench", _CONFIG)
    fills = [
        OrderFilled(client_order_id=f"h{i}", venue="bench", fill_id=f"bench-{i + 1}",
                    symbol="AAPL", side=Side.BUY if i % 2 else Side.SELL, quantity=Decimal(1),
                    price=Decimal("100.01"), leaves_quantity=Decimal(0),
                    venue_order_id=str(i + 1), ts_ns=1)
        for i in range(executions)
    ]
    state = {
        "version": 1, "venue": "bench", "next_order_id": executions + 1,
        "next_fill_id": executions + 1,
        "accounts": {_ACCOUNT: {"executions": fills, "order_ids": [f.client_order_id for f in fills],
                                "positions": {}}},
    }
    engine.load_state(msgspec.json.encode(state, enc_hook=str))
    return engine


def _time_orders(engine: VenueEngine, orders: int) -> list[float]:
    """Milliseconds per market order (each is two events: accepted, filled)."""
    samples = []
    for n in range(orders):
        order = SubmitOrder(client_order_id=f"b{n}", venue="bench", symbol="AAPL",
                            side=Side.BUY if n % 2 else Side.SELL, quantity=Decimal(1))
        started = time.perf_counter()
        engine.submit(_ACCOUNT, order)
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def _store_cost(executions: int, orders: int, directory: Path) -> float:
    engine = _engine_with_history(executions)
    engine.persist(directory / f"store-{executions}.sqlite3")  # one full write, not timed
    try:
        return statistics.median(_time_orders(engine, orders))
    finally:
        engine.close_store()


def _json_cost(executions: int, orders: int, directory: Path) -> float:
    engine = _engine_with_history(executions)
    path = directory / f"state-{executions}.json"

    def save(_account: str, _event: OrderEvent) -> None:
        engine.save(path)  # the whole account, after every event

    engine.add_order_listener(save)
    return statistics.median(_time_orders(engine, orders))


def venue_persistence(small: int, large: int, orders: int, json_orders: int) -> dict[str, Any]:
    """Per-order cost with the store and with the whole-account JSON baseline, at ``small``
    and ``large`` executions of history; medians over ``orders`` (``json_orders``) orders."""
    with tempfile.TemporaryDirectory(prefix="tg-bench-venue-") as scratch:
        directory = Path(scratch)
        store_small = _store_cost(small, orders, directory)
        store_large = _store_cost(large, orders, directory)
        json_small = _json_cost(small, json_orders, directory)
        json_large = _json_cost(large, json_orders, directory)
    return {
        "venue_store_growth_x": round(store_large / store_small, 2),
        "venue_store": {
            "history_small": small,
            "history_large": large,
            "store_order_ms_small": round(store_small, 3),
            "store_order_ms_large": round(store_large, 3),
            "json_baseline_order_ms_small": round(json_small, 3),
            "json_baseline_order_ms_large": round(json_large, 3),
            "json_baseline_growth_x": round(json_large / json_small, 1),
            "store_vs_json_at_large_x": round(json_large / store_large, 1),
        },
    }
