"""Name registry and bus: names resolve to the current generation, messages for a name
that is down become counted dead letters, and subscriptions survive restarts."""

from __future__ import annotations

import threading

import pykka

from supervision import NO_BACKOFF, Bus, Registry, Restart, bus, registry
from tests.helpers import wait_for
from tests.supervision.probes import (
    Crash,
    Journal,
    Recorder,
    Recording,
    StartTree,
    StopSelf,
    probe,
    wait_generation,
)


def _recorder() -> tuple[pykka.ActorRef[Recorder], list[object]]:
    sink: list[object] = []
    return Recorder.start(sink, threading.Lock()), sink


def test_tell_to_an_unknown_name_is_a_dead_letter() -> None:
    names = Registry()
    assert names.tell("nobody", "hello") is False
    assert names.tell("nobody", "again") is False
    assert names.dead_letters["nobody"] == 2
    assert names.total_dead_letters() == 2


def test_tell_to_a_down_child_is_a_dead_letter(start_tree: StartTree) -> None:
    journal = Journal()
    tree = start_tree([probe("gone", journal, restart=Restart.TEMPORARY)], backoff=NO_BACKOFF, poll_s=0.05)
    registry.tell("gone", StopSelf())
    wait_for(lambda: registry.lookup("gone") is None, timeout_s=2, what="gone unregistered")
    wait_for(lambda: tree.children()[0].state == "stopped", timeout_s=2, what="exit handled")
    before = registry.total_dead_letters()

    assert registry.tell("gone", StopSelf()) is False

    assert registry.dead_letters["gone"] == 1
    assert registry.total_dead_letters() == before + 1


def test_dead_ref_still_registered_is_a_dead_letter() -> None:
    names = Registry()
    ref, _ = _recorder()
    names.register("r", ref, 0)
    ref.stop()
    assert names.lookup("r") is None
    assert names.tell("r", "late") is False
    assert names.dead_letters["r"] == 1


def test_publish_to_a_down_subscriber_counts_a_dead_letter_and_keeps_the_subscription() -> None:
    names = Registry()
    topics = Bus(names)
    alive, received = _recorder()
    names.register("alive", alive)
    topics.subscribe("prices", "alive")
    topics.subscribe("prices", "down")

    assert topics.publish("prices", "tick-1") == 1

    assert names.dead_letters == {"down": 1}
    wait_for(lambda: received == ["tick-1"], timeout_s=1, what="delivery")
    assert topics.subscribers("prices") == ("alive", "down")

    # The subscriber comes up (as after a restart): it gets the next publication.
    late, late_received = _recorder()
    names.register("down", late)
    assert topics.publish("prices", "tick-2") == 2
    wait_for(lambda: late_received == ["tick-2"], timeout_s=1, what="delivery after restart")
    assert names.dead_letters == {"down": 1}


def test_subscription_by_name_follows_a_restarted_child(start_tree: StartTree) -> None:
    journal = Journal()
    tree = start_tree([probe("worker", journal)], backoff=NO_BACKOFF, poll_s=0.05)
    recording = Recording(name="listener", topic="news")
    registry.tell("worker", Crash())
    wait_generation(tree, "worker", 1)
    assert bus.publish("news", "after restart") == 1
    wait_for(lambda: recording.messages() == ["after restart"], timeout_s=1, what="delivery")


def test_subscribe_is_idempotent_and_unsubscribe_stops_delivery() -> None:
    names = Registry()
    topics = Bus(names)
    ref, received = _recorder()
    names.register("r", ref)
    topics.subscribe("t", "r")
    topics.subscribe("t", "r")
    assert topics.publish("t", 1) == 1
    topics.unsubscribe("t", "r")
    assert topics.publish("t", 2) == 0
    assert topics.subscribers("t") == ()
    wait_for(lambda: received == [1], timeout_s=1, what="one delivery")
    assert names.total_dead_letters() == 0


def test_unregister_of_an_old_generation_keeps_the_new_one() -> None:
    names = Registry()
    old, _ = _recorder()
    new, _ = _recorder()
    names.register("svc", old, 0)
    names.register("svc", new, 1)

    names.unregister("svc", generation=0)  # a late clean-up by the old generation

    assert names.lookup("svc") is new
    assert names.generation("svc") == 1
    names.unregister("svc", generation=1)
    assert names.lookup("svc") is None
    assert names.generation("svc") is None
    assert names.names() == []


def test_reset_forgets_names_counters_and_subscriptions() -> None:
    names = Registry()
    topics = Bus(names)
    ref, _ = _recorder()
    names.register("r", ref)
    names.tell("nobody", "x")
    topics.subscribe("t", "r")
    names.reset()
    topics.reset()
    assert names.names() == [] and names.total_dead_letters() == 0
    assert topics.subscribers("t") == ()
