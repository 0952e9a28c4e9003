"""Fences: registration tokens are never reused, and a generation that was abandoned or
stopped by its supervisor runs no further message and can no longer reach the registry or
the bus."""

from __future__ import annotations

import threading
from typing import Any

import pykka

from supervision import (
    NO_BACKOFF,
    ChildAbandoned,
    ChildExited,
    ChildSpec,
    Registry,
    Strategy,
    Supervisor,
    bus,
    registry,
)
from tests.helpers import wait_for
from tests.supervision.probes import (
    Block,
    BlockThenReach,
    Crash,
    Journal,
    Note,
    Recording,
    StartTree,
    actor_threads,
    echo,
    probe,
    wait_generation,
)


def _thread_of(ref: pykka.ActorRef[Any]) -> threading.Thread:
    for thread in actor_threads():
        owner = getattr(getattr(thread, "_target", None), "__self__", None)
        if isinstance(owner, pykka.Actor) and owner.actor_ref is ref:
            return thread
    raise AssertionError(f"no thread runs {ref}")


def test_tokens_are_unique_and_an_old_token_never_removes_a_new_registration() -> None:
    names = Registry()
    old, new = object(), object()
    first = names.register("svc", old, 0)  # type: ignore[arg-type]
    second = names.register("svc", new, 0)  # type: ignore[arg-type]  # same generation number
    assert first != second

    names.unregister("svc", token=first)  # a late clean-up by the older registration

    assert names.token("svc") == second
    assert names.register("svc", old, 0, token=first) == 0  # an older token never comes back
    assert names.token("svc") == second
    names.unregister("svc", token=second)
    assert names.names() == []


def test_a_replaced_supervisor_finishing_late_does_not_unregister_the_new_children(
        start_tree: StartTree) -> None:
    """The old supervisor numbered its child from 0, and so does its replacement: when the
    abandoned one finally finishes stopping its child, the new child must stay reachable."""
    journal = Journal()
    inner = ChildSpec(
        name="inner", actor_class=Supervisor, shutdown_timeout_s=0.3,
        kwargs={"children": [probe("x", journal, teardown_s=1.0, shutdown_timeout_s=5.0)],
                "backoff": NO_BACKOFF, "poll_s": 0.05},
    )
    tree = start_tree([probe("trigger", journal), inner], strategy=Strategy.ONE_FOR_ALL,
                      backoff=NO_BACKOFF, poll_s=0.05)
    old_inner = registry.lookup("inner")
    assert old_inner is not None
    old_thread = _thread_of(old_inner)
    old_token = registry.token("x")

    registry.tell("trigger", Crash())  # one_for_all: inner is stopped, overruns, is abandoned

    wait_generation(tree, "inner", 1)
    new_token = registry.token("x")
    assert new_token is not None and new_token != old_token
    assert echo("x") == ("x", 0)  # the replacement numbers its child from 0 again
    old_thread.join(timeout=5.0)  # the old supervisor finished its stop (and its clean-up)
    assert not old_thread.is_alive()
    assert [(e.name, e.generation) for e in journal.since(kind="teardown")][-1] == ("x", 0)

    assert registry.token("x") == new_token, "the old supervisor's clean-up removed the new child"
    assert echo("x") == ("x", 0)


def test_a_hung_child_abandoned_and_replaced_never_runs_what_was_queued_to_it(
        start_tree: StartTree) -> None:
    journal = Journal()
    recording = Recording()
    bystander = Recording(name="bystander", topic="news")
    tree = start_tree([probe("worker", journal, heartbeat_s=0.1, heartbeat_timeout_s=0.3)],
                      backoff=NO_BACKOFF, poll_s=0.05)
    release = threading.Event()
    hang = BlockThenReach(event=release)
    registry.tell("worker", hang)
    assert hang.entered.wait(2.0)
    for tag in ("order-1", "order-2", "order-3"):
        assert registry.tell("worker", Note(tag=tag))  # queued behind the hang
    recording.wait(ChildAbandoned, timeout_s=3.0)
    wait_generation(tree, "worker", 1)
    dead_before = registry.dead_letters["worker"]

    release.set()  # the old generation wakes up
    assert hang.done.wait(5.0)
    wait_for(lambda: registry.dead_letters["worker"] >= dead_before + 3, timeout_s=3.0,
             what="the queued messages to become dead letters")

    assert [e for e in journal.since() if e.kind.startswith("note:")] == []
    assert hang.outcomes == {"tell": False, "publish": 0, "lookup": None, "register": 0}
    assert bystander.messages() == []
    assert echo("worker") == ("worker", 1)
    registry.tell("worker", Note(tag="after"))
    wait_for(lambda: journal.names("note:after") == ["worker"], timeout_s=2.0, what="the new one runs")
    assert journal.since(kind="note:after")[0].generation == 1


def test_a_child_left_behind_by_tree_stop_is_fenced(start_tree: StartTree) -> None:
    journal = Journal()
    Recording(name="bystander", topic="news")
    tree = start_tree([probe("worker", journal, shutdown_timeout_s=0.2)], backoff=NO_BACKOFF, poll_s=0.05)
    release = threading.Event()
    hang = BlockThenReach(event=release)
    registry.tell("worker", hang)
    assert hang.entered.wait(2.0)
    registry.tell("worker", Note(tag="queued"))

    tree.stop(timeout_s=5.0)  # the worker overruns its shutdown timeout: abandoned
    assert not tree.is_alive()
    release.set()
    assert hang.done.wait(5.0)

    assert hang.outcomes == {"tell": False, "publish": 0, "lookup": None, "register": 0}
    wait_for(lambda: registry.dead_letters["worker"] >= 1, timeout_s=2.0, what="the queued note dropped")
    assert journal.names("note:queued") == []
    assert registry.names() == ["bystander"]
    assert bus.subscribers("news") == ("bystander",)


def test_a_sibling_stopped_by_its_supervisor_drops_what_was_queued_to_it(start_tree: StartTree) -> None:
    """one_for_all: the busy sibling is asked to stop; the orders queued behind its busy
    handler must not run once the stop was asked for (its replacement will take them)."""
    journal = Journal()
    recording = Recording()
    tree = start_tree([probe("a", journal), probe("b", journal)], strategy=Strategy.ONE_FOR_ALL,
                      backoff=NO_BACKOFF, poll_s=0.05)
    release = threading.Event()
    busy = Block(event=release)
    registry.tell("b", busy)
    assert busy.entered.wait(2.0)
    for tag in ("order-1", "order-2"):
        registry.tell("b", Note(tag=tag))

    registry.tell("a", Crash())
    recording.wait(ChildExited)  # published before the supervisor stops b
    release.set()

    wait_generation(tree, "b", 1)
    assert [e for e in journal.since() if e.kind.startswith("note:")] == []
    assert ("b", 0) in [(e.name, e.generation) for e in journal.since(kind="teardown")]
    assert registry.dead_letters["b"] >= 2
