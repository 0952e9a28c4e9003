"""Venue connectors. Each is a plug-in found through the ``tradeguard.connectors`` entry
point group; ``base`` holds the contract they all meet."""

from __future__ import annotations

from actors.connectors._io import IoThread, SessionLink, SessionLost, SessionUp
from actors.connectors.base import Connector, ConnectorConfig

__all__ = ["Connector", "ConnectorConfig", "IoThread", "SessionLink", "SessionLost", "SessionUp"]
