"""The ``tradeguard`` command."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from actors.errors import ConfigError
from messages.control import FailsafeReport
from messages.status import StatusDocument
from tradeguard import systemd
from tradeguard.control import ControlError, fetch_status, send_command
from tradeguard.settings import STATE_DIR_ENV, disabled_checks, load_settings, resolve_state_dir

if TYPE_CHECKING:
    from tradeguard.app import Service
    from tradeguard.settings import Settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_ESCALATED = 3
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
"""The reader of our output went away (``tradeguard status | head -1``): quietly, as a
command killed by SIGPIPE would."""


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir:
        return Path(args.state_dir).expanduser().resolve()
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV]).expanduser().resolve()
    config = getattr(args, "config", None)
    try:
        return resolve_state_dir(load_settings(Path(config) if config else None))
    except ConfigError:
        return Path("./state").resolve()


def _dump_stacks() -> None:
    """Log every thread's stack on the main channel (SIGUSR1)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))
        logger.bind(channel="main", thread=names.get(ident, str(ident))).warning(
            f"thread {names.get(ident, ident)}:\n{stack}"
        )


class SignalWatcher:
    """SIGTERM/SIGINT and SIGUSR1, handled in a thread of their own.

    A Python signal handler runs in the main thread between two bytecodes, possibly while
    that thread holds a lock (an Event's, a log queue's); taking the same lock in the
    handler would deadlock. So the handlers do nothing, the interpreter writes each signal
    number to a socket (``signal.set_wakeup_fd``) and this thread acts on it: the first
    stop signal sets ``stop``, a second one exits at once, SIGUSR1 logs every stack.
    """

    STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.stop_signals = 0
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="signals", daemon=True)

    def install(self) -> None:
        """Install the handlers (from the main thread) and start the thread."""
        for signum in (*self.STOP_SIGNALS, signal.SIGUSR1):
            signal.signal(signum, _ignore)
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._thread.start()

    def _run(self) -> None:
        while True:
            data = self._reader.recv(64)
            if not data:
                return
            for signum in data:
                self.handle(signum)

    def handle(self, signum: int) -> None:
        """Act on one signal."""
        if signum == signal.SIGUSR1:
            _dump_stacks()
        elif signum in self.STOP_SIGNALS:
            self.stop_signals += 1
            if self.stop_signals > 1:
                os._exit(128 + signum)  # a second stop signal: exit at once
            logger.bind(channel="main").warning(f"{signal.Signals(signum).name}: stopping gracefully")
            self.stop.set()


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: the work happens in ``SignalWatcher``'s thread."""


def watchdog_loop(service: Service, stop: threading.Event, notify: Callable[..., bool] = systemd.notify,
                  *, watchdog_s: float | None = None, status_every_s: float = 5.0) -> int:
    """Run until ``stop`` is set or the tree gives up; returns the exit code.

    Every tick: WATCHDOG=1 only while the tree answers its health check (and only when
    ``watchdog_s`` is set), so a hung tree lets systemd's watchdog fire; STATUS= every
    ``status_every_s`` seconds. ``notify`` sends the assignments (``systemd.notify``).
    """
    tick_s = min(watchdog_s or 1.0, 1.0)
    next_status = 0.0
    while not stop.wait(tick_s):
        if not service.tree.is_alive():
            service.escalated.wait(1.0)  # the root is gone; its escalation may be on its way
        if service.escalated.is_set():
            notify(f"STATUS=the supervision tree gave up: {service.escalation_reason}")
            return EXIT_ESCALATED
        if not service.tree.is_alive():
            notify("STATUS=the supervision tree is gone")
            return EXIT_FAILURE
        healthy = service.healthy()
        if watchdog_s is not None and healthy:
            notify("WATCHDOG=1")
        if time.monotonic() >= next_status:
            next_status = time.monotonic() + status_every_s
            text = service.status_line() if healthy else "UNHEALTHY: the supervision tree does not answer"
            notify("STATUS=" + text)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run the service in the foreground until a stop signal or the tree gives up."""
    from tradeguard.app import StateDirError, StateLock
    from tradeguard.logs import setup_logging, shutdown_logging

    try:
        settings = load_settings(Path(args.config) if args.config else None)
    except ConfigError as exc:
        print(f"tradeguard: bad configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    state_dir = resolve_state_dir(settings, args.state_dir)
    lock = StateLock(state_dir)
    try:
        lock.acquire()
        setup_logging(state_dir / "logs", level=settings.service.log_level)
    except StateDirError as exc:
        print(f"tradeguard: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        lock.release()
        print(f"tradeguard: state directory {state_dir}: cannot write the logs: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return _run_service(settings, state_dir)
    finally:
        shutdown_logging()
        lock.release()


def _run_service(settings: Settings, state_dir: Path) -> int:
    from tradeguard.app import Service

    stop = threading.Event()
    SignalWatcher(stop).install()
    service = Service(settings, state_dir)
    try:
        service.start()
    except Exception as exc:
        logger.bind(channel="main").exception(f"tradeguard failed to start: {exc}")
        systemd.status(f"failed to start: {exc}")
        service.stop("leave")
        return EXIT_FAILURE
    systemd.ready()
    code = watchdog_loop(service, stop, watchdog_s=systemd.watchdog_interval_s())
    systemd.stopping()
    logger.bind(channel="main").info(f"stopping (exit code {code})")
    service.stop()
    return code


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(Path(args.path) if args.path else None)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    kinds = ", ".join(f"{c.name} ({c.kind})" for c in settings.connector_configs())
    print(f"ok: mode {settings.service.mode}; connectors: {kinds}; "
          f"strategies: {', '.join(f'{s.name} ({s.kind})' for s in settings.strategy_configs()) or 'none'}")
    off = disabled_checks(settings)
    if off:
        print(f"note: set to 0, so switched off: {', '.join(off)}")
    return EXIT_OK


def _control(args: argparse.Namespace, verb: str, reason: str = "") -> Any:
    return send_command(_state_dir(args), verb, reason=reason, timeout_s=args.timeout)


def _status(args: argparse.Namespace) -> StatusDocument:
    return fetch_status(_state_dir(args), timeout_s=args.timeout)


def render_status(status: StatusDocument) -> list[str]:
    """The status document for people, one line per fact."""
    lines = [f"mode: {status.mode}{'  (paused)' if status.paused else ''}"
             + ("" if status.healthy is not False else "  TREE UNHEALTHY")]
    pnl = status.pnl
    lines.append(f"pnl: realized {pnl.realized}  unrealized {pnl.unrealized}  daily {pnl.daily}"
                 if pnl is not None else "pnl: unknown (the position keeper did not answer)")
    for c in status.connectors:
        state = "up" if c.connected else "DOWN"
        recon = {None: "not yet reconciled", True: "reconciled", False: "MISMATCH"}[c.reconciled]
        lines.append(f"connector {c.name}: {state}, fills {c.fills or 0}, {recon}")
    for p in status.positions:
        lines.append(f"position {p.venue} {p.symbol}: {p.quantity} @ {p.average_price}")
    orders = status.orders
    lines.append(f"orders: submitted {orders.submitted}, filled {orders.filled}, rejected {orders.rejected}, "
                 f"cancelled {orders.cancelled}, fills {orders.fills}")
    if status.control is not None and not status.control.healthy:
        lines.append("control channel: UNHEALTHY")
    for alert in status.alerts:
        lines.append(f"alert {alert.severity} {alert.kind}: {alert.text}")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    try:
        status = _status(args)
    except ControlError as exc:
        print(f"tradeguard: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(status), indent=2).decode())
        return EXIT_OK
    for line in render_status(status):
        print(line)
    return EXIT_OK


def _wait_seconds(text: str) -> float:
    """``--wait``: a finite number of seconds within 0..86400."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value <= 86_400:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected 0..86400 seconds, got {text!r}")
    return value


def cmd_flatten(args: argparse.Namespace) -> int:
    """FAILSAFE now; with a wait, exit 0 only once the failsafe reports every venue flat
    (venue-confirmed), after this command. A NOT FLAT report (a venue down, attempts spent)
    does not end the wait: the failsafe keeps retrying and re-checking."""
    try:
        asked_ns = time.time_ns()
        print(_control(args, "flatten", args.reason))
        if args.no_wait:
            return EXIT_OK
        deadline = time.monotonic() + args.wait
        last: FailsafeReport | None = None
        mode = ""
        while True:
            status = _status(args)
            mode = str(status.mode)
            report = status.failsafe.last_report if status.failsafe is not None else None
            if report is not None and report.ts_ns >= asked_ns:
                last = report
                if report.flat:
                    print(f"mode {mode}: flat ({report.detail}); incident report {report.incident_path}")
                    return EXIT_OK
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))
        if last is not None:
            print(f"mode {mode}: NOT FLAT after {args.wait:g}s ({last.detail}); the failsafe keeps "
                  f"retrying; incident report {last.incident_path}")
        else:
            print(f"tradeguard: no flatten outcome within {args.wait:g}s; see `tradeguard status`",
                  file=sys.stderr)
        return EXIT_FAILURE
    except ControlError as exc:
        print(f"tradeguard: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _simple(verb: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            print(_control(args, verb, getattr(args, "reason", "")))
        except ControlError as exc:
            print(f"tradeguard: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        return EXIT_OK

    return run


def cmd_reset(args: argparse.Namespace) -> int:
    """Leave FAILSAFE; exits 1 unless the service did (it refuses while the venues are not
    confirmed flat, and there is nothing to reset outside FAILSAFE)."""
    try:
        result = str(_control(args, "reset", args.reason))
    except ControlError as exc:
        print(f"tradeguard: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if not result.startswith("reset:"):
        print(f"tradeguard: reset refused: {result}", file=sys.stderr)
        return EXIT_FAILURE
    print(result)
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> int:
    from tradeguard.tui import run_dashboard

    return run_dashboard(_state_dir(args))


def cmd_venue(args: argparse.Namespace) -> int:
    argv = [*(["--port", str(args.port)] if args.port else []),
            *(["--state-dir", args.state_dir] if args.state_dir else []), *args.options]
    if args.kind == "fix":
        from venues.fix_venue import main as venue_main
    elif args.kind == "zmq":
        from venues.zmq_venue import main as venue_main
    else:
        from venues.tws_venue import main as venue_main
    return int(venue_main(argv) or 0)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default; an option without one (None, off, empty)
    says in its own help text what happens when it is left out."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, "") or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradeguard", description="An always-on safety supervisor for live trading.",
        formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_state(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--state-dir", help=f"state directory (default: {STATE_DIR_ENV} or the config's)")
        p.add_argument("--config", help="configuration file, to find its state directory "
                       "(default: the embedded paper config)")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
        return p

    run = sub.add_parser("run", help="run the service in the foreground")
    run.add_argument("--config", help="configuration file (default: the embedded paper config)")
    run.add_argument("--state-dir", help=f"state directory (default: {STATE_DIR_ENV}, else the "
                     "config's service.state_dir)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="check a configuration file (exit 2 if bad)")
    check.add_argument("path", nargs="?", help="file to check (default: the embedded paper config)")
    check.set_defaults(func=cmd_check_config)

    status = with_state(sub.add_parser("status", help="show the running service's state"))
    status.add_argument("--json", action="store_true", help="print the full status as JSON")
    status.set_defaults(func=cmd_status)

    flatten = with_state(sub.add_parser("flatten", help="FAILSAFE: cancel everything and flatten"))
    flatten.add_argument("--reason", default="", help="why (audited)")
    flatten.add_argument("--no-wait", action="store_true", help="do not wait for the venues to be flat")
    flatten.add_argument("--wait", type=_wait_seconds, default=30.0,
                         help="seconds to wait for every venue to report flat (0..86400)")
    flatten.set_defaults(func=cmd_flatten)

    for verb, text in (("pause", "refuse new orders until resumed"), ("resume", "accept orders again"),
                       ("reset", "leave FAILSAFE once the venues are confirmed flat")):
        p = with_state(sub.add_parser(verb, help=text))
        p.add_argument("--reason", default="", help="why (audited)")
        p.set_defaults(func=cmd_reset if verb == "reset" else _simple(verb))

    dash = with_state(sub.add_parser("dashboard", help="terminal dashboard of the running service"))
    dash.set_defaults(func=cmd_dashboard)

    venue = sub.add_parser("venue", help="run a simulated venue locally")
    venue.add_argument("kind", choices=["fix", "zmq", "tws"])
    venue.add_argument("--port", type=int, help="port to listen on (127.0.0.1)")
    venue.add_argument("--state-dir", help="where the venue keeps its account")
    venue.add_argument("options", nargs=argparse.REMAINDER,
                       help="further options of that venue (e.g. --begin-string FIX.4.2 for fix)")
    venue.set_defaults(func=cmd_venue)
    for command in sub.choices.values():
        command.formatter_class = _HelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``tradeguard status | head -1``). Point stdout at
        # /dev/null so that the interpreter's own flush at exit cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
