"""The one-way import rules, read from the source with ``ast``:

``tradeguard -> actors -> core -> messages``, ``actors -> supervision``, ``venues -> messages``;
``supervision/`` and ``messages/`` import nothing of the others; actors never import each
other (only shared modules: topics, errors, the journal, the connector contract); nothing
under ``core/`` does I/O or keeps time of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("actors", "benchmarks", "core", "messages", "supervision", "tradeguard", "venues")

ALLOWED: dict[str, frozenset[str]] = {
    "messages": frozenset({"messages"}),
    "supervision": frozenset({"supervision"}),
    "core": frozenset({"core", "messages"}),
    "venues": frozenset({"venues", "messages"}),
    "actors": frozenset({"actors", "core", "messages", "supervision"}),
    "tradeguard": frozenset(PROJECT) - {"benchmarks"},
}
"""Which project packages each package may import."""

EXCEPTIONS: dict[str, frozenset[str]] = {
    # The paper connector is the in-process front of the simulated venue (docs/design.md).
    "actors.connectors.paper": frozenset({"venues"}),
}

CORE_FORBIDDEN = frozenset({"pykka", "threading", "_thread", "zmq", "quickfix", "ib_insync", "ib_async",
                            "sqlite3", "socket", "asyncio", "selectors", "subprocess", "time", "loguru",
                            "logging", "supervision", "tenacity"})
"""No actors, threads, sockets, SQLite, clocks or logging under core/: time is passed in."""

ACTOR_BASES = frozenset({"SupervisedActor", "Connector", "Strategy", "ThreadingActor"})

SHARED = frozenset({"actors.connectors.base", "actors.strategies.base"})
"""Modules under actors/ that define a base actor class every connector (every strategy)
shares (the connector contract, the strategy base), not an actor of their own."""


def modules(package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative ones resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from actors import topics`
    return found


def defines_actor(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                base_name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
                if base_name in ACTOR_BASES:
                    return True
    return False


ALL = {name: path for package in PROJECT for name, path in modules(package).items()}
ACTOR_MODULES = frozenset(name for name, path in ALL.items()
                          if name.startswith("actors.") and name not in SHARED and defines_actor(path))


def test_the_rules_see_the_project() -> None:
    assert {"core.modes", "core.checks", "messages.requests", "actors.topics"} <= set(ALL)
    assert {"actors.risk_governor", "actors.failsafe", "actors.position_keeper", "actors.safety_monitor",
            "actors.dashboard", "actors.connectors.paper"} <= ACTOR_MODULES
    assert "actors.topics" not in ACTOR_MODULES and "actors.journal" not in ACTOR_MODULES


@pytest.mark.parametrize("name", sorted(n for n in ALL if n.split(".")[0] in ALLOWED))
def test_imports_go_one_way(name: str) -> None:
    package = name.split(".")[0]
    allowed = ALLOWED[package] | EXCEPTIONS.get(name, frozenset())
    project = {i.split(".")[0] for i in imports(name, ALL[name])} & set(PROJECT)
    assert project <= allowed, f"{name} imports {sorted(project - allowed)}"


@pytest.mark.parametrize("name", sorted(n for n in ALL if n.startswith("actors")))
def test_actors_never_import_each_other(name: str) -> None:
    others = {i for i in imports(name, ALL[name]) if i in ACTOR_MODULES and i != name}
    assert not others, f"{name} imports the actor module(s) {sorted(others)}: use messages/ and actors.topics"


@pytest.mark.parametrize("name", sorted(n for n in ALL if n.split(".")[0] == "core"))
def test_core_is_pure(name: str) -> None:
    used = {i.split(".")[0] for i in imports(name, ALL[name])}
    assert not used & CORE_FORBIDDEN, f"{name} imports {sorted(used & CORE_FORBIDDEN)}"


def test_a_violation_is_seen(tmp_path: Path) -> None:
    """The parser catches the forms an import can take (the rules are not vacuous)."""
    sample = tmp_path / "sample.py"
    sample.write_text("import threading as t\nfrom actors.failsafe import Failsafe\n"
                      "if True:\n    from ..journal import Journal\n")
    found = imports("actors.connectors.sample", sample)
    assert {"threading", "actors.failsafe", "actors.journal"} <= found
