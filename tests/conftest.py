"""Shared fixtures: every test starts with an empty registry and bus and ends with every
actor stopped."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pykka
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from supervision import bus, registry  # noqa: E402

if TYPE_CHECKING:
    from tradeguard.app import Service
    from tradeguard.settings import Settings


@pytest.fixture(autouse=True)
def _clean_actor_system() -> Iterator[None]:
    registry.reset()
    bus.reset()
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=10)
    registry.reset()
    bus.reset()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start ``tradeguard.app.Service`` instances (the paper venue at test speed unless
    settings are given); every one is stopped, and the paper venues forgotten, afterwards."""
    from tests.system.test_failsafe_paper import fast_settings
    from tradeguard.app import Service
    from venues.paper import stop_paper_venues

    started: list[Service] = []

    def start(settings: Settings | None = None) -> Service:
        svc = Service(settings or fast_settings(), tmp_path / "state")
        started.append(svc)
        svc.start()
        return svc

    try:
        yield start
    finally:
        for svc in started:
            svc.stop()
        stop_paper_venues()
