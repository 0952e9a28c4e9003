"""Orders in flight on the FIX connector, against the real FixVenue acceptor over
loopback: no status query while the session is down (the wait restarts at the logon), and
the policy's cancel reaches the venue."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import topics
from messages import ConnectorDown, ConnectorUp, OrderCancelled, SafetyEvent
from supervision import bus
from tests.connectors.test_fix_connector import Inbox, coid_is, engine, inbox, resting, tell
from tests.connectors.test_fix_recovery import Pair, pairs, start
from tests.helpers import wait_for
from venues.engine import VenueEngine
from venues.fix_venue import FixBehaviour

__all__ = ["engine", "inbox", "pairs"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(120)

TIMEOUT_S = 1.0
RETRIES = 1
DOWN_S = 4.0  # longer than TIMEOUT_S * (RETRIES + 1): a clock running while down would end it


def test_no_query_while_the_session_is_down_and_the_wait_restarts_at_logon(
    engine: VenueEngine, inbox: Inbox, tmp_path: Path, pairs: list[Pair]
) -> None:
    bus.subscribe(topics.SAFETY, "recorder")
    pair = start(pairs, engine, tmp_path, inbox, FixBehaviour(drop_rate=1.0, answer_status=False),
                 inflight_timeout_s=TIMEOUT_S, inflight_retries=RETRIES,
                 reconnect_initial_s=DOWN_S, reconnect_max_s=DOWN_S, reconnect_jitter_s=0.01)
    engine.step()
    tell(resting("lost"))
    wait_for(lambda: pair.venue.dropped == ["lost"], what="order dropped in flight")
    mark = inbox.mark()
    pair.drop_session()
    [down] = inbox.wait(ConnectorDown)
    assert inbox.all(OrderCancelled, coid_is("lost")) == []  # dropped within the first wait
    ups = wait_for(lambda: inbox.since(mark, ConnectorUp), DOWN_S + 10, what="connector up again")
    assert isinstance(ups, list)
    [up] = ups

    [cancelled] = inbox.wait(OrderCancelled, coid_is("lost"), timeout_s=TIMEOUT_S * (RETRIES + 1) + 10)
    assert cancelled.text.startswith("lost in flight: no answer to")
    # Nothing was decided while the session was down, though it was down longer than the
    # whole in-flight budget; after the logon the order waited at least one timeout again.
    assert (up.ts_ns - down.ts_ns) / 1e9 > TIMEOUT_S * (RETRIES + 1)
    assert (cancelled.ts_ns - up.ts_ns) / 1e9 >= TIMEOUT_S * 0.9
    messages = inbox.all(object)
    assert messages.index(cancelled) > messages.index(up)
    # The venue saw the logon's status request and the in-flight ones, and answered none.
    assert pair.venue.misbehaviours.get("status_ignored", 0) == RETRIES + 1
    [alert] = inbox.wait(SafetyEvent, lambda e: e.kind == "order_lost_in_flight")
    assert "lost" in alert.detail
    assert len(inbox.all(OrderCancelled, coid_is("lost"))) == 1
