"""Running a simulated venue as a process: the engine steps, the front serves, and
SIGTERM or SIGINT stops both.

With a state path the engine keeps its account in a SQLite store beside it
(``x.json`` -> ``x.sqlite3``, see ``venues.store``): every order event is committed before
the venue reports it, so a venue killed with SIGKILL still holds every execution it
reported, and an event costs the same however long the history. A clean stop also writes
the state as JSON to the state path itself (readable; the store is what a restart reads).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from venues.engine import EngineRunner, VenueEngine
from venues.store import store_path_for

__all__ = ["add_common_options", "serve_until_signalled", "venue_argv"]


def venue_argv(argv: Sequence[str] | None) -> list[str] | None:
    """``argv`` without the first bare ``--`` (``tradeguard venue fix --port N -- OPTIONS``
    hands the separator on; the venue's own options follow it)."""
    if argv is None:
        return None
    args = list(argv)
    if "--" in args:
        args.remove("--")
    return args


def add_common_options(parser: argparse.ArgumentParser, *, port: int, state_dir: Path | None,
                       state_help: str, name: str, account: str | None = None) -> None:
    """The options every simulated venue takes, named alike: ``--host``, ``--port``,
    ``--state-dir``, ``--venue-name``, ``--account``, ``--seed``, ``--step-interval``.

    ``--name`` and ``--interval`` are accepted as older spellings.
    """
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=port, help="port to listen on")
    parser.add_argument("--state-dir", type=Path, default=state_dir, help=state_help)
    parser.add_argument("--venue-name", "--name", dest="name", default=name,
                        help="the venue's name (in fill ids and logs)")
    if account is not None:
        parser.add_argument("--account", default=account, help="the engine account traded")
    parser.add_argument("--seed", type=int, default=7, help="price path seed")
    parser.add_argument("--step-interval", "--interval", dest="interval", type=float,
                        default=0.05, help="seconds between market steps")
    parser.add_argument("--annual-volatility", type=float, default=0.25,
                        help="yearly volatility of every price (0.25: a large US stock); each "
                             "step moves by it scaled to the step interval")


def serve_until_signalled(engine: VenueEngine, *, interval_s: float, state_path: Path | None,
                          start_front: Callable[[], str], stop_front: Callable[[], None]) -> int:
    """Step ``engine`` every ``interval_s`` and run the front until SIGTERM or SIGINT.

    ``start_front`` returns the line printed once the venue is ready. A state directory
    that cannot be used, or a front that cannot start (a port in use), is a one-line error
    on stderr and exit status 2.
    """
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    if interval_s <= 0:
        print(f"venue: --step-interval must be positive, got {interval_s}", file=sys.stderr)
        return 2
    if state_path is not None:
        try:
            state_path.parent.mkdir(parents=True, exist_ok=True)
            store = store_path_for(state_path)
            if not store.exists() and state_path.exists():
                engine.load(state_path)  # an older version's JSON: carried into the new store
            engine.persist(store)
        except (OSError, ValueError) as exc:
            print(f"venue: cannot keep the state in {state_path.parent}: {exc}", file=sys.stderr)
            return 2
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    runner = EngineRunner(engine, interval_s=interval_s)
    try:
        try:
            ready = start_front()
        except Exception as exc:  # a port in use, a bad address: one line, not a traceback
            print(f"venue: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        try:
            runner.start()
            print(ready, flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            runner.stop()
            stop_front()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if state_path is not None:
            engine.close_store()
            try:
                engine.save(state_path)
            except OSError as exc:
                print(f"venue: cannot write {state_path}: {exc}", file=sys.stderr)
    return 0
