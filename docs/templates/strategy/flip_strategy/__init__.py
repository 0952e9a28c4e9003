"""An example tradeguard strategy plug-in: holds a position whose sign flips."""

from __future__ import annotations

from flip_strategy.strategy import FlipConfig, FlipStrategy

__all__ = ["FlipConfig", "FlipStrategy"]
