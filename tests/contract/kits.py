"""Connector kits: one per connector, each a real venue on loopback plus the connector's
config. The contract suite runs every test against every kit; a new connector gets the
whole suite by adding one kit class here and its name to ``KITS``."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from actors.connectors.base import ConnectorConfig
from venues.engine import EngineConfig, EngineRunner, VenueEngine

SYMBOLS = ("AAPL", "MSFT")
ENGINE = EngineConfig(symbols={"AAPL": Decimal("190"), "MSFT": Decimal("410")}, seed=3,
                      depth=Decimal(5), volatility_bps=Decimal(1))
"""Shallow displayed depth (5) so that an order for 12 fills in parts."""
STEP_S = 0.02
RECONNECT: dict[str, float] = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.5}
"""Reconnection delays short enough for tests."""
VENUE_NAME = "venue"
"""The connector's name in every kit (the ``venue`` of what it emits)."""


class Kit:
    """A venue and how to reach it. Subclasses set ``kind`` and implement the venue."""

    kind = ""
    account = ""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.engine = VenueEngine(VENUE_NAME, ENGINE)
        self.runner: EngineRunner | None = None

    def start_venue(self) -> None:
        """Start the venue (and the engine's clock)."""
        self.runner = EngineRunner(self.engine, interval_s=STEP_S)
        self.runner.start()
        self._start_front()

    def stop_venue(self) -> None:
        """Kill the venue's front: every session drops, the account stays in the engine."""
        self._stop_front()

    def restart_venue(self) -> None:
        """Bring the front back on the same address."""
        self._start_front()

    def close(self) -> None:
        """Stop everything the kit started."""
        self._stop_front()
        if self.runner is not None:
            self.runner.stop()

    def config(self) -> ConnectorConfig:
        """The connector's configuration for this venue."""
        raise NotImplementedError

    def _start_front(self) -> None:
        raise NotImplementedError

    def _stop_front(self) -> None:
        raise NotImplementedError


class PaperKit(Kit):
    """The in-process paper venue."""

    kind = "paper"

    def __init__(self, state_dir: Path) -> None:
        from venues.paper import PaperVenue, _venues

        super().__init__(state_dir)
        self.account = "PAPER-1"
        self.venue = PaperVenue(VENUE_NAME, ENGINE, interval_s=STEP_S)
        self.engine = self.venue.engine
        self._registry = _venues

    def start_venue(self) -> None:
        self._registry[VENUE_NAME] = self.venue
        self.venue.start()

    def _start_front(self) -> None:
        self.venue.recover()

    def _stop_front(self) -> None:
        self.venue.fail("paper venue stopped")

    def close(self) -> None:
        self._registry.pop(VENUE_NAME, None)
        self.venue.stop()

    def config(self) -> ConnectorConfig:
        from actors.connectors.paper import PaperConfig

        return PaperConfig(name=VENUE_NAME, kind="paper", symbols=SYMBOLS, persist=False,
                           quote_interval_s=STEP_S, engine=ENGINE, health_interval_s=0.2,
                           **RECONNECT)


class ZmqKit(Kit):
    """The ZeroMQ venue: PUB market data, ROUTER order gateway."""

    kind = "zmq"

    def __init__(self, state_dir: Path) -> None:
        from venues.zmq_venue import DEFAULT_ACCOUNT

        super().__init__(state_dir)
        self.account = DEFAULT_ACCOUNT
        self.ports = (0, 0)
        self.front: Any = None

    def _start_front(self) -> None:
        from venues.zmq_venue import ZmqVenue

        self.front = ZmqVenue(self.engine, market_port=self.ports[0], order_port=self.ports[1],
                              heartbeat_s=0.1)
        self.ports = self.front.start()

    def _stop_front(self) -> None:
        if self.front is not None:
            self.front.stop()
            self.front = None

    def config(self) -> ConnectorConfig:
        from actors.connectors.zmq import ZmqConfig

        return ZmqConfig(name=VENUE_NAME, symbols=SYMBOLS, health_interval_s=0.2,
                         market_endpoint=f"tcp://127.0.0.1:{self.ports[0]}",
                         order_endpoint=f"tcp://127.0.0.1:{self.ports[1]}",
                         stale_after_s=1.0, ping_interval_s=0.2, **RECONNECT)


class FixKit(Kit):
    """The FIX acceptor (quickfix) over the engine; sequence numbers kept on disk."""

    kind = "fix"

    def __init__(self, state_dir: Path) -> None:
        from venues.fix_venue import free_port

        super().__init__(state_dir)
        self.account = "TRADEGUARD"
        self.port = free_port()
        self.front: Any = None

    def _start_front(self) -> None:
        from venues.fix_venue import FixVenue

        self.front = FixVenue(self.engine, self.port, self.state_dir / "fix-venue")
        self.front.start()

    def _stop_front(self) -> None:
        if self.front is not None:
            self.front.stop()
            self.front = None

    def config(self) -> ConnectorConfig:
        from actors.connectors.fix import FixConfig

        return FixConfig(name=VENUE_NAME, symbols=SYMBOLS, port=self.port, heartbeat_s=1,
                         health_interval_s=0.2, **RECONNECT)


class IbkrKit(Kit):
    """A fake TWS speaking IB's wire protocol, for ib_insync."""

    kind = "ibkr"

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.account = "DU000001"
        self.port = 0
        self.front: Any = None

    def _start_front(self) -> None:
        from venues.tws_venue import TwsVenue

        self.front = TwsVenue(self.engine, port=self.port, account=self.account)
        self.port = self.front.start()

    def _stop_front(self) -> None:
        if self.front is not None:
            self.front.stop()
            self.front = None

    def config(self) -> ConnectorConfig:
        from actors.connectors.ibkr import IbkrConfig

        return IbkrConfig(name=VENUE_NAME, symbols=SYMBOLS, port=self.port, client_id=7,
                          health_interval_s=0.2, **RECONNECT)


KITS: dict[str, Callable[[Path], Kit]] = {
    "paper": PaperKit,
    "zmq": ZmqKit,
    "fix": FixKit,
    "ibkr": IbkrKit,
}
"""Every connector the contract suite covers."""
