"""A kit to test a strategy: the whole service, in this process, on the paper venue.

``StrategyKit`` starts what ``tradeguard run`` starts -- position keeper and its journal,
risk governor, failsafe, safety monitor, a paper connector, the strategies of the
configuration, the dashboard -- at test speed, under a state directory of the test's own.
The strategies are found by kind exactly as in production (entry points in
``tradeguard.strategies``) and their sections are checked by the same code. The kit then
answers the questions a strategy's tests ask: what the strategy believes (its
``StrategyState``), what the journal holds, what the venue holds; and it can crash a
strategy to watch it restart.

    from tradeguard.testing import StrategyKit

    def test_my_strategy_trades(tmp_path):
        with StrategyKit([{"name": "mine", "kind": "mine", "symbols": ["AAPL"]}], tmp_path) as kit:
            state = kit.wait_fills(3)
            assert kit.journal_fills("mine")

One kit runs at a time in a process (the actor registry and bus are process-wide); it
resets both when it starts and when it stops. It needs no test framework.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pykka

from actors.journal import READER, Journal, OrderRecord
from messages import (
    GetPortfolio,
    GetRiskState,
    GetStrategyState,
    OrderFilled,
    PortfolioSnapshot,
    QuoteBatch,
    StrategyState,
)
from supervision import bus, registry
from tradeguard.app import Service
from tradeguard.settings import Settings, parse_settings
from venues.paper import paper_venue, stop_paper_venues

VENUE = "paper"
"""Name of the kit's paper connector (a strategy's default ``venue``)."""
SYMBOLS = ("AAPL", "MSFT")
"""Symbols the kit's paper connector subscribes by default."""

T = TypeVar("T")


def kit_config(strategies: Iterable[Mapping[str, Any]], *, symbols: Iterable[str] = SYMBOLS,
               **sections: Mapping[str, Any]) -> dict[str, Any]:
    """The kit's configuration as a TOML-shaped dict: the paper venue at test speed, fast
    restarts, generous rate limits, and ``strategies`` as ``[[strategies]]`` sections;
    ``sections`` (``risk={...}``, ``connector={...}``) are merged over the defaults."""
    connector: dict[str, Any] = {"name": VENUE, "kind": "paper", "symbols": list(symbols),
                                 "quote_interval_s": 0.02, "persist": False, "health_interval_s": 0.2}
    data: dict[str, Any] = {
        "service": {"on_shutdown": "leave", "shutdown_timeout_s": 5.0, "start_timeout_s": 15.0},
        "risk": {"max_orders_per_s": 1000, "recover_after_s": 0.5},
        "supervision": {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, "backoff_jitter_s": 0.01,
                        "connectors_intensity": 50, "root_intensity": 20},
        "connectors": [connector],
        "strategies": [dict(section) for section in strategies],
    }
    for name, values in sections.items():
        if name == "connector":
            connector.update(values)
        else:
            data[name] = {**data.get(name, {}), **values}
    return data


class StrategyKit:
    """The service with the given strategies, on the paper venue, in this process."""

    def __init__(self, strategies: Iterable[Mapping[str, Any]] | Mapping[str, Any], state_dir: Path | str,
                 *, symbols: Iterable[str] = SYMBOLS, **sections: Mapping[str, Any]) -> None:
        """``strategies``: one ``[[strategies]]`` section or several, as dicts (what the TOML
        file would hold); ``state_dir``: where the journal goes (a test's temporary
        directory). Raises ``ConfigError`` for a section the service would refuse."""
        if isinstance(strategies, Mapping):
            strategies = [strategies]
        self.data = kit_config(list(strategies), symbols=symbols, **sections)
        self.settings: Settings = parse_settings(copy.deepcopy(self.data), environ={})
        self.state_dir = Path(state_dir)
        self.service: Service | None = None

    # ---- life ---------------------------------------------------------------------------

    def start(self) -> StrategyKit:
        """Start the service; returns once every actor runs (the start barrier)."""
        registry.reset()
        bus.reset()
        self.service = Service(self.settings, self.state_dir)
        try:
            self.service.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the service and forget the paper venue (its account goes with it)."""
        service, self.service = self.service, None
        try:
            if service is not None:
                service.stop("leave")
        finally:
            stop_paper_venues()
            pykka.ActorRegistry.stop_all(block=True, timeout=10)
            registry.reset()
            bus.reset()

    def __enter__(self) -> StrategyKit:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- what the strategy believes ---------------------------------------------------------

    def strategy_names(self) -> list[str]:
        """The configured strategies' names."""
        return [s.name for s in self.settings.strategy_configs()]

    def state(self, name: str | None = None, timeout_s: float = 2.0) -> StrategyState | None:
        """What the strategy ``name`` (default: the first) knows about itself; None while it
        is down or restarting."""
        ref = registry.lookup(name or self.strategy_names()[0])
        if ref is None:
            return None
        try:
            state = ref.ask(GetStrategyState(), timeout=timeout_s)
        except (pykka.Timeout, pykka.ActorDeadError):
            return None
        return state if isinstance(state, StrategyState) else None

    def position(self, symbol: str, name: str | None = None) -> Decimal | None:
        """The strategy's own position in ``symbol`` as it believes it; None while it is down."""
        state = self.state(name)
        return None if state is None else state.positions.get(symbol, Decimal(0))

    def generation(self, name: str | None = None) -> int | None:
        """How many times the strategy was restarted (0 for the first start); None while down."""
        return registry.generation(name or self.strategy_names()[0])

    def wait_ready(self, name: str | None = None, timeout_s: float = 20.0) -> StrategyState:
        """Wait until the strategy has its book and trades."""
        return wait_for(lambda: (s := self.state(name)) is not None and s.ready and s, timeout_s,
                        f"strategy {name or self.strategy_names()[0]} ready")

    def wait_fills(self, count: int, name: str | None = None, timeout_s: float = 20.0) -> StrategyState:
        """Wait until the strategy has applied ``count`` fills since its (last) start."""
        return wait_for(lambda: (s := self.state(name)) is not None and s.fills >= count and s, timeout_s,
                        f"{count} fills of strategy {name or self.strategy_names()[0]}")

    def crash(self, name: str | None = None, timeout_s: float = 20.0) -> StrategyState:
        """Make the strategy fail as a bug would (an exception in a handler), then wait for
        its supervisor to restart it and for the new generation to have its book."""
        name = name or self.strategy_names()[0]
        before = self.generation(name)
        assert before is not None, f"strategy {name} is not running"
        # A quote batch with a hole where a quote should be: the handler raises.
        venue = next(s.venue for s in self.settings.strategy_configs() if s.name == name)
        poison = QuoteBatch(venue=venue, quotes=(None,))  # type: ignore[arg-type]
        ref = registry.lookup(name)
        if ref is not None:
            ref.tell(poison)
        wait_for(lambda: (g := self.generation(name)) is not None and g > before, timeout_s,
                 f"strategy {name} restarted")
        return self.wait_ready(name, timeout_s)

    # ---- what the service and the venue hold --------------------------------------------------

    def portfolio(self) -> PortfolioSnapshot | None:
        """The position keeper's snapshot (every source's positions, by venue and symbol)."""
        if self.service is None:
            return None
        snapshot = self.service.ask("position_keeper", GetPortfolio())
        return snapshot if isinstance(snapshot, PortfolioSnapshot) else None

    def mode(self) -> str | None:
        """The risk governor's trading mode."""
        state = self.service.ask("risk_governor", GetRiskState()) if self.service else None
        return None if not state else str(state["mode"])

    def journal_orders(self, source: str | None = None) -> list[OrderRecord]:
        """The orders in the journal (of ``source`` only, when given)."""
        with self._journal() as journal:
            orders = journal.orders()
        return [o for o in orders if source is None or o.order.source == source]

    def journal_fills(self, source: str | None = None) -> list[OrderFilled]:
        """The fills in the journal (of ``source``'s orders only, when given)."""
        with self._journal() as journal:
            fills = journal.fills()
            ids = None if source is None else {o.order.client_order_id for o in journal.orders()
                                                if o.order.source == source}
        return [f for f in fills if ids is None or f.client_order_id in ids]

    def journal_position(self, source: str, symbol: str) -> Decimal:
        """The net quantity of ``symbol`` the fills of ``source``'s orders built."""
        return sum((f.signed_quantity for f in self.journal_fills(source) if f.symbol == symbol), Decimal(0))

    def venue_positions(self) -> dict[str, Decimal]:
        """Positions as the paper venue itself holds them, per symbol."""
        connector = self.settings.connector_configs()[0]
        account = getattr(connector, "account", "PAPER-1")
        return {p.symbol: p.quantity for p in paper_venue(connector.name).engine.positions(account)}

    def _journal(self) -> Journal:
        return Journal(self.state_dir / self.settings.keeper.journal_name, writer=READER)


def wait_for(condition: Callable[[], T | bool | None], timeout_s: float, what: str,
             interval_s: float = 0.02) -> T:
    """Poll ``condition`` until it gives something truthy, which is returned; ``TimeoutError``
    naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)  # outside the actor system: a test waiting on the service
