"""In-process order sources: strategies as plug-ins (the ``tradeguard.strategies`` entry
point group), on the base class ``Strategy``."""

from __future__ import annotations

from actors.strategies.base import DEFAULT_KIND, OwnOrder, Strategy, StrategyConfig, StrategyError
from actors.strategies.plugins import GROUP, strategy_class, strategy_kinds

__all__ = ["DEFAULT_KIND", "GROUP", "OwnOrder", "Strategy", "StrategyConfig", "StrategyError",
           "strategy_class", "strategy_kinds"]
