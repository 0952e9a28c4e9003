"""The tree as a whole: ordered start, reverse-order stop, restart intensity and escalation,
nested supervisors, and what a ``BaseException`` does."""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka

from supervision import (
    NO_BACKOFF,
    ChildAbandoned,
    ChildSpec,
    ChildState,
    Supervisor,
    SupervisorGaveUp,
    registry,
)
from supervision._supervisor import _RestartDue
from tests.helpers import wait_for
from tests.supervision.probes import (
    Block,
    Countdown,
    Crash,
    Journal,
    RaiseSystemExit,
    Recording,
    StartTree,
    actor_threads,
    child,
    echo,
    probe,
    wait_generation,
)


class Escalations:
    """Collects the reasons an escalation handler was called with."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.called = threading.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self.called.set()


def supervisor(name: str, children: list[ChildSpec], **kwargs: Any) -> ChildSpec:
    """A ``ChildSpec`` for a nested supervisor."""
    options: dict[str, Any] = {"backoff": NO_BACKOFF, "poll_s": 0.05, **kwargs}
    return ChildSpec(name=name, actor_class=Supervisor, kwargs={"children": children, **options})


def test_three_level_tree_starts_in_order_and_stops_in_reverse_leaving_nothing(start_tree: StartTree) -> None:
    earlier = frozenset(actor_threads())  # left by other test modules, if any
    journal = Journal()
    escalations = Escalations()
    low = supervisor("low", [probe("c", journal), probe("d", journal)])
    mid = supervisor("mid", [probe("b", journal), low])
    tree = start_tree([probe("a", journal), mid, probe("e", journal)], on_escalation=escalations, poll_s=0.05)

    assert journal.names("start") == ["a", "b", "c", "d", "e"]
    assert [row.name for row in tree.children()] == ["a", "mid", "e"]
    assert child(tree, "mid").is_supervisor
    assert {row.name: row.state for row in tree.children("low")} == {
        "c": ChildState.RUNNING, "d": ChildState.RUNNING,
    }
    assert echo("d") == ("d", 0)

    tree.stop(timeout_s=5)

    assert journal.names("teardown") == ["e", "d", "c", "b", "a"]
    assert not tree.is_alive()
    assert pykka.ActorRegistry.get_all() == []
    assert registry.names() == []
    wait_for(lambda: not actor_threads(earlier), timeout_s=2, what="actor threads to exit")
    assert escalations.reasons == []


def test_intensity_exceeded_escalates_at_root_and_stops_children_in_reverse(start_tree: StartTree) -> None:
    journal = Journal()
    escalations = Escalations()
    recording = Recording()
    tree = start_tree(
        [probe("a", journal), probe("b", journal), probe("c", journal)],
        intensity=2, period_s=5.0, backoff=NO_BACKOFF, poll_s=0.05, on_escalation=escalations,
    )
    for generation in (1, 2):
        registry.tell("b", Crash())
        wait_generation(tree, "b", generation)
    health = tree.health()
    # Every child runs, but two restarts of an intensity of 2 is a crash loop.
    assert health.ready and not health.healthy
    assert health.crash_looping == ("root",)
    mark = journal.mark()

    registry.tell("b", Crash())  # the third restart within the period is one too many

    assert escalations.called.wait(2.0)
    assert len(escalations.reasons) == 1
    assert "intensity 2" in escalations.reasons[0]
    # b tore down as it crashed, then the rest: last started first.
    assert [(e.name, e.generation) for e in journal.since(mark, "teardown")] == [("b", 2), ("c", 0), ("a", 0)]
    assert journal.since(mark, "start") == []
    wait_for(lambda: not tree.is_alive(), timeout_s=2, what="root exits")
    assert not tree.healthy()
    gave_up = recording.wait(SupervisorGaveUp)
    assert [m.supervisor for m in gave_up] == ["root"]
    assert [ref.actor_urn for ref in pykka.ActorRegistry.get_all()] == [recording.ref.actor_urn]


def test_nested_supervisor_giving_up_is_a_failed_child_of_its_parent(start_tree: StartTree) -> None:
    journal = Journal()
    escalations = Escalations()
    recording = Recording()
    faults = Countdown(2)  # enough to exceed the inner supervisor's intensity once
    inner = supervisor("inner", [probe("x", journal, fail_setup=faults)], intensity=1)
    tree = start_tree(
        [probe("a", journal), inner], intensity=5, backoff=NO_BACKOFF, poll_s=0.05, on_escalation=escalations
    )

    row = wait_generation(tree, "inner", 1)
    assert "SupervisorGaveUpError" in row.last_exit_reason
    assert row.restarts == 1
    assert faults.remaining == 0
    wait_generation(tree, "x", 0, supervisor="inner")  # a fresh inner supervisor, a fresh child
    assert echo("x") == ("x", 0)
    assert child(tree, "a").generation == 0
    assert [m.supervisor for m in recording.wait(SupervisorGaveUp)] == ["inner"]
    assert tree.healthy()
    assert escalations.reasons == []


def test_system_exit_in_a_child_stops_every_actor_and_escalates(start_tree: StartTree) -> None:
    """A ``BaseException`` escaping a handler makes Pykka stop every actor in the process.
    This is the designed behaviour (see the ``supervision._supervisor`` module docstring):
    the kernel does not try to survive it; the root, stopped without a stop request,
    calls its escalation handler so the application can exit non-zero and let the
    service manager restart it."""
    earlier = frozenset(actor_threads())  # left by other test modules, if any
    journal = Journal()
    escalations = Escalations()
    inner = supervisor("inner", [probe("c", journal)])
    tree = start_tree(
        [probe("a", journal), probe("boom", journal), inner],
        backoff=NO_BACKOFF, poll_s=0.05, on_escalation=escalations,
    )

    registry.tell("boom", RaiseSystemExit())

    assert escalations.called.wait(3.0)
    assert escalations.reasons and escalations.reasons[0]
    wait_for(lambda: not tree.is_alive(), timeout_s=3, what="root stopped")
    wait_for(lambda: pykka.ActorRegistry.get_all() == [], timeout_s=3, what="every actor stopped")
    wait_for(lambda: not actor_threads(earlier), timeout_s=3, what="every actor thread exited")
    assert len(escalations.reasons) == 1
    torn_down = {(e.name, e.generation) for e in journal.since(kind="teardown")}
    assert {("a", 0), ("boom", 0), ("c", 0)} <= torn_down


def test_nothing_is_restarted_while_pykka_stops_every_actor(start_tree: StartTree) -> None:
    """After a ``BaseException`` Pykka stops every actor, last started first, and the root
    last. Until the root's own stop arrives it sees its children exit; it must not start
    new generations of them (a connector would reconnect to its venue in the middle of
    the process going down).

    (The failure mode guarded: the crashed child, and often its siblings, are started
    again before the root is stopped.)"""
    earlier = frozenset(actor_threads())  # left by other test modules, if any
    journal = Journal()
    escalations = Escalations()
    inner = supervisor("inner", [probe("c", journal)])
    start_tree(
        [probe("a", journal), probe("boom", journal), inner],
        backoff=NO_BACKOFF, poll_s=0.05, on_escalation=escalations,
    )
    mark = journal.mark()

    registry.tell("boom", RaiseSystemExit())

    assert escalations.called.wait(3.0)
    wait_for(lambda: not actor_threads(earlier), timeout_s=3, what="every actor thread exited")
    assert [(e.name, e.generation) for e in journal.since(mark, "start")] == []


def test_restarts_outside_the_period_do_not_count_towards_intensity(start_tree: StartTree) -> None:
    journal = Journal()
    escalations = Escalations()
    period_s = 0.2
    tree = start_tree(
        [probe("worker", journal)], intensity=1, period_s=period_s, backoff=NO_BACKOFF, poll_s=0.05,
        on_escalation=escalations,
    )
    registry.tell("worker", Crash())
    wait_generation(tree, "worker", 1)
    first_restart = journal.last("start", "worker").at
    wait_for(lambda: time.monotonic() - first_restart > period_s + 0.05, timeout_s=1, what="period over")

    registry.tell("worker", Crash())

    wait_generation(tree, "worker", 2)
    assert tree.health().ready
    # One restart of an intensity of 1 is a crash loop until the period is over.
    wait_for(tree.healthy, timeout_s=2, what="the crash loop to clear after the period")
    assert escalations.reasons == []


def test_child_that_does_not_stop_in_time_is_abandoned_and_the_stop_completes(
    start_tree: StartTree,
) -> None:
    journal = Journal()
    recording = Recording()
    escalations = Escalations()
    tree = start_tree(
        [probe("a", journal), probe("stuck", journal, shutdown_timeout_s=0.2)],
        backoff=NO_BACKOFF, poll_s=0.05, on_escalation=escalations,
    )
    release = threading.Event()
    try:
        hang = Block(event=release)
        registry.tell("stuck", hang)
        assert hang.entered.wait(1.0)

        began = time.monotonic()
        tree.stop(timeout_s=5)
        assert time.monotonic() - began < 1.5

        assert not tree.is_alive()
        abandoned = recording.wait(ChildAbandoned)
        assert [(m.name, m.generation) for m in abandoned] == [("stuck", 0)]
        assert "did not stop" in abandoned[0].reason
        assert journal.names("teardown") == ["a"]  # the stuck one cannot run its teardown yet
        assert escalations.reasons == []
    finally:
        release.set()
    wait_for(lambda: journal.names("teardown") == ["a", "stuck"], timeout_s=2, what="stuck finally stops")


def test_root_that_fails_in_a_handler_escalates(start_tree: StartTree) -> None:
    """A root supervisor that dies of an exception in one of its own handlers (a bug, not a
    child's fault) has nobody above it to notice: it must call its escalation handler, as
    it does when it gives up or is stopped without a request, and leave no child behind.

    The fault is injected with a restart notice for a child the root does not have.
    (The failure mode guarded: Pykka calls ``on_failure``, which tears the children down
    but does not escalate, so the process would keep running without a tree.)"""
    journal = Journal()
    escalations = Escalations()
    tree = start_tree([probe("a", journal)], backoff=NO_BACKOFF, poll_s=0.05, on_escalation=escalations)
    assert tree.ref is not None

    tree.ref.tell(_RestartDue(owner="ghost", names=("ghost",), token=1))

    wait_for(lambda: not tree.is_alive(), timeout_s=2, what="root died")
    assert journal.names("teardown") == ["a"]
    assert escalations.called.wait(1.0), "the root died without escalating"
    assert "KeyError" in escalations.reasons[0]


def test_tree_health_and_listing(start_tree: StartTree) -> None:
    journal = Journal()
    tree = start_tree([probe("a", journal), probe("b", journal)], backoff=NO_BACKOFF, poll_s=0.05)
    assert tree.healthy()
    rows = tree.children()
    assert [(r.name, r.state, r.generation, r.restarts, r.is_supervisor) for r in rows] == [
        ("a", ChildState.RUNNING, 0, 0, False),
        ("b", ChildState.RUNNING, 0, 0, False),
    ]
    tree.stop()
    assert not tree.healthy()
