"""The order-entry gateway's configuration: the listener and one section per session."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import msgspec

from actors.errors import ConfigError
from messages.fix_spec import FIX44

LOOPBACK = frozenset({"127.0.0.1"})
"""Addresses the gateway may listen on (it is local to the machine unless changed here)."""


class FixSessionConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One FIX session the gateway accepts, with its credentials and limits."""

    sender_comp_id: str
    """The client's SenderCompID (49); the gateway's TargetCompID for this session."""
    username: str = ""
    """Expected Username (553) at Logon; the SenderCompID when empty."""
    password_env: str = ""
    """Environment variable holding the expected Password (554);
    ``TRADEGUARD_FIX_<SENDERCOMPID>_PASSWORD`` when empty."""
    default_venue: str = ""
    """Venue for orders without ExDestination (100); required when several venues exist."""
    cancel_on_disconnect: bool = True
    """When the session drops (logout, lost connection, missed heartbeats), cancel its
    working orders at the venue."""
    max_order_quantity: Decimal = Decimal(1000)
    """Largest quantity of one order from this session."""
    max_order_notional: Decimal = Decimal(100_000)
    """Largest notional (quantity times the limit price, else the current mid) of one order."""
    max_position: Decimal = Decimal(1000)
    """Largest absolute position per venue and symbol this session may build."""
    max_orders_per_s: int = 10
    """Most orders this session may send within one second."""

    @property
    def user(self) -> str:
        """The expected Username."""
        return self.username or self.sender_comp_id

    @property
    def password_variable(self) -> str:
        """The environment variable holding the expected Password."""
        return self.password_env or f"TRADEGUARD_FIX_{self.sender_comp_id.upper()}_PASSWORD"

    @property
    def source(self) -> str:
        """The ``source`` of this session's orders."""
        return f"fix:{self.sender_comp_id}"


class FixGatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The FIX order-entry gateway (``[order_entry.fix]``)."""

    host: str = "127.0.0.1"
    """Listening address; loopback only."""
    port: int = 5501
    """Listening TCP port."""
    begin_string: str = FIX44
    """FIX version; FIX.4.4 only."""
    comp_id: str = "TRADEGUARD"
    """The gateway's own CompID: the clients' TargetCompID (56)."""
    sessions: tuple[FixSessionConfig, ...] = ()
    """The sessions accepted; any other SenderCompID is refused."""


class OrderEntryConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Order sources outside the process (``[order_entry]``)."""

    api: bool = False
    """Serve the client API (``tradeguard.client``) over the control channel (off unless
    asked for: it lets local scripts send orders)."""
    fix: FixGatewayConfig | None = None
    """The FIX order-entry gateway; none without this section."""


def check_order_entry(section: OrderEntryConfig, venues: Mapping[str, tuple[str, ...]],
                      environ: Mapping[str, str]) -> None:
    """Refuse an order-entry configuration that could not run, naming the field."""
    config = section.fix
    if config is None:
        return
    where = "order_entry.fix"
    if config.host not in LOOPBACK:
        raise ConfigError(f"{where}.host: the gateway listens on 127.0.0.1 only, got {config.host!r}")
    if not 0 < config.port < 65536:
        raise ConfigError(f"{where}.port: must be within 1..65535, got {config.port}")
    if config.begin_string != FIX44:
        raise ConfigError(f"{where}.begin_string: only {FIX44} is served, got {config.begin_string!r}")
    if not config.comp_id:
        raise ConfigError(f"{where}.comp_id: must not be empty")
    if not config.sessions:
        raise ConfigError(f"{where}.sessions: at least one session is required")
    seen: set[str] = set()
    for index, session in enumerate(config.sessions):
        at = f"{where}.sessions[{index}]"
        if not session.sender_comp_id or session.sender_comp_id in seen:
            raise ConfigError(f"{at}.sender_comp_id: {session.sender_comp_id!r} is empty or used twice")
        seen.add(session.sender_comp_id)
        if session.default_venue and session.default_venue not in venues:
            raise ConfigError(f"{at}.default_venue: no connector named {session.default_venue!r}")
        if not session.default_venue and len(venues) != 1:
            raise ConfigError(f"{at}.default_venue: required when there is not exactly one venue")
        for name in ("max_order_quantity", "max_order_notional", "max_position"):
            value: Decimal = getattr(session, name)
            if not value.is_finite() or value <= 0:
                raise ConfigError(f"{at}.{name}: must be positive and finite, got {value}")
        if session.max_orders_per_s < 1:
            raise ConfigError(f"{at}.max_orders_per_s: must be at least 1, got {session.max_orders_per_s}")
        if not environ.get(session.password_variable):
            raise ConfigError(f"{at}.password_env: the environment variable "
                              f"{session.password_variable} is not set (the session's password)")
