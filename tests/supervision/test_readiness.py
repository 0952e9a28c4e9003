"""The start barrier tells the truth: ``Tree.start`` returns only when every permanent
child of every supervisor runs, and health says no while one does not or while a
supervisor crash-loops (more than half its restart intensity used in its period)."""

from __future__ import annotations

import time

import pytest

from supervision import NO_BACKOFF, Backoff, ChildSpec, Restart, SupervisionError, Supervisor, Tree, registry
from tests.helpers import wait_for
from tests.supervision.probes import Countdown, Crash, Journal, StartTree, child, probe


def test_start_returns_only_once_a_child_failing_in_setup_runs(start_tree: StartTree) -> None:
    journal = Journal()
    backoff = Backoff(initial_s=0.2, maximum_s=0.2, jitter_s=0.0)
    tree = start_tree([probe("a", journal), probe("flaky", journal, fail_setup=Countdown(2))],
                      backoff=backoff, poll_s=0.05, intensity=10)

    # start_tree returned: the flaky child's third setup succeeded before that.
    assert [e.generation for e in journal.since(kind="setup") if e.name == "flaky"] == [0, 1, 2]
    assert child(tree, "flaky").state == "running"
    assert tree.healthy()


def test_start_fails_naming_a_permanent_child_that_never_starts() -> None:
    journal = Journal()
    tree = Tree([probe("a", journal), probe("broken", journal, fail_setup=Countdown(10_000))],
                backoff=Backoff(initial_s=0.05, maximum_s=0.1, jitter_s=0.0), poll_s=0.05,
                intensity=1_000)
    try:
        began = time.monotonic()
        with pytest.raises(SupervisionError, match=r"root/broken .*injected setup fault"):
            tree.start(timeout_s=1.5)
        assert time.monotonic() - began >= 1.4  # it waited for the child, it did not lie
        health = tree.health()
        assert not health.ready and not health.healthy
        assert any(p.startswith("root/broken") for p in health.problems)
    finally:
        tree.stop(timeout_s=5.0)


def test_a_failing_permanent_child_of_a_nested_supervisor_keeps_the_tree_not_ready() -> None:
    journal = Journal()
    inner = ChildSpec(name="inner", actor_class=Supervisor, kwargs={
        "children": [probe("ok", journal), probe("broken", journal, fail_setup=Countdown(10_000))],
        "backoff": Backoff(initial_s=0.05, maximum_s=0.1, jitter_s=0.0), "poll_s": 0.05,
        "intensity": 1_000})
    tree = Tree([probe("a", journal), inner], backoff=NO_BACKOFF, poll_s=0.05)
    try:
        with pytest.raises(SupervisionError, match=r"inner/broken"):
            tree.start(timeout_s=1.0)
        assert not tree.healthy()
    finally:
        tree.stop(timeout_s=5.0)


def test_temporary_and_transient_children_that_are_down_do_not_block_readiness(start_tree: StartTree) -> None:
    journal = Journal()
    tree = start_tree([probe("a", journal),
                       probe("once", journal, restart=Restart.TEMPORARY, fail_setup=Countdown(1))],
                      backoff=NO_BACKOFF, poll_s=0.05)
    assert child(tree, "once").state == "stopped"
    assert tree.healthy()


def test_a_crash_loop_below_the_root_makes_the_tree_unhealthy_until_the_period_is_over(
        start_tree: StartTree) -> None:
    journal = Journal()
    period_s = 1.0
    inner = ChildSpec(name="inner", actor_class=Supervisor, kwargs={
        "children": [probe("worker", journal)], "backoff": NO_BACKOFF, "poll_s": 0.05,
        "intensity": 4, "period_s": period_s})
    tree = start_tree([inner], backoff=NO_BACKOFF, poll_s=0.05)

    first_crash = time.monotonic()
    registry.tell("worker", Crash())
    wait_for(lambda: child(tree, "worker", "inner").generation == 1, timeout_s=2, what="restart 1")
    wait_for(lambda: child(tree, "worker", "inner").state == "running", timeout_s=2, what="running")
    assert tree.healthy(), "one restart of four allowed is not a crash loop"
    registry.tell("worker", Crash())
    wait_for(lambda: child(tree, "worker", "inner").generation == 2, timeout_s=2, what="restart 2")
    wait_for(lambda: child(tree, "worker", "inner").state == "running", timeout_s=2, what="running")
    assert tree.healthy(), "half the intensity is not yet more than half"
    registry.tell("worker", Crash())
    wait_for(lambda: child(tree, "worker", "inner").generation == 3, timeout_s=2, what="restart 3")
    wait_for(lambda: child(tree, "worker", "inner").state == "running", timeout_s=2, what="running")

    health = tree.health()
    assert health.ready and health.crash_looping == ("inner",) and not health.healthy
    assert any("inner is crash-looping: 3 restarts" in p for p in health.problems)
    wait_for(tree.healthy, timeout_s=3 * period_s, what="the crash loop to age out")
    assert time.monotonic() - first_crash >= period_s  # not before the first restart aged out


def test_start_without_requiring_running_returns_at_the_barrier_and_health_says_no() -> None:
    journal = Journal()
    tree = Tree([probe("a", journal), probe("broken", journal, fail_setup=Countdown(10_000))],
                backoff=Backoff(initial_s=0.05, maximum_s=0.1, jitter_s=0.0), poll_s=0.05,
                intensity=1_000)
    try:
        began = time.monotonic()
        tree.start(timeout_s=5.0, require_running=False)
        assert time.monotonic() - began < 2.0
        assert not tree.healthy()
        assert any(p.startswith("root/broken") for p in tree.health().problems)
    finally:
        tree.stop(timeout_s=5.0)
