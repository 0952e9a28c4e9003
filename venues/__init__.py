"""The simulated venue engine and the protocol fronts that expose it.

``VenueEngine`` is the one simulated market every front (paper, FIX, ZeroMQ, fake TWS)
drives; ``EngineRunner`` steps it on a thread; ``venues.store`` keeps its account on disk.
"""

from __future__ import annotations

from venues.engine import (
    AnomalyConfig,
    EngineConfig,
    EngineRunner,
    TradeAmended,
    VenueEngine,
    WorkingOrder,
)

__all__ = [
    "AnomalyConfig",
    "EngineConfig",
    "EngineRunner",
    "TradeAmended",
    "VenueEngine",
    "WorkingOrder",
]
