"""Shared fixtures: every test starts with an empty registry and bus and ends with every
actor stopped."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from supervision import bus, registry  # noqa: E402


@pytest.fixture(autouse=True)
def _clean_actor_system() -> Iterator[None]:
    registry.reset()
    bus.reset()
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=10)
    registry.reset()
    bus.reset()
