"""Backoff between restarts: grows, is capped, is jittered, resets after a stable period;
and a supervisor keeps answering while a child waits out a long backoff.

Delays are checked on the schedule the supervisor computed (``Tree.restart_log``) and on
``Backoff.delay``, never by timing sleeps."""

from __future__ import annotations

import time
import warnings

import pytest

from supervision import NO_BACKOFF, Backoff, ChildState, registry
from tests.helpers import wait_for
from tests.supervision.probes import (
    Countdown,
    Crash,
    Journal,
    StartTree,
    child,
    echo,
    probe,
    wait_generation,
)

# ---- Backoff.delay ----------------------------------------------------------------------


def test_delay_grows_exponentially_and_is_capped() -> None:
    backoff = Backoff(initial_s=0.1, maximum_s=1.0, multiplier=2.0, jitter_s=0.0)
    delays = [backoff.delay(attempt) for attempt in range(1, 8)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_delay_is_capped_even_with_jitter_and_huge_attempts() -> None:
    backoff = Backoff(initial_s=0.5, maximum_s=2.0, multiplier=3.0, jitter_s=5.0)
    for attempt in (1, 2, 5, 50, 5000):
        assert 0.0 <= backoff.delay(attempt) <= 2.0


def test_delay_is_jittered_within_bounds() -> None:
    backoff = Backoff(initial_s=0.1, maximum_s=10.0, multiplier=2.0, jitter_s=0.05)
    for attempt, base in ((1, 0.1), (2, 0.2), (3, 0.4)):
        samples = [backoff.delay(attempt) for _ in range(50)]
        assert all(base <= d <= base + 0.05 for d in samples)
        assert len(set(samples)) > 1, "no jitter"
        assert any(d != base for d in samples)


def test_no_backoff_restarts_at_once() -> None:
    assert [NO_BACKOFF.delay(a) for a in range(1, 6)] == [0.0] * 5


def test_delay_uses_no_deprecated_tenacity_api() -> None:
    """``Backoff`` computes delays with tenacity; it must not rely on a deprecated
    parameter (a future tenacity release would break every restart).

    (tenacity 9.2 deprecates ``wait_exponential_jitter(initial=...)``.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert Backoff(initial_s=0.1, jitter_s=0.0).delay(1) == pytest.approx(0.1)


# ---- the schedule a supervisor computes -------------------------------------------------


def test_restart_delays_grow_and_are_capped(start_tree: StartTree) -> None:
    journal = Journal()
    backoff = Backoff(initial_s=0.01, maximum_s=0.03, multiplier=2.0, jitter_s=0.0, reset_after_s=30.0)
    tree = start_tree(
        [probe("worker", journal, fail_setup=Countdown(4))], backoff=backoff, intensity=10, poll_s=0.05
    )
    wait_generation(tree, "worker", 4)
    log = tree.restart_log()
    assert [(name, attempt) for name, attempt, _ in log] == [("worker", a) for a in (1, 2, 3, 4)]
    assert [delay for _, _, delay in log] == pytest.approx([0.01, 0.02, 0.03, 0.03])


def test_restart_delays_are_jittered_per_child(start_tree: StartTree) -> None:
    journal = Journal()
    backoff = Backoff(initial_s=0.01, maximum_s=1.0, multiplier=2.0, jitter_s=0.01, reset_after_s=30.0)
    tree = start_tree(
        [probe("x", journal, fail_setup=Countdown(3)), probe("y", journal, fail_setup=Countdown(3))],
        backoff=backoff, intensity=10, poll_s=0.05,
    )
    wait_generation(tree, "x", 3)
    wait_generation(tree, "y", 3)
    log = tree.restart_log()
    by_child = {name: [(a, d) for n, a, d in log if n == name] for name in ("x", "y")}
    for schedule in by_child.values():
        assert [a for a, _ in schedule] == [1, 2, 3]
        for attempt, delay in schedule:
            base = 0.01 * 2 ** (attempt - 1)
            assert base <= delay <= base + 0.01
            assert delay != base
    # Two children failing in lockstep do not restart in lockstep.
    assert [d for _, d in by_child["x"]] != [d for _, d in by_child["y"]]


def test_backoff_resets_after_the_child_was_up_long_enough(start_tree: StartTree) -> None:
    journal = Journal()
    reset_after_s = 0.15
    backoff = Backoff(
        initial_s=0.01, maximum_s=1.0, multiplier=2.0, jitter_s=0.0, reset_after_s=reset_after_s
    )
    tree = start_tree(
        [probe("worker", journal, fail_setup=Countdown(2))], backoff=backoff, intensity=10, poll_s=0.05
    )
    wait_generation(tree, "worker", 2)

    # Up only briefly: the next restart continues the sequence.
    registry.tell("worker", Crash())
    wait_generation(tree, "worker", 3)
    log = tree.restart_log()
    assert [a for _, a, _ in log] == [1, 2, 3]
    assert [d for _, _, d in log] == pytest.approx([0.01, 0.02, 0.04])

    # Up for longer than reset_after_s: the sequence starts again.
    started = journal.last("start", "worker")
    assert started.generation == 3
    wait_for(lambda: time.monotonic() - started.at > reset_after_s + 0.1, timeout_s=1, what="stable period")
    registry.tell("worker", Crash())
    wait_generation(tree, "worker", 4)
    name, attempt, delay = tree.restart_log()[-1]
    assert (name, attempt) == ("worker", 1)
    assert delay == pytest.approx(0.01)


def test_supervisor_answers_while_a_child_waits_out_a_long_backoff(start_tree: StartTree) -> None:
    journal = Journal()
    backoff = Backoff(initial_s=30.0, maximum_s=60.0, jitter_s=0.0)
    tree = start_tree([probe("slow", journal), probe("other", journal)], backoff=backoff, poll_s=0.05)

    registry.tell("slow", Crash())
    wait_for(lambda: child(tree, "slow").state == ChildState.BACKOFF, timeout_s=2, what="backoff")

    for _ in range(5):
        began = time.monotonic()
        rows = {row.name: row for row in tree.children(timeout_s=1.0)}
        assert time.monotonic() - began < 0.5
        assert rows["slow"].state == ChildState.BACKOFF
        assert rows["other"].state == ChildState.RUNNING
    health = tree.health(timeout_s=0.5)  # answered at once, and honest: a child is down
    assert not health.healthy
    assert [p.split(" ")[0] for p in health.problems] == ["root/slow"]
    assert tree.restart_log() == [("slow", 1, 30.0)]
    assert echo("other") == ("other", 0)
    assert not registry.tell("slow", Crash())  # down during backoff: a dead letter
    assert registry.dead_letters["slow"] == 1

    # Stopping does not wait for the pending restart.
    began = time.monotonic()
    tree.stop(timeout_s=5)
    assert time.monotonic() - began < 1.0
    assert not tree.is_alive()
