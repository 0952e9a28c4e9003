"""The terminal dashboard, driven by Textual's pilot, attached to a running tree through
its real sockets: what it shows, and the operator keys (flatten with confirmation,
pause/resume, cancel), checked against the service's own status and the paper venue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable, Static
from textual.widgets._footer import FooterKey

from messages.status import OrderCounts, StatusDocument
from tests.helpers import wait_for
from tradeguard.app import Service
from tradeguard.control import send_command
from tradeguard.settings import load_settings
from tradeguard.tui import ConfirmFlatten, DashboardApp, DashboardScreen, ServiceSource, mode_color
from venues.paper import paper_venue


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """The paper default with the sample strategy, running in this process."""
    running_service = Service(load_settings(), tmp_path / "state")
    running_service.start()
    try:
        yield running_service
    finally:
        running_service.stop("leave")


async def until(pilot: Pilot[Any], condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Let the app run until ``condition()`` holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await pilot.pause(0.05)


async def wait_service(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """``wait_for`` on the service side, off the app's event loop."""
    await asyncio.to_thread(wait_for, condition, timeout_s, 0.05, what)


def _screen(app: DashboardApp) -> DashboardScreen:
    screen = app.dashboard_screen
    assert screen is not None
    return screen


def _banner(app: DashboardApp) -> Static:
    return _screen(app).query_one("#banner", Static)


def _positions(app: DashboardApp) -> DataTable[Any]:
    return _screen(app).query_one("#positions", DataTable)


def _flattened(state: Path) -> bool:
    """FAILSAFE, and the failsafe's run finished with every venue reporting flat."""
    status = send_command(state, "status")
    report = status["failsafe"]["last_report"] or {}
    return status["mode"] == "FAILSAFE" and bool(report.get("flat")) and not status["failsafe"]["running"]


def test_summary_then_flatten_with_confirmation(service: Service) -> None:
    state = service.state_dir

    async def scenario() -> None:
        source = ServiceSource(state)
        app = DashboardApp(source, refresh_s=0.1)
        try:
            async with app.run_test(size=(140, 45)) as pilot:
                await until(pilot, lambda: "LIVE" in str(_banner(app).content) and _positions(app).row_count,
                            20.0, "LIVE and a position row in the summary")
                row = _positions(app).get_row_at(0)
                assert row[0] == "paper" and row[1] in {"AAPL", "MSFT"}
                assert _banner(app).has_class("green")
                connectors = _screen(app).query_one("#connectors", DataTable)
                assert connectors.get_row_at(0)[0] == "paper"

                await pilot.press("F")
                assert isinstance(app.screen, ConfirmFlatten)
                await pilot.press("Y")
                await wait_service(lambda: _flattened(state), 20.0, "FAILSAFE, venue-confirmed flat")
                await until(pilot, lambda: _banner(app).has_class("red")
                            and "FAILSAFE" in str(_banner(app).content), 5.0, "a red FAILSAFE banner")
                await until(pilot, lambda: _positions(app).row_count == 0, 5.0, "no position rows")
                assert app.last_message.startswith("flatten: ")
        finally:
            source.close()

    asyncio.run(scenario())
    status = send_command(state, "status")
    assert status["mode"] == "FAILSAFE"
    assert status["positions"] == []
    assert paper_venue("paper").engine.positions("PAPER-1") == []


def test_pause_resume_cancelled_flatten_and_a_vanished_service(service: Service) -> None:
    state = service.state_dir

    async def scenario() -> None:
        source = ServiceSource(state)
        app = DashboardApp(source, refresh_s=0.1, stale_after_s=1.0)
        try:
            async with app.run_test(size=(140, 45)) as pilot:
                await until(pilot, lambda: "LIVE" in str(_banner(app).content), 20.0, "LIVE")

                await pilot.press("P")
                await wait_service(lambda: send_command(state, "status")["paused"] is True, 5.0, "paused")
                await until(pilot, lambda: _banner(app).has_class("yellow"), 5.0, "a yellow banner")
                await pilot.press("r")
                await wait_service(lambda: send_command(state, "status")["paused"] is False, 5.0, "resumed")
                await until(pilot, lambda: _banner(app).has_class("green"), 5.0, "a green banner")

                await pilot.press("f")
                assert isinstance(app.screen, ConfirmFlatten)
                await pilot.press("p")  # operator keys do nothing while the question is open
                assert "pause" not in app.last_message
                await pilot.press("n")
                assert isinstance(app.screen, DashboardScreen)
                assert app.last_message == "flatten cancelled"
                assert send_command(state, "status")["mode"] == "LIVE"
                assert send_command(state, "status")["paused"] is False

                for key, view in (("D", "detailed"), ("A", "alerts"), ("S", "summary")):
                    await pilot.press(key)
                    assert _screen(app).query_one("#views").current == view  # type: ignore[attr-defined]

                await asyncio.to_thread(service.stop, "leave")
                await until(pilot, lambda: _banner(app).has_class("red")
                            and "NO ANSWER" in str(_banner(app).content), 5.0, "a red NO ANSWER banner")
                assert "NOT LIVE" in str(_screen(app).query_one("#positions-title", Static).content)
                await pilot.press("Q")
            assert app.return_code == 0
        finally:
            source.close()

    asyncio.run(scenario())


def _doc(mode: str, healthy: bool | None = True, paused: bool | None = False) -> StatusDocument:
    return StatusDocument(mode=mode, paused=paused, healthy=healthy, positions=[], pnl=None, connectors=[],
                          orders=OrderCounts(), risk=None, failsafe=None, alerts=[], ts_ns=0)


@pytest.mark.parametrize(("snapshot", "reachable", "color"), [
    (_doc("LIVE"), True, "green"),
    (_doc("LIVE", paused=True), True, "yellow"),
    (_doc("READY"), True, "yellow"),
    (_doc("DEGRADED"), True, "yellow"),
    (_doc("FAILSAFE"), True, "red"),
    (_doc("LIVE", healthy=False), True, "red"),
    (_doc("LIVE"), False, "red"),
    (None, True, "red"),
])
def test_mode_colors(snapshot: StatusDocument | None, reachable: bool, color: str) -> None:
    assert mode_color(snapshot, reachable) == color


def _visible(app: DashboardApp, widget: Widget, width: int, height: int) -> bool:
    region = widget.region
    return region.width > 0 and region.height > 0 and region.x >= 0 and region.y >= 0 \
        and region.right <= width and region.bottom <= height


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_the_banner_and_the_answer_stay_on_screen_and_fit(service: Service, size: tuple[int, int]) -> None:
    """At 80x24 and larger: the banner (mode, P&L, each venue) is the top of the screen, the
    answer to the last command is visible, labels fit, and a service that stops answering
    turns the screen red within a few seconds with the positions marked as not live."""
    state = service.state_dir
    width, height = size

    async def scenario() -> None:
        source = ServiceSource(state)
        app = DashboardApp(source, refresh_s=0.1, stale_after_s=2.0)
        try:
            async with app.run_test(size=size) as pilot:
                await until(pilot, lambda: "LIVE" in str(_banner(app).content) and _positions(app).row_count,
                            20.0, "LIVE and a position row")
                banner = _banner(app)
                assert banner.region.y == 0 and _visible(app, banner, width, height)
                lines = str(banner.content).splitlines()
                assert lines[0].startswith("LIVE") and lines[1].startswith("P&L daily")
                assert lines[2] == "paper up ok ACTIVE"
                assert banner.has_class("green")
                assert all(len(line) <= width - 2 for line in lines)
                assert app.screen.scroll_offset.y == 0
                for table in ("#connectors", "#positions"):
                    assert _screen(app).query_one(table, DataTable).virtual_size.width <= width, table
                keys = list(_screen(app).query(FooterKey))
                assert len(keys) >= 7 and all(_visible(app, key, width, height) for key in keys)

                await pilot.press("p")
                await until(pilot, lambda: app.last_message.startswith("pause: "), 10.0, "the answer")
                message = _screen(app).query_one("#message", Static)
                assert _visible(app, message, width, height)
                assert "pause: " in str(message.content)
                await until(pilot, lambda: _banner(app).has_class("yellow")
                            and "PAUSED" in str(_banner(app).content), 5.0, "a yellow PAUSED banner")
                assert banner.region.y == 0

                await asyncio.to_thread(service.stop, "leave")
                stopped = time.monotonic()
                await until(pilot, lambda: _banner(app).has_class("red")
                            and "NO ANSWER" in str(_banner(app).content), 6.0, "a red NO ANSWER banner")
                assert time.monotonic() - stopped < 6.0
                title = _screen(app).query_one("#positions-title", Static)
                assert "NOT LIVE" in str(title.content)
                assert _visible(app, _banner(app), width, height)
        finally:
            source.close()

    asyncio.run(scenario())
