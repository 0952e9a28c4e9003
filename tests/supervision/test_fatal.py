"""A ``BaseException`` is always loud: wherever it is raised (setup, a told or asked
handler), the tree's root escalates within a bounded time naming the exception and the
actor, the tree is unhealthy from that moment, and the tree goes down even when another
actor hangs. The fate belongs to one tree: a new tree supervises normally. Abandoned actor
threads never keep a process alive."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pykka
import pytest

from supervision import NO_BACKOFF, ChildAbandoned, SupervisionError, Tree, registry
from tests.helpers import wait_for
from tests.supervision.probes import (
    Block,
    Countdown,
    Crash,
    Journal,
    RaiseKeyboardInterrupt,
    RaiseSystemExit,
    Recording,
    StartTree,
    actor_threads,
    probe,
    wait_generation,
)
from tests.supervision.test_tree import Escalations

ESCALATION_BOUND_S = 2.0
"""How soon the root must escalate once a BaseException was raised (generous for a loaded
machine: the escalation itself is immediate)."""


def test_system_exit_in_setup_fails_the_start_loudly() -> None:
    journal = Journal()
    escalations = Escalations()
    tree = Tree([probe("a", journal), probe("boom", journal, exit_setup=Countdown(1))],
                backoff=NO_BACKOFF, poll_s=0.05, on_escalation=escalations)
    began = time.monotonic()
    try:
        with pytest.raises(SupervisionError, match=r"SystemExit.*boom"):
            tree.start(timeout_s=10.0)
        assert time.monotonic() - began < ESCALATION_BOUND_S, "the start waited for its timeout"
        assert escalations.called.is_set()
        assert "SystemExit" in escalations.reasons[0] and "boom" in escalations.reasons[0]
        assert not tree.healthy()
        wait_for(lambda: not tree.is_alive(), timeout_s=5.0, what="the tree to go down")
        assert journal.since(kind="start")[-1].name == "a"  # boom never started, nothing restarted
        assert registry.lookup("boom") is None
    finally:
        tree.stop(timeout_s=5.0)


def test_system_exit_in_setup_of_a_restart_escalates(start_tree: StartTree) -> None:
    journal = Journal()
    escalations = Escalations()
    exit_setup = Countdown(0)
    tree = start_tree([probe("worker", journal, exit_setup=exit_setup)],
                      backoff=NO_BACKOFF, poll_s=0.05, on_escalation=escalations)
    assert tree.healthy()
    journal_mark = journal.mark()
    exit_setup.remaining = 1  # the next generation's setup raises SystemExit
    registry.tell("worker", Crash())

    assert escalations.called.wait(ESCALATION_BOUND_S)
    assert "SystemExit" in escalations.reasons[0] and "worker" in escalations.reasons[0]
    assert not tree.healthy()
    wait_for(lambda: not tree.is_alive(), timeout_s=5.0, what="the tree to go down")
    assert journal.names("start", journal_mark) == []
    assert len(escalations.reasons) == 1


@pytest.mark.parametrize("how", ["tell", "ask"])
def test_base_exception_while_another_actor_hangs_escalates_in_bounded_time(
        start_tree: StartTree, how: str) -> None:
    journal = Journal()
    escalations = Escalations()
    recording = Recording()
    tree = start_tree(
        [probe("hung", journal, shutdown_timeout_s=0.5), probe("boom", journal), probe("z", journal)],
        backoff=NO_BACKOFF, poll_s=0.05, on_escalation=escalations,
    )
    release = threading.Event()
    block = Block(event=release)
    registry.tell("hung", block)
    assert block.entered.wait(2.0)
    try:
        raised = time.monotonic()
        if how == "tell":
            registry.tell("boom", RaiseKeyboardInterrupt())
        else:
            boom = registry.lookup("boom")
            assert boom is not None
            with pytest.raises(Exception, match="KeyboardInterrupt"):
                boom.ask(RaiseKeyboardInterrupt(), timeout=2.0)

        assert escalations.called.wait(ESCALATION_BOUND_S), "no escalation while an actor hangs"
        assert time.monotonic() - raised < ESCALATION_BOUND_S
        assert not tree.healthy(timeout_s=0.5)
        reason = escalations.reasons[0]
        assert "KeyboardInterrupt" in reason and "boom" in reason
        # The tree goes down in bounded time: the hung child is abandoned, not waited for.
        wait_for(lambda: not tree.is_alive(), timeout_s=5.0, what="the root to stop")
        assert [m.name for m in recording.wait(ChildAbandoned)] == ["hung"]
        torn_down = {e.name for e in journal.since(kind="teardown")}
        assert {"boom", "z"} <= torn_down
        assert journal.names("start")[-1] == "z"  # nothing restarted
        assert len(escalations.reasons) == 1
    finally:
        release.set()


def test_fate_belongs_to_one_tree(start_tree: StartTree) -> None:
    journal = Journal()
    first_escalations = Escalations()
    first = start_tree([probe("boom", journal)], name="first", backoff=NO_BACKOFF, poll_s=0.05,
                       on_escalation=first_escalations)
    registry.tell("boom", RaiseSystemExit())
    assert first_escalations.called.wait(ESCALATION_BOUND_S)
    wait_for(lambda: not first.is_alive(), timeout_s=5.0, what="the first tree to go down")

    second_escalations = Escalations()
    second = start_tree([probe("worker", journal)], name="second", backoff=NO_BACKOFF, poll_s=0.05,
                        on_escalation=second_escalations)
    assert second.healthy()
    registry.tell("worker", Crash())
    wait_generation(second, "worker", 1)  # restarted: the first tree's fate is not this one's
    assert second_escalations.reasons == []
    assert second.fate.reason == ""


HUNG_PROCESS = """
import sys, threading
from supervision import NO_BACKOFF, ChildSpec, SupervisedActor, SupervisionError, Tree, registry

class Hang:
    pass

class Exit:
    pass

hanging = threading.Event()

def hang(_m):
    hanging.set()
    threading.Event().wait()

class Worker(SupervisedActor):
    def handlers(self):
        return {Hang: hang, Exit: self._exit}

    def _exit(self, _m):
        raise SystemExit("the operator's code called sys.exit")

escalated = threading.Event()
reasons = []
tree = Tree([ChildSpec(name="hung", actor_class=Worker, shutdown_timeout_s=0.5),
             ChildSpec(name="boom", actor_class=Worker)],
            backoff=NO_BACKOFF, on_escalation=lambda r: (reasons.append(r), escalated.set()))
tree.start(timeout_s=10)
registry.tell("hung", Hang())
if not hanging.wait(5):
    sys.exit(8)
registry.tell("boom", Exit())
if not escalated.wait(5):
    sys.exit(9)
print("escalated:", reasons[0], flush=True)
try:
    tree.stop(timeout_s=2)
except SupervisionError as exc:
    print("stop:", exc, flush=True)
sys.exit(3)
"""


def test_a_process_with_a_hung_actor_exits_with_its_code(tmp_path: Path) -> None:
    """The hung thread is a daemon thread: nothing waits for it at interpreter exit."""
    root = Path(__file__).resolve().parents[2]
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", HUNG_PROCESS], cwd=root, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 3, done.stdout + done.stderr
    assert time.monotonic() - began < 20.0
    assert "escalated: fatal: SystemExit" in done.stdout and "in boom" in done.stdout


def test_actor_threads_are_daemon_threads(start_tree: StartTree) -> None:
    earlier = frozenset(actor_threads())
    start_tree([probe("worker", Journal())], backoff=NO_BACKOFF, poll_s=0.05)
    threads = actor_threads(earlier)
    assert threads and all(t.daemon for t in threads)
    assert pykka.ActorRegistry.get_all()
