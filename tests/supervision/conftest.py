"""Fixtures for the supervision tests: trees that are stopped properly after each test, and
a check that no actor thread outlives its test."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pykka
import pytest

from supervision import ChildSpec, Tree
from tests.helpers import wait_for
from tests.supervision.probes import StartTree, actor_threads


@pytest.fixture
def start_tree() -> Iterator[StartTree]:
    """Start a ``Tree`` (arguments as for ``Tree``); it is stopped after the test."""
    trees: list[Tree] = []
    earlier = frozenset(actor_threads())  # not this test's to clean up

    def start(children: Sequence[ChildSpec], **kwargs: Any) -> Tree:
        tree = Tree(children, **kwargs)
        trees.append(tree)
        tree.start(timeout_s=2.0)
        return tree

    yield start
    for tree in reversed(trees):
        tree.stop(timeout_s=5.0)
    pykka.ActorRegistry.stop_all(block=True, timeout=5.0)  # recorders and strays
    wait_for(lambda: not actor_threads(earlier), timeout_s=5.0, what="every actor thread to exit")
