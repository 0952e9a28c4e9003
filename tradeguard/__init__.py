"""tradeguard: an always-on safety supervisor for live trading."""
