"""TEMPLATE: copy to your package as ``<yourpkg>/connector.py`` and fill in every TODO.

A connector owns one venue session. Read docs/adding-a-connector.md first.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from actors.connectors import Connector, ConnectorConfig, SessionLink
from actors.errors import ConnectorError
from messages import CancelAllDone, CancelOrder, SubmitOrder, VenuePositions, now_ns


class MyVenueConfig(ConnectorConfig, frozen=True, kw_only=True):
    """Settings of one session with My Venue (every field documented, with a default)."""

    kind: str = "myvenue"
    """Always ``myvenue``: the entry point name."""
    host: str = "127.0.0.1"
    """Where the venue listens."""
    port: int = 9000
    """The venue's port."""


class MyVenueConnector(Connector):
    """Connector to My Venue."""

    kind = "myvenue"
    config_type = MyVenueConfig

    def __init__(self, config: MyVenueConfig, state_dir: Path) -> None:
        super().__init__(config, state_dir)
        self.my_config = config
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()  # never call an attribute ``_stop``: Pykka uses it
        self._session = None
        self._link = SessionLink(None, 0)

    def connect(self) -> None:
        # TODO: start opening the session and return without waiting for it; raise
        # ConnectorError only when the attempt fails at once (the base retries with
        # backoff, and gives up on an attempt after self.config.connect_timeout_s).
        # Give the attempt's link to the reader thread you start; it decodes each inbound
        # message through a dispatch table and calls link.tell(message) (a typed message
        # from messages/), self.count_malformed(...) for anything it cannot decode,
        # link.up() once the session is open and link.lost(reason) when it dies (or cannot
        # be opened). It never touches the actor's state directly.
        self._link = self.link
        raise ConnectorError("TODO: connect", venue=self.name)

    def disconnect(self) -> None:
        # TODO: close sockets, stop and join the reader thread. Idempotent; called after a
        # half-done connect too. Nothing may leak across restarts.
        if self._reader is not None:
            self._reader.join(timeout=5)

    def resync(self) -> None:
        # TODO: re-request executions (deliver them as OrderFilled: duplicates are dropped
        # by fill_id), working orders, and positions (deliver VenuePositions).
        self.request_positions("")

    def subscribe(self, symbols: Sequence[str]) -> None:
        # TODO: subscribe; publish market data as ONE QuoteBatch per read cycle.
        pass

    def submit(self, order: SubmitOrder) -> None:
        # TODO: send the order; answers come back as OrderAccepted / OrderRejected (with the
        # venue's code and text) / OrderFilled / OrderCancelled through self.inbound().
        raise ConnectorError("TODO: submit", venue=self.name)

    def cancel(self, order: CancelOrder) -> None:
        raise ConnectorError("TODO: cancel", venue=self.name)

    def cancel_all(self, request_id: str) -> None:
        # TODO: the venue's mass cancel; when the venue confirms:
        self.deliver(CancelAllDone(venue=self.name, request_id=request_id, ts_ns=now_ns()))

    def request_positions(self, request_id: str) -> None:
        # TODO: ask the venue for its positions and working orders; when it answers
        # (open_orders: their client order ids; None while the venue cannot list them):
        self.deliver(VenuePositions(venue=self.name, positions=(), request_id=request_id,
                                    ts_ns=now_ns(), open_orders=None))
