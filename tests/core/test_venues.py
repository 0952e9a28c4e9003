"""Per-venue trading states on their own: the table, readiness, recovery and outages.
Time is a number the test passes in."""

from __future__ import annotations

import pytest

from core.venues import TradingState, VenueBook

A, H, R = TradingState.ACTIVE, TradingState.HALTED, TradingState.REDUCING


def trading(*names: str, live_when: str = "any", max_outage_s: float = 300.0) -> VenueBook:
    book = VenueBook(names, max_outage_s=max_outage_s, live_when=live_when)
    for name in names:
        book.on_up(name)
        book.on_reconciliation(name, matched=True)
    return book


@pytest.mark.parametrize(
    ("connected", "reconciled", "mismatch", "findings", "state"),
    [
        (False, False, False, (), H),
        (False, True, False, ("feed_stale zmq",), H),
        (True, False, False, (), H),
        (True, True, True, (), H),
        (True, True, False, ("feed_stale zmq",), R),
        (True, True, False, (), A),
    ],
)
def test_the_state_table(connected: bool, reconciled: bool, mismatch: bool, findings: tuple[str, ...],
                         state: TradingState) -> None:
    book = VenueBook(["zmq"])
    venue = book.venues["zmq"]
    venue.connected, venue.reconciled = connected, reconciled
    venue.mismatch, venue.findings = mismatch, findings
    assert venue.derive()[0] is state


def test_a_venue_is_active_once_connected_and_reconciled_in_either_order() -> None:
    book = VenueBook(["zmq", "fix"])
    assert book.states() == {"zmq": H, "fix": H} and not book.ready()
    up = book.on_up("zmq")
    assert up is None and book.state("zmq") is H                       # not reconciled yet
    change = book.on_reconciliation("zmq", matched=True)
    assert change is not None and (change.previous, change.current) == (H, A)
    assert book.ready()                                                 # one venue is enough
    book.on_reconciliation("fix", matched=True)                         # overtook its ConnectorUp
    assert book.state("fix") is H
    book.on_up("fix")
    assert book.state("fix") is A


def test_a_down_venue_must_reconcile_again_and_others_keep_trading() -> None:
    book = trading("zmq", "fix", "ib")
    change = book.on_down("fix", now=10.0)
    assert change is not None and change.current is H and change.reason == "connector down"
    assert book.states() == {"zmq": A, "fix": H, "ib": A}
    assert book.ready() and book.blocking_recovery() == []              # a down venue does not block
    book.on_up("fix")
    assert book.state("fix") is H and book.blocking_recovery() == ["fix"]
    book.on_reconciliation("fix", matched=True)
    assert book.state("fix") is A and book.blocking_recovery() == []


def test_a_mismatch_halts_the_venue_and_blocks_recovery_until_it_matches() -> None:
    book = trading("zmq", "fix")
    book.on_reconciliation("zmq", matched=False)
    assert book.state("zmq") is H and book.venues["zmq"].reason == "reconciliation mismatch"
    assert book.blocking_recovery() == ["zmq"]
    book.on_down("zmq", 1.0)
    assert book.blocking_recovery() == ["zmq"]                          # still unreconciled
    book.on_up("zmq")
    book.on_reconciliation("zmq", matched=True)
    assert book.blocking_recovery() == [] and book.state("zmq") is A


def test_findings_make_a_venue_reducing() -> None:
    book = trading("zmq")
    change = book.set_findings("zmq", ["feed_stale zmq"])
    assert change is not None and change.current is R and change.reason == "feed_stale zmq"
    assert book.ready()                                                 # REDUCING still trades
    assert book.set_findings("zmq", []) is not None and book.state("zmq") is A


@pytest.mark.parametrize(("live_when", "ready_with_one_down"), [("any", True), ("all", False)])
def test_live_when(live_when: str, ready_with_one_down: bool) -> None:
    book = trading("zmq", "fix", live_when=live_when)
    assert book.ready()
    book.on_down("fix", 0.0)
    assert book.ready() is ready_with_one_down
    book.on_down("zmq", 0.0)
    assert not book.ready()


@pytest.mark.parametrize(("at", "overdue"), [(130.0, False), (130.01, True)])
def test_an_outage_longer_than_max_outage_s_is_reported_once(at: float, overdue: bool) -> None:
    book = trading("zmq", "fix", max_outage_s=30.0)
    book.on_down("fix", now=100.0)
    book.on_down("fix", now=110.0)                                      # a failed restart: same outage
    assert book.outage_s("fix", 120.0) == 20.0
    found = book.overdue(at)
    assert [name for name, _ in found] == (["fix"] if overdue else [])
    assert book.overdue(at + 100) == ([] if overdue else [("fix", at + 100 - 100.0)])
    book.on_up("fix")
    assert book.outage_s("fix", 500.0) is None
    book.on_down("fix", now=600.0)                                      # a new outage
    assert book.overdue(630.5) == [("fix", 30.5)]


def test_a_venue_never_up_is_halted_but_not_in_an_outage() -> None:
    book = trading("zmq", max_outage_s=30.0)
    book.venues["fix"] = type(book.venues["zmq"])("fix")
    book.on_down("fix", 0.0)                                            # its connector failed to start
    assert book.state("fix") is H and book.venues["fix"].reason == "not connected yet"
    assert book.outage_s("fix", 1000.0) is None and book.overdue(1000.0) == []


def test_max_outage_s_zero_never_escalates_and_bad_settings_are_refused() -> None:
    book = trading("zmq", max_outage_s=0.0)
    book.on_down("zmq", 0.0)
    assert book.overdue(1e9) == []
    with pytest.raises(ValueError, match="live_when"):
        VenueBook(["zmq"], live_when="most")
    with pytest.raises(ValueError, match="max_outage_s"):
        VenueBook(["zmq"], max_outage_s=-1.0)


def test_unknown_venues_change_nothing() -> None:
    book = trading("zmq")
    assert book.on_up("nope") is None and book.on_down("nope", 0.0) is None
    assert book.on_reconciliation("nope", matched=False) is None and book.set_findings("nope", ["x"]) is None
    assert book.state("nope") is H and book.states() == {"zmq": A}
