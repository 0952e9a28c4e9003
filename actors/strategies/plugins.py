"""Finding strategy classes: every strategy, built-in or not, is an entry point in the
``tradeguard.strategies`` group, named by its kind."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from actors.errors import ConfigError
from actors.strategies.base import Strategy

GROUP = "tradeguard.strategies"
"""The entry point group strategies register in."""

BUILT_IN = {"sample": "actors.strategies.sample:SampleStrategy"}
"""The strategies that ship with tradeguard (registered in its ``pyproject.toml`` too; used
as they are when tradeguard runs from a source tree whose metadata is not installed)."""


def strategy_kinds() -> list[str]:
    """Every strategy kind installed."""
    return sorted({ep.name for ep in entry_points(group=GROUP)} | set(BUILT_IN))


def strategy_class(kind: str) -> type[Strategy]:
    """The strategy class registered for ``kind``; ``ConfigError`` naming the installed
    kinds when there is none, or when the entry point cannot be loaded."""
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == kind]
    try:
        if matches:
            cls = matches[0].load()
        elif kind in BUILT_IN:
            module, _, attribute = BUILT_IN[kind].partition(":")
            cls = getattr(import_module(module), attribute)
        else:
            known = ", ".join(strategy_kinds())
            raise ConfigError(f"unknown strategy kind {kind!r}; installed kinds: {known}")
    except ConfigError:
        raise
    except Exception as exc:  # a broken plug-in is a configuration problem, said as such
        where = matches[0].value if matches else BUILT_IN[kind]
        raise ConfigError(f"strategy kind {kind!r} cannot be loaded ({where}): "
                          f"{type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(f"entry point {kind!r} in {GROUP} is not a Strategy subclass")
    return cls
