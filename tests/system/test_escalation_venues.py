"""Venue outages while trading on three real venue processes (ZeroMQ, FIX, fake TWS).

Durations are scaled down through the configuration, the ratios kept: a 10 s outage against
``max_outage_s = 30`` stands for a minute's outage against the default 300 s; the outage
past the limit is ``max_outage_s = 6``. The connectors restart with the shipped backoff
(0.5 s to 5 s), so a 10 s outage is several failed restarts: the old rule counted each one.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.system.escalation_kit import VENUES, LocalVenues, connector, fills, venue_states


def _all_active_and_trading(current: dict[str, object]) -> bool:
    return (current["mode"] == "LIVE"
            and venue_states(current) == dict.fromkeys(VENUES, "ACTIVE")  # type: ignore[arg-type]
            and all(fills(current, v) > 0 for v in VENUES))  # type: ignore[arg-type]


@pytest.mark.timeout(240)
def test_a_short_outage_halts_one_venue_and_the_others_keep_trading(tmp_path: Path) -> None:
    run = LocalVenues(tmp_path, risk="max_outage_s = 30.0")
    try:
        for name in VENUES:
            run.start_venue(name)
        run.start_service()
        before = run.wait(_all_active_and_trading, 90, "LIVE with fills on all three venues")

        killed_ns = time.time_ns()
        run.kill_venue("fix")
        down = run.wait(lambda s: venue_states(s).get("fix") == "HALTED", 30, "fix HALTED")
        assert venue_states(down)["zmq"] != "HALTED" and venue_states(down)["ib"] != "HALTED"
        during = run.watch(9.0)                       # the outage: 10 s, several restarts
        last = run.wait(lambda s: s["risk"]["venue_outages_s"].get("fix", 0) >= 10.0, 10, "a 10 s outage")
        assert all(venue_states(s)["fix"] == "HALTED" for s in [*during, last])
        assert fills(last, "zmq") > fills(before, "zmq") and fills(last, "ib") > fills(before, "ib"), \
            "the other two venues kept trading"
        # One outage is one incident however many times the connector failed to restart.
        assert [i for i in last["risk"]["open_incidents"] if i.startswith("venue_down")] == ["venue_down fix"]
        refused = run.refusals("fix", killed_ns)
        assert refused and set(refused) <= {"venue_down", "venue_halted"}, refused

        returned_ns = time.time_ns()
        run.start_venue("fix")
        back = run.wait(lambda s: _all_active_and_trading(s)
                        and connector(s, "fix")["reconciled_ns"] > returned_ns
                        and fills(s, "fix") > fills(last, "fix"),
                        90, "fix reconciled and trading again, mode LIVE")
        assert back["risk"]["venue_outages_s"] == {}
        assert "FAILSAFE" not in run.modes_seen()
        assert all(current != "FAILSAFE" for _, current, _ in run.mode_log())
    finally:
        run.stop_all()


@pytest.mark.timeout(240)
def test_an_outage_past_max_outage_s_is_failsafe(tmp_path: Path) -> None:
    run = LocalVenues(tmp_path, risk="max_outage_s = 6.0")
    try:
        for name in VENUES:
            run.start_venue(name)
        run.start_service()
        run.wait(_all_active_and_trading, 90, "LIVE with fills on all three venues")
        killed = time.monotonic()
        run.kill_venue("zmq")
        latched = run.wait(lambda s: s["mode"] == "FAILSAFE", 60, "FAILSAFE after max_outage_s")
        assert time.monotonic() - killed > 6.0
        reasons = [r for _, current, r in run.mode_log() if current == "FAILSAFE"]
        assert reasons and "venue zmq down for" in reasons[0] and "max_outage_s" in reasons[0], reasons
        assert latched["failsafe"]["latched"] is True
    finally:
        run.stop_all()


@pytest.mark.timeout(240)
def test_one_venue_down_at_start_the_other_two_trade(tmp_path: Path) -> None:
    run = LocalVenues(tmp_path, risk="max_outage_s = 30.0")
    try:
        run.start_venue("zmq")
        run.start_venue("ib")                          # fix is not running
        started = time.monotonic()
        run.start_service()
        trading = run.wait(
            lambda s: s["mode"] == "LIVE" and fills(s, "zmq") > 0 and fills(s, "ib") > 0,
            60, "LIVE and fills on zmq and ib with fix down")
        took = time.monotonic() - started
        assert venue_states(trading)["fix"] == "HALTED"
        assert venue_states(trading)["zmq"] == "ACTIVE" and venue_states(trading)["ib"] == "ACTIVE"
        assert took < 45, f"trading began {took:.1f}s after start"
        assert "FAILSAFE" not in run.modes_seen()
    finally:
        run.stop_all()
