"""The in-process paper venue: one engine per venue name, stepping on its own thread.

The venue outlives the connector that talks to it, as a real venue outlives a session:
a connector that crashes and restarts finds the same account, the same positions and the
same working orders. With a state path the account is kept in a SQLite store beside it
(``paper-x.json`` -> ``paper-x.sqlite3``, see ``venues.store``): each order event is one
small transaction committed before anybody hears of the event, so a process killed with
SIGKILL restarts against the venue it left, and an event costs the same after a hundred
thousand executions as after ten. A JSON state file left by an older version is carried
into a new store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from venues.engine import EngineConfig, EngineRunner, VenueEngine
from venues.store import store_path_for


class PaperVenue:
    """An engine, the thread that steps it, and optional persistence of its account."""

    def __init__(self, name: str, config: EngineConfig | None = None, *,
                 interval_s: float = 0.05, state_path: Path | None = None) -> None:
        self.name = name
        self.engine = VenueEngine(name, config)
        self.state_path = state_path
        if state_path is not None:
            store = store_path_for(state_path)
            if not store.exists() and state_path.exists():
                self.engine.load(state_path)  # an older version's JSON: carried into the store
            self.engine.persist(store)
        self.runner = EngineRunner(self.engine, interval_s=interval_s)
        self.down = False
        """While True the venue refuses sessions (connect fails)."""
        self._sessions: list[Callable[[str], None]] = []

    def attach(self, on_lost: Callable[[str], None]) -> None:
        """A session opens; ``on_lost`` is called if the venue drops it."""
        if self.down:
            raise ConnectionRefusedError(f"paper venue {self.name} is down")
        self._sessions.append(on_lost)

    def detach(self, on_lost: Callable[[str], None]) -> None:
        """A session closes."""
        if on_lost in self._sessions:
            self._sessions.remove(on_lost)

    def fail(self, reason: str = "venue failed") -> None:
        """Fault injection: drop every session and refuse new ones until ``recover()``."""
        self.down = True
        sessions, self._sessions = self._sessions, []
        for on_lost in sessions:
            on_lost(reason)

    def recover(self) -> None:
        """Accept sessions again."""
        self.down = False

    def start(self) -> None:
        """Start stepping the market."""
        if not self.runner.running:
            self.runner.start()

    def stop(self) -> None:
        """Stop stepping and close the store (everything in it is already committed)."""
        try:
            if self.runner.running:
                self.runner.stop()
        finally:
            self.engine.close_store()


_lock = threading.Lock()
_venues: dict[str, PaperVenue] = {}


def paper_venue(name: str, config: EngineConfig | None = None, *, interval_s: float = 0.05,
                state_path: Path | None = None) -> PaperVenue:
    """The process's paper venue called ``name``, created and started on first use."""
    with _lock:
        venue = _venues.get(name)
        if venue is None:
            venue = PaperVenue(name, config, interval_s=interval_s, state_path=state_path)
            venue.start()
            _venues[name] = venue
        return venue


def stop_paper_venues() -> None:
    """Stop and forget every paper venue of the process."""
    with _lock:
        venues = list(_venues.values())
        _venues.clear()
    for venue in venues:
        venue.stop()
