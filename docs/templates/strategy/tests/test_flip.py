"""The flip strategy on the paper venue, with tradeguard's strategy kit."""

from __future__ import annotations

from pathlib import Path

from tradeguard.testing import StrategyKit, wait_for

SECTION = {"name": "flip", "kind": "flip", "symbols": ["AAPL"], "target": "20", "flip_s": 1.0,
           "interval_s": 0.05}


def test_it_goes_long_then_short(tmp_path: Path) -> None:
    with StrategyKit(SECTION, tmp_path) as kit:
        wait_for(lambda: kit.journal_position("flip", "AAPL") == 20, 20.0, "long 20 AAPL")
        wait_for(lambda: kit.journal_position("flip", "AAPL") == -20, 20.0, "short 20 AAPL")
        assert kit.venue_positions().get("AAPL") == -20


def test_a_restart_keeps_its_position(tmp_path: Path) -> None:
    with StrategyKit({**SECTION, "flip_s": 3600.0}, tmp_path) as kit:
        wait_for(lambda: kit.journal_position("flip", "AAPL") == 20, 20.0, "long 20 AAPL")
        state = kit.crash()
        assert state.positions == {"AAPL": 20}
