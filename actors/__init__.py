"""tradeguard's trading actors: connectors, safety monitor, risk governor, position keeper,
failsafe, dashboard and strategies."""
