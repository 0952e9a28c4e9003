"""Finding connector classes: every connector, built-in or not, is an entry point in the
``tradeguard.connectors`` group, named by its kind."""

from __future__ import annotations

from importlib.metadata import entry_points

from actors.connectors.base import Connector
from actors.errors import ConfigError

GROUP = "tradeguard.connectors"
"""The entry point group connectors register in."""


def connector_kinds() -> list[str]:
    """Every connector kind installed."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def connector_class(kind: str) -> type[Connector]:
    """The connector class registered for ``kind``."""
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == kind]
    if not matches:
        known = ", ".join(connector_kinds()) or "none (is tradeguard installed?)"
        raise ConfigError(f"unknown connector kind {kind!r}; installed kinds: {known}")
    cls = matches[0].load()
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ConfigError(f"entry point {kind!r} in {GROUP} is not a Connector subclass")
    return cls
