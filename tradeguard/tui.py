"""The terminal dashboard (``tradeguard dashboard``): a Textual client of a running service.

It reads the JSON snapshots the dashboard actor publishes on ``<state>/dashboard.pub`` and
sends operator commands through the control socket (``tradeguard.control``), exactly as
``tradeguard status`` and ``tradeguard flatten`` do. Three views: summary (mode, P&L,
connectors, positions), detailed (orders, risk, failsafe, reconciliation) and alerts (the
last ten). Keys: S, D, A switch views; P pauses, R resumes, F flattens after a
confirmation (Y), Q quits. The banner is green when LIVE, yellow when READY, DEGRADED or
paused, red in FAILSAFE or when the service stops publishing.

Where the snapshots come from and where commands go is a ``DashboardSource``, so the app
can be driven by anything that speaks those two calls.
"""

from __future__ import annotations

import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Protocol, cast

import msgspec
import zmq
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import ContentSwitcher, DataTable, Footer, Static

from actors.dashboard import pub_endpoint
from messages.status import STATUS_DECODER, StatusDocument
from tradeguard.control import send_command

STALE_AFTER_S = 3.0
"""No snapshot for this long means the service is unreachable (it publishes every 0.5 s)."""

COMMAND_REASON = "from the terminal dashboard"
"""The reason audited with every command the dashboard sends."""

GREEN_MODES = frozenset({"LIVE"})
YELLOW_MODES = frozenset({"STARTUP", "READY", "DEGRADED"})


class DashboardSource(Protocol):
    """Where the dashboard gets snapshots and sends commands."""

    def poll(self) -> StatusDocument | None:
        """The newest snapshot that arrived since the last call, or None; never blocks."""

    def command(self, verb: str, reason: str) -> Any:
        """Send an operator command and return its answer; raises on refusal or silence."""

    def close(self) -> None:
        """Release what the source holds."""


class ServiceSource:
    """A running service, found by its state directory: a SUB socket on its snapshots and
    the authenticated control channel for commands."""

    def __init__(self, state_dir: Path, timeout_s: float = 5.0) -> None:
        self.state_dir = Path(state_dir)
        self.timeout_s = timeout_s
        self.unreadable = 0
        """Snapshots that did not decode as a status document."""
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._sub: zmq.Socket[bytes] = context.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.CONFLATE, 1)  # only the newest snapshot matters
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(pub_endpoint(self.state_dir))  # ZeroMQ reconnects until it is there

    def poll(self) -> StatusDocument | None:
        """The newest snapshot received, or None."""
        try:
            raw = self._sub.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None
        try:
            return STATUS_DECODER.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.unreadable += 1
            return None

    def command(self, verb: str, reason: str) -> Any:
        """Send ``verb`` through the control socket (raises ``ControlError``)."""
        return send_command(self.state_dir, verb, reason=reason, timeout_s=self.timeout_s)

    def close(self) -> None:
        """Close the SUB socket."""
        self._sub.close(linger=0)


def mode_color(snapshot: StatusDocument | None, reachable: bool = True) -> str:
    """``green``, ``yellow`` or ``red`` for the state a snapshot shows."""
    if snapshot is None or not reachable or snapshot.healthy is False:
        return "red"
    if snapshot.mode in GREEN_MODES:
        return "yellow" if snapshot.paused else "green"
    if snapshot.mode in YELLOW_MODES:
        return "yellow"
    return "red"


def connector_summary(snapshot: StatusDocument) -> str:
    """Each venue's state in a few words: connection, reconciliation and trading state, e.g.
    ``paper up ok ACTIVE``, ``fix DOWN unreconciled HALTED``, ``ib up ok REDUCING``."""
    trading = snapshot.risk.venue_states if snapshot.risk is not None else {}
    parts = []
    for row in snapshot.connectors:
        recon = {None: "unreconciled", True: "ok", False: "MISMATCH"}[row.reconciled]
        state = trading.get(row.name, "")
        parts.append(f"{row.name} {'up' if row.connected else 'DOWN'} {recon} {state}".rstrip())
    return "  ".join(parts) or "no connectors"


def banner_lines(snapshot: StatusDocument | None, age_s: float | None, reachable: bool) -> list[str]:
    """The banner, three short lines (each fits 80 columns for a few venues): mode and
    health; P&L; per-connector state. Unreachable says so first and marks the rest old."""
    if snapshot is None:
        return ["NO ANSWER: no snapshot from tradeguard yet",
                "is it running on this state directory?", ""]
    mode = snapshot.mode + ("  PAUSED" if snapshot.paused else "")
    health = {True: "tree healthy", False: "TREE UNHEALTHY", None: "health unknown"}[snapshot.healthy]
    pnl = snapshot.pnl
    money = (f"P&L daily {pnl.daily}  realized {pnl.realized}  unrealized {pnl.unrealized}"
             if pnl is not None else "P&L unknown (the position keeper did not answer)")
    first = f"{mode}  |  {health}"
    if not reachable:
        first = f"NO ANSWER for {age_s or 0:.0f}s - last seen {_clock(snapshot.ts_ns)}: {mode}"
    return [first, money, connector_summary(snapshot)]


def banner_text(snapshot: StatusDocument | None, age_s: float | None, reachable: bool) -> str:
    """The banner as one text."""
    return "\n".join(banner_lines(snapshot, age_s, reachable))


def _clock(ts_ns: Any) -> str:
    try:
        return datetime.fromtimestamp(int(ts_ns) / 1e9).strftime("%H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


SEVERITY_STYLE = {"CRITICAL": "bold red", "ERROR": "red", "WARNING": "yellow", "INFO": ""}


def _blank(value: object) -> str:
    return "" if value is None else str(value)


def detail_text(snapshot: StatusDocument | None) -> Text:
    """The detailed view: orders, risk, failsafe and each connector's reconciliation."""
    text = Text()
    if snapshot is None:
        return Text("no snapshot yet")
    text.append("Orders\n", style="bold")
    for key, value in msgspec.structs.asdict(snapshot.orders).items():
        text.append(f"  {key}: {value}\n")
    text.append("\nRisk governor\n", style="bold")
    if snapshot.risk is None:
        text.append("  did not answer\n", style="red")
    else:
        for key, value in msgspec.structs.asdict(snapshot.risk).items():
            text.append(f"  {key}: {value}\n")
    failsafe = snapshot.failsafe
    text.append("\nFailsafe\n", style="bold")
    if failsafe is None:
        text.append("  did not answer\n", style="red")
    else:
        text.append(f"  latched: {failsafe.latched}  running: {failsafe.running}\n",
                    style="bold red" if failsafe.latched else "")
        report = failsafe.last_report
        if report is not None:
            text.append(f"  last report: {'flat' if report.flat else 'NOT FLAT'}: {report.detail}\n")
            text.append(f"  incident report: {report.incident_path}\n")
    for row in snapshot.connectors:
        text.append(f"\nConnector {row.name}\n", style="bold")
        for key in ("connected", "latency_ms", "messages_in", "messages_out", "drops", "errors",
                    "malformed", "gaps", "fills", "reconciled"):
            text.append(f"  {key}: {_blank(getattr(row, key))}\n")
        venue = ", ".join(f"{p.symbol} {p.quantity}" for p in row.venue_positions)
        keeper = ", ".join(f"{p.symbol} {p.quantity}" for p in row.keeper_positions)
        text.append(f"  venue positions: {venue or 'flat'}\n  keeper positions: {keeper or 'flat'}\n")
        for mismatch in row.mismatches:
            text.append(f"  MISMATCH {mismatch}\n", style="bold red")
    return text


class ConfirmFlatten(ModalScreen[bool]):
    """Asks before a flatten: Y confirms, N or Esc cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,Y", "answer(True)", "Yes, flatten"),
        Binding("n,N,escape", "answer(False)", "No"),
    ]

    def compose(self) -> ComposeResult:
        """The question."""
        yield Static(
            "FLATTEN?\n\nFAILSAFE: cancel every order and close every position at every venue,\n"
            "then stay latched until an operator resets.\n\nY to confirm, N or Esc to cancel.",
            id="confirm",
        )

    def action_answer(self, yes: bool) -> None:
        """Close the question with the answer."""
        self.dismiss(yes)


class DashboardScreen(Screen[None]):
    """The banner, the views and the operator keys (inactive while a question is open)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s,S", "show('summary')", "Summary"),
        Binding("d,D", "show('detailed')", "Detail"),
        Binding("a,A", "show('alerts')", "Alerts"),
        Binding("p,P", "command('pause')", "Pause"),
        Binding("r,R", "command('resume')", "Resume"),
        Binding("f,F", "flatten", "FLATTEN"),
    ]

    def compose(self) -> ComposeResult:
        """Banner on top, the three views, the last command's answer, the keys."""
        yield Static("NO ANSWER: waiting for the first snapshot", id="banner", classes="red")
        with ContentSwitcher(initial="summary", id="views"):
            with VerticalScroll(id="summary"):
                yield Static("Connectors", id="connectors-title", classes="title")
                yield DataTable(id="connectors", cursor_type="none", show_cursor=False)
                yield Static("Positions", id="positions-title", classes="title")
                yield DataTable(id="positions", cursor_type="none", show_cursor=False)
                yield Static("", id="recent-alerts")
            with VerticalScroll(id="detailed"):
                yield Static("", id="detail")
            with Vertical(id="alerts"):
                yield Static("Last 10 alerts", classes="title")
                yield DataTable(id="alert-table", cursor_type="none", show_cursor=False)
        yield Static("no command sent yet", id="message")
        yield Footer()

    def on_mount(self) -> None:
        """Set up the table columns (short labels: everything fits 80 columns)."""
        self.query_one("#connectors", DataTable).add_columns(
            "venue", "state", "ms", "in", "out", "drops", "errors", "reconciled")
        self.query_one("#positions", DataTable).add_columns(
            "venue", "symbol", "qty", "avg price", "unrealized", "realized")
        self.query_one("#alert-table", DataTable).add_columns("time", "severity", "kind", "text")
        self.dashboard.start_polling()  # only now every widget it updates exists

    def action_show(self, view: str) -> None:
        """Switch to a view."""
        self.query_one("#views", ContentSwitcher).current = view

    @property
    def dashboard(self) -> DashboardApp:
        """The app this screen belongs to."""
        return cast("DashboardApp", self.app)

    def action_command(self, verb: str) -> None:
        """Send pause or resume."""
        self.dashboard.send_operator_command(verb)

    def action_flatten(self) -> None:
        """Ask, then flatten."""
        def answered(yes: bool | None) -> None:
            if yes:
                self.dashboard.send_operator_command("flatten")
            else:
                self.dashboard.show_message("flatten cancelled", ok=True)

        self.app.push_screen(ConfirmFlatten(), answered)

    def render_snapshot(self, snapshot: StatusDocument | None, age_s: float | None,
                        reachable: bool) -> None:
        """Show a snapshot in every view; an old one is marked as such, never as live."""
        banner = self.query_one("#banner", Static)
        banner.update(banner_text(snapshot, age_s, reachable))
        color = mode_color(snapshot, reachable)
        for name in ("green", "yellow", "red"):
            banner.set_class(name == color, name)
        stale = snapshot is not None and not reachable
        for widget in self.query("#summary, #detailed, #alerts"):
            widget.set_class(stale, "stale")
        if snapshot is None:
            return
        as_of = f" - NOT LIVE, as of {_clock(snapshot.ts_ns)}" if stale else ""
        self.query_one("#connectors-title", Static).update("Connectors" + as_of)
        self.query_one("#positions-title", Static).update("Positions" + as_of)
        connectors = self.query_one("#connectors", DataTable)
        connectors.clear()
        for row in snapshot.connectors:
            recon = {None: Text("pending", "yellow"), True: Text("yes", "green"),
                     False: Text("MISMATCH", "bold red")}[row.reconciled]
            connectors.add_row(
                row.name, Text("up", "green") if row.connected else Text("DOWN", "bold red"),
                _blank(row.latency_ms), _blank(row.messages_in), _blank(row.messages_out),
                _blank(row.drops), _blank(row.errors), recon,
            )
        positions = self.query_one("#positions", DataTable)
        positions.clear()
        for p in snapshot.positions:
            positions.add_row(p.venue, p.symbol, p.quantity, p.average_price, p.unrealized_pnl,
                              p.realized_pnl)
        alerts = snapshot.alerts[-10:]
        recent = Text("Recent alerts\n", style="bold")
        for alert in alerts[-3:]:
            recent.append(f"{_clock(alert.ts_ns)} {alert.severity} {alert.kind}: {alert.text}\n",
                          style=SEVERITY_STYLE.get(alert.severity, ""))
        self.query_one("#recent-alerts", Static).update(recent if alerts else "no alerts")
        self.query_one("#detail", Static).update(detail_text(snapshot))
        table = self.query_one("#alert-table", DataTable)
        table.clear()
        for alert in reversed(alerts):
            table.add_row(_clock(alert.ts_ns), Text(alert.severity, SEVERITY_STYLE.get(alert.severity, "")),
                          alert.kind, alert.text)


class DashboardApp(App[int]):
    """The terminal dashboard of one running tradeguard."""

    CSS = """
    DashboardScreen { layout: vertical; overflow: hidden hidden; }
    #banner { height: 3; padding: 0 1; text-style: bold; }
    #banner.green { background: $success; color: $text; }
    #banner.yellow { background: $warning; color: black; }
    #banner.red { background: $error; color: $text; }
    #views { height: 1fr; }
    #summary, #detailed, #alerts { height: 1fr; }
    .stale { opacity: 60%; text-style: italic; }
    .title { text-style: bold; }
    #connectors, #positions { height: auto; max-height: 8; }
    #recent-alerts { height: auto; }
    #alert-table { height: 1fr; }
    #message { height: auto; max-height: 2; padding: 0 1; background: $boost; }
    #message.error { color: $error; text-style: bold; }
    ConfirmFlatten { align: center middle; }
    #confirm { width: 76; max-width: 100%; height: auto; padding: 1 2; border: thick $error;
               background: $surface; }
    """

    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [Binding("q,Q", "quit", "Quit")]

    def __init__(self, source: DashboardSource, *, refresh_s: float = 0.25,
                 stale_after_s: float = STALE_AFTER_S, title: str = "tradeguard") -> None:
        super().__init__()
        self.source = source
        self.refresh_s = refresh_s
        self.stale_after_s = stale_after_s
        self.snapshot: StatusDocument | None = None
        self.last_message = ""
        self._seen_at: float | None = None
        self._timer: Timer | None = None
        self.title = title

    def on_mount(self) -> None:
        """Show the dashboard screen (it starts the polling once it is mounted)."""
        self.push_screen(DashboardScreen())

    def start_polling(self) -> None:
        """Poll the source every ``refresh_s`` (once, however often it is called)."""
        if self._timer is None:
            self._timer = self.set_interval(self.refresh_s, self.refresh_view)

    @property
    def reachable(self) -> bool:
        """A snapshot arrived within ``stale_after_s``."""
        return self._seen_at is not None and time.monotonic() - self._seen_at < self.stale_after_s

    def refresh_view(self) -> None:
        """Take the newest snapshot, if any, and redraw."""
        snapshot = self.source.poll()
        if snapshot is not None:
            self.snapshot = snapshot
            self._seen_at = time.monotonic()
        screen = self.dashboard_screen
        if screen is not None:
            age = None if self._seen_at is None else time.monotonic() - self._seen_at
            screen.render_snapshot(self.snapshot, age, self.reachable)

    @property
    def dashboard_screen(self) -> DashboardScreen | None:
        """The dashboard screen (under the confirmation question when one is open)."""
        return next((s for s in self.screen_stack if isinstance(s, DashboardScreen)), None)

    def send_operator_command(self, verb: str) -> None:
        """Send a command without blocking the screen; its answer shows above the keys."""
        self.show_message(f"{verb}: sent, waiting for the answer", ok=True)
        self.run_worker(partial(self._send, verb), thread=True, group="commands")

    def _send(self, verb: str) -> None:
        try:
            answer = self.source.command(verb, COMMAND_REASON)
            text, ok = f"{verb}: {answer}", True
        except Exception as exc:  # the dashboard shows the failure and keeps running
            text, ok = f"{verb} FAILED: {exc}", False
        self.call_from_thread(self.show_message, text, ok=ok)

    def show_message(self, text: str, *, ok: bool) -> None:
        """Show the answer to the last command (with the time it came)."""
        self.last_message = text
        screen = self.dashboard_screen
        if screen is not None:
            message = screen.query_one("#message", Static)
            message.update(f"{datetime.now().strftime('%H:%M:%S')} {text}")
            message.set_class(not ok, "error")


def run_dashboard(state_dir: Path) -> int:
    """Run the terminal dashboard of the service whose state directory is ``state_dir``."""
    source = ServiceSource(state_dir)
    try:
        DashboardApp(source, title=f"tradeguard — {Path(state_dir)}").run()
    finally:
        source.close()
    return 0
