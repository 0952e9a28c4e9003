"""tradeguard's exceptions: one base, one subclass per subsystem."""

from __future__ import annotations


class TradeguardError(Exception):
    """Base of every tradeguard error."""


class ConnectorError(TradeguardError):
    """A venue session failed. Carries the venue's own code and text when there is one."""

    def __init__(self, message: str, *, venue: str = "", code: int | str | None = None,
                 venue_text: str = "") -> None:
        detail = message
        if code is not None or venue_text:
            detail = f"{message} (venue {venue or '?'} code {code}: {venue_text})"
        super().__init__(detail)
        self.venue = venue
        self.code = code
        self.venue_text = venue_text


class JournalError(TradeguardError):
    """The journal could not be read or written."""


class RiskError(TradeguardError):
    """An invalid request to the risk governor, such as a forbidden mode transition."""


class ConfigError(TradeguardError):
    """A configuration is invalid; the text names the path of the bad field."""
