"""Pure trading logic: no actors, threads, sockets, files or clocks of its own (time is
passed in). Imports only ``messages``."""

from __future__ import annotations

__all__: list[str] = []
