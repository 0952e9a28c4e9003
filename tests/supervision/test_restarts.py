"""Fault injection: a child that crashes, fails to start, hangs or dies without notice is
replaced, and the replacement is the one reachable by name."""

from __future__ import annotations

import gc
import threading
import time

import pykka

from supervision import (
    NO_BACKOFF,
    Backoff,
    ChildAbandoned,
    ChildExited,
    ChildState,
    Restart,
    TimerHandle,
    registry,
)
from tests.helpers import wait_for
from tests.supervision.probes import (
    Block,
    Countdown,
    Crash,
    Journal,
    Recording,
    StartTree,
    StopSelf,
    Vanish,
    child,
    echo,
    probe,
    wait_generation,
)

SMALL_BACKOFF = Backoff(initial_s=0.01, maximum_s=0.05, multiplier=2.0, jitter_s=0.0, reset_after_s=30.0)


def test_crash_in_told_message_restarts_child_under_same_name(start_tree: StartTree) -> None:
    journal = Journal()
    tree = start_tree([probe("worker", journal)], backoff=NO_BACKOFF, poll_s=0.05)
    old_ref = registry.lookup("worker")
    assert old_ref is not None
    assert echo("worker") == ("worker", 0)

    assert registry.tell("worker", Crash())

    row = wait_generation(tree, "worker", 1)
    new_ref = registry.lookup("worker")
    assert new_ref is not None and new_ref is not old_ref
    assert not old_ref.is_alive()
    assert registry.generation("worker") == 1
    assert echo("worker") == ("worker", 1)
    assert row.restarts == 1
    assert "RuntimeError" in row.last_exit_reason
    # The crashed generation released its resources exactly once.
    assert [(e.name, e.generation) for e in journal.since(kind="teardown")] == [("worker", 0)]


def test_late_notice_from_old_generation_is_ignored(start_tree: StartTree) -> None:
    journal = Journal()
    tree = start_tree([probe("worker", journal)], backoff=NO_BACKOFF, poll_s=0.05)
    registry.tell("worker", Crash())
    wait_generation(tree, "worker", 1)
    before = child(tree, "worker")
    log_before = tree.restart_log()
    ref_before = registry.lookup("worker")

    assert tree.ref is not None
    tree.ref.tell(ChildExited(supervisor="root", name="worker", generation=0, abnormal=True, reason="late"))

    # The supervisor's mailbox is FIFO: this answer comes after the notice was handled.
    after = child(tree, "worker")
    assert after == before
    assert tree.restart_log() == log_before
    assert registry.lookup("worker") is ref_before
    assert echo("worker") == ("worker", 1)


def test_exception_in_setup_is_restarted_with_backoff(start_tree: StartTree) -> None:
    journal = Journal()
    faults = Countdown(2)
    tree = start_tree(
        [probe("worker", journal, fail_setup=faults)], backoff=SMALL_BACKOFF, intensity=5, poll_s=0.05
    )

    row = wait_generation(tree, "worker", 2)
    assert faults.remaining == 0
    assert row.restarts == 2
    assert "injected setup fault" in row.last_exit_reason
    assert tree.restart_log() == [("worker", 1, 0.01), ("worker", 2, 0.02)]
    assert echo("worker") == ("worker", 2)
    # A failed start still tears down what it acquired.
    assert [e.generation for e in journal.since(kind="teardown")] == [0, 1]


def test_exception_in_constructor_is_restarted_with_backoff(start_tree: StartTree) -> None:
    journal = Journal()
    faults = Countdown(2)
    tree = start_tree(
        [probe("worker", journal, fail_init=faults)], backoff=SMALL_BACKOFF, intensity=5, poll_s=0.05
    )

    row = wait_generation(tree, "worker", 2)
    assert faults.remaining == 0
    assert row.restarts == 2
    assert "constructor failed" in row.last_exit_reason
    assert tree.restart_log() == [("worker", 1, 0.01), ("worker", 2, 0.02)]
    assert echo("worker") == ("worker", 2)
    # Only the generation that got past its constructor ever ran.
    assert [e.generation for e in journal.since(kind="start")] == [2]


def test_hung_child_is_detected_abandoned_and_replaced(start_tree: StartTree) -> None:
    journal = Journal()
    heartbeat_s, heartbeat_timeout_s = 0.05, 0.1
    recording = Recording()
    tree = start_tree(
        [probe("worker", journal, heartbeat_s=heartbeat_s, heartbeat_timeout_s=heartbeat_timeout_s)],
        backoff=NO_BACKOFF, poll_s=0.05,
    )
    release = threading.Event()
    try:
        hang = Block(event=release)
        registry.tell("worker", hang)
        assert hang.entered.wait(1.0)
        hung_at = time.monotonic()

        abandoned = wait_for(
            lambda: recording.messages(ChildAbandoned),
            timeout_s=heartbeat_s + heartbeat_timeout_s + 0.5, what="ChildAbandoned",
        )
        detected_after = time.monotonic() - hung_at
        assert isinstance(abandoned, list)
        assert abandoned[0].name == "worker" and abandoned[0].generation == 0
        assert "hung" in abandoned[0].reason
        assert detected_after <= heartbeat_s + heartbeat_timeout_s + 0.25

        row = wait_generation(tree, "worker", 1)
        assert echo("worker") == ("worker", 1)
        assert "hung" in row.last_exit_reason
    finally:
        release.set()

    # The old thread wakes, answers its stale ping, stops and sends a stale notice: ignored.
    old_thread = journal.since(kind="start")[0].thread
    wait_for(lambda: not old_thread.is_alive(), timeout_s=2, what="abandoned thread exits")
    assert journal.last("teardown", "worker").generation == 0
    row = child(tree, "worker")
    assert (row.generation, row.state, row.restarts) == (1, ChildState.RUNNING, 1)
    assert echo("worker") == ("worker", 1)


def test_child_that_does_not_start_in_time_is_abandoned_and_replaced(start_tree: StartTree) -> None:
    journal = Journal()
    recording = Recording()
    release = threading.Event()
    try:
        tree = start_tree(
            [probe("worker", journal, hang_setup=Countdown(1), release=release, start_timeout_s=0.1)],
            backoff=NO_BACKOFF, poll_s=0.05,
        )
        row = wait_generation(tree, "worker", 1)
        assert "did not start within" in row.last_exit_reason
        assert [(m.name, m.generation) for m in recording.wait(ChildAbandoned)] == [("worker", 0)]
        assert echo("worker") == ("worker", 1)
    finally:
        release.set()
    stuck = journal.since(kind="setup")[0].thread
    wait_for(lambda: not stuck.is_alive(), timeout_s=2, what="stuck thread exits")
    assert child(tree, "worker").generation == 1


def test_death_without_notice_is_found_by_liveness_poll(start_tree: StartTree) -> None:
    journal = Journal()
    tree = start_tree([probe("worker", journal, shutdown_timeout_s=0.2)], backoff=NO_BACKOFF, poll_s=0.02)
    old_ref = registry.lookup("worker")
    assert old_ref is not None

    registry.tell("worker", Vanish())

    row = wait_generation(tree, "worker", 1)
    assert row.last_exit_reason == "died without notice"
    assert not old_ref.is_alive()
    assert echo("worker") == ("worker", 1)


def test_slow_teardown_of_a_normal_exit_is_not_mistaken_for_a_silent_death(start_tree: StartTree) -> None:
    """A transient child that stops itself normally must not be restarted. Its exit notice
    is sent after ``teardown`` (resources are released before anyone restarts it), and
    Pykka marks the actor stopped before ``on_stop`` runs, so the liveness poll must not
    judge "died without notice" while the teardown is still running.

    (The failure mode guarded: the poll restarts the child as an abnormal exit.)"""
    journal = Journal()
    tree = start_tree(
        [probe("worker", journal, restart=Restart.TRANSIENT, teardown_s=0.3)], backoff=NO_BACKOFF, poll_s=0.01
    )
    registry.tell("worker", StopSelf())

    def settled() -> bool:
        row = child(tree, "worker")
        return row.state == ChildState.STOPPED or row.generation > 0

    wait_for(settled, timeout_s=2, what="worker exit handled")
    row = child(tree, "worker")
    assert row.generation == 0, f"a normal exit was restarted: {row}"
    assert row.state == ChildState.STOPPED
    assert row.last_exit_reason == "stopped"
    assert tree.restart_log() == []
    wait_for(lambda: journal.since(kind="teardown"), timeout_s=2, what="teardown finished")


def test_restart_does_not_leave_actors_behind(start_tree: StartTree) -> None:
    journal = Journal()
    tree = start_tree([probe("worker", journal)], backoff=NO_BACKOFF, poll_s=0.05)
    for generation in range(1, 4):
        registry.tell("worker", Crash())
        wait_generation(tree, "worker", generation)
    # root + the current worker only
    wait_for(lambda: len(pykka.ActorRegistry.get_all()) == 2, timeout_s=2, what="old generations gone")


def _live_timer_handles() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, TimerHandle))


def test_heartbeats_of_a_long_running_child_do_not_accumulate(start_tree: StartTree) -> None:
    """A child that runs for weeks with a heartbeat must not make its supervisor hold one
    more timer per beat: memory stays bounded in a service that runs 24/7.

    (The failure mode guarded: every beat appends two handles to the child's timer list,
    which would only be cleared on exit or restart.)"""
    journal = Journal()
    start_tree(
        [probe("worker", journal, heartbeat_s=0.01, heartbeat_timeout_s=0.05)],
        backoff=NO_BACKOFF, poll_s=0.05,
    )
    wait_for(lambda: journal.since(kind="ping"), timeout_s=2, what="first heartbeat")
    baseline = _live_timer_handles()

    wait_for(lambda: len(journal.since(kind="ping")) >= 60, timeout_s=3, what="60 heartbeats")

    # Pending: at most a few heartbeat deadlines, the next beat and the poll.
    assert _live_timer_handles() - baseline < 15
    assert echo("worker") == ("worker", 0)
