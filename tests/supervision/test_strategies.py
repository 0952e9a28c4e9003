"""Restart strategies (which siblings restart, in which order) and restart types (which
exits restart a child at all)."""

from __future__ import annotations

import pytest

from supervision import NO_BACKOFF, ChildState, Restart, Strategy, Tree, registry
from tests.helpers import wait_for
from tests.supervision.probes import (
    Crash,
    Journal,
    StartTree,
    StopSelf,
    child,
    echo,
    probe,
    wait_generation,
)


def _start_abc(start_tree: StartTree, journal: Journal, strategy: Strategy) -> Tree:
    tree = start_tree(
        [probe("a", journal), probe("b", journal), probe("c", journal)],
        strategy=strategy, backoff=NO_BACKOFF, poll_s=0.05,
    )
    assert journal.names("start") == ["a", "b", "c"]
    return tree


def _generations(tree: Tree) -> dict[str, int]:
    return {row.name: row.generation for row in tree.children()}


def _restarted(journal: Journal, mark: int) -> list[tuple[str, int]]:
    return [(e.name, e.generation) for e in journal.since(mark, "start")]


def _stopped(journal: Journal, mark: int) -> list[tuple[str, int]]:
    return [(e.name, e.generation) for e in journal.since(mark, "teardown")]


def test_one_for_one_restarts_only_the_failed_child(start_tree: StartTree) -> None:
    journal = Journal()
    tree = _start_abc(start_tree, journal, Strategy.ONE_FOR_ONE)
    mark = journal.mark()

    registry.tell("b", Crash())
    wait_generation(tree, "b", 1)

    assert _stopped(journal, mark) == [("b", 0)]
    assert _restarted(journal, mark) == [("b", 1)]
    assert _generations(tree) == {"a": 0, "b": 1, "c": 0}
    assert [echo(n) for n in "abc"] == [("a", 0), ("b", 1), ("c", 0)]


def test_one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order(start_tree: StartTree) -> None:
    journal = Journal()
    tree = _start_abc(start_tree, journal, Strategy.ONE_FOR_ALL)
    mark = journal.mark()

    registry.tell("b", Crash())
    wait_generation(tree, "c", 1)

    # b tore down as it crashed; then the others, last started first.
    assert _stopped(journal, mark) == [("b", 0), ("c", 0), ("a", 0)]
    assert _restarted(journal, mark) == [("a", 1), ("b", 1), ("c", 1)]
    assert _generations(tree) == {"a": 1, "b": 1, "c": 1}
    assert [echo(n) for n in "abc"] == [("a", 1), ("b", 1), ("c", 1)]
    assert tree.restart_log() == [("b", 1, 0.0)]


def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it(start_tree: StartTree) -> None:
    journal = Journal()
    tree = _start_abc(start_tree, journal, Strategy.REST_FOR_ONE)
    mark = journal.mark()

    registry.tell("b", Crash())
    wait_generation(tree, "c", 1)

    assert _stopped(journal, mark) == [("b", 0), ("c", 0)]
    assert _restarted(journal, mark) == [("b", 1), ("c", 1)]
    assert _generations(tree) == {"a": 0, "b": 1, "c": 1}
    assert [echo(n) for n in "abc"] == [("a", 0), ("b", 1), ("c", 1)]


def test_rest_for_one_failure_of_the_last_child_restarts_only_it(start_tree: StartTree) -> None:
    journal = Journal()
    tree = _start_abc(start_tree, journal, Strategy.REST_FOR_ONE)
    mark = journal.mark()

    registry.tell("c", Crash())
    wait_generation(tree, "c", 1)

    assert _restarted(journal, mark) == [("c", 1)]
    assert _generations(tree) == {"a": 0, "b": 0, "c": 1}


@pytest.mark.parametrize(
    ("restart", "abnormal", "restarted"),
    [
        (Restart.PERMANENT, False, True),
        (Restart.PERMANENT, True, True),
        (Restart.TRANSIENT, False, False),
        (Restart.TRANSIENT, True, True),
        (Restart.TEMPORARY, False, False),
        (Restart.TEMPORARY, True, False),
    ],
)
def test_restart_type_decides_whether_an_exit_is_restarted(
    start_tree: StartTree, restart: Restart, abnormal: bool, restarted: bool
) -> None:
    journal = Journal()
    tree = start_tree([probe("worker", journal, restart=restart)], backoff=NO_BACKOFF, poll_s=0.05)

    # abnormal: an exception in a told message; normal: the child stops itself.
    registry.tell("worker", Crash() if abnormal else StopSelf())

    if restarted:
        row = wait_generation(tree, "worker", 1)
        assert echo("worker") == ("worker", 1)
        assert row.restarts == 1
    else:
        # Scheduling a restart happens in the same handler that marks the child stopped,
        # so a child seen STOPPED was not (and will not be) restarted.
        wait_for(lambda: child(tree, "worker").state == ChildState.STOPPED, timeout_s=2, what="stopped")
        row = child(tree, "worker")
        assert (row.generation, row.restarts) == (0, 0)
        assert registry.lookup("worker") is None
        assert tree.restart_log() == []
        assert not registry.tell("worker", StopSelf())  # down: a dead letter
    expected_reason = "RuntimeError" if abnormal else "stopped"
    assert expected_reason in row.last_exit_reason
    assert row.restart_type == str(restart)


def test_temporary_child_that_stays_down_does_not_disturb_its_siblings(start_tree: StartTree) -> None:
    journal = Journal()
    tree = start_tree(
        [probe("a", journal), probe("t", journal, restart=Restart.TEMPORARY), probe("c", journal)],
        strategy=Strategy.REST_FOR_ONE, backoff=NO_BACKOFF, poll_s=0.05,
    )
    registry.tell("t", Crash())
    wait_for(lambda: child(tree, "t").state == ChildState.STOPPED, timeout_s=2, what="t stopped")
    assert _generations(tree) == {"a": 0, "t": 0, "c": 0}
    assert tree.healthy()
