"""tradeguard's trading logic, free of actors, threads, sockets, SQLite and clocks."""

from __future__ import annotations

__all__: list[str] = []
