"""Running a simulated venue as a process: the engine steps, the front serves, and
SIGTERM or SIGINT stops both, saving the account."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from venues.engine import EngineRunner, VenueEngine


def serve_until_signalled(engine: VenueEngine, *, interval_s: float, state_path: Path | None,
                          start_front: Callable[[], str], stop_front: Callable[[], None]) -> int:
    """Step ``engine`` every ``interval_s`` and run the front until SIGTERM or SIGINT.

    With ``state_path`` the account is saved after every order event (so a venue killed
    with SIGKILL still holds every execution it reported) and on stop. ``start_front``
    returns the line printed once the venue is ready.
    """
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    runner = EngineRunner(engine, interval_s=interval_s, state_path=state_path)
    if state_path is not None:
        engine.save_on_every_event(state_path)
    try:
        ready = start_front()
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
    return 0
