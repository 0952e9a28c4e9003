"""Trade busts and corrections (core.amendments): the executions in effect and the positions
they make, and a venue made unreconciled by one until its positions agree (core.reconcile)."""

from __future__ import annotations

from decimal import Decimal

from core.amendments import AmendedFills, describe, rebuild_position
from core.reconcile import Comparison, ReconcileState, compare
from messages import OrderFilled, Side, VenuePosition
from messages.orders import FillBusted, FillCorrected

D = Decimal


def fill(fill_id: str, side: Side, quantity: str, price: str, *, symbol: str = "ES",
         venue: str = "fix") -> OrderFilled:
    return OrderFilled(client_order_id=f"o-{fill_id}", venue=venue, fill_id=fill_id, symbol=symbol,
                       side=side, quantity=D(quantity), price=D(price), leaves_quantity=D(0))


def bust(fill_id: str, bust_id: str, *, venue: str = "fix", symbol: str = "ES") -> FillBusted:
    return FillBusted(client_order_id=f"o-{fill_id}", venue=venue, fill_id=fill_id, bust_id=bust_id,
                      symbol=symbol, side=Side.BUY, quantity=D(1), price=D(1), cumulative_quantity=D(0))


def correct(fill_id: str, correction_id: str, quantity: str, price: str, *,
            venue: str = "fix") -> FillCorrected:
    return FillCorrected(client_order_id=f"o-{fill_id}", venue=venue, fill_id=fill_id,
                         correction_id=correction_id, symbol="ES", side=Side.BUY, quantity=D(quantity),
                         price=D(price), cumulative_quantity=D(quantity))


def test_a_bust_takes_back_the_quantity_and_the_pnl_it_realized() -> None:
    fills = [fill("f1", Side.BUY, "10", "100"), fill("f2", Side.SELL, "4", "110"),
             fill("f3", Side.SELL, "2", "90")]
    before = rebuild_position("fix", "ES", fills)
    assert (before.quantity, before.average_price, before.realized_pnl) == (D(4), D(100), D(20))  # +40 -20
    book = AmendedFills(fills)
    applied = book.amend(bust("f2", "X1"))
    assert applied.before == fills[1] and applied.after is None
    assert (applied.quantity_delta, applied.notional_delta) == (D(-4), D(-440))
    after = rebuild_position("fix", "ES", book.fills())
    # As if f2 never traded: long 10, then 2 sold at 90 realize -20.
    assert (after.quantity, after.average_price, after.realized_pnl) == (D(8), D(100), D(-20))
    assert [f.fill_id for f in book.fills()] == ["f1", "f3"]
    assert "busted" in describe(bust("f2", "X1"), applied)


def test_a_correction_replaces_quantity_and_price_and_is_known_by_both_ids() -> None:
    book = AmendedFills([fill("f1", Side.BUY, "10", "100"), fill("f2", Side.BUY, "10", "110")])
    applied = book.amend(correct("f1", "C1", "8", "101"))
    assert applied.after is not None and (applied.after.quantity, applied.after.price) == (D(8), D(101))
    assert applied.quantity_delta == D(-2)
    position = rebuild_position("fix", "ES", book.fills())
    assert (position.quantity, position.average_price) == (D(18), (D(8) * 101 + D(10) * 110) / 18)
    # A later bust may name the correction's id (or the original one): it takes the execution back.
    again = book.amend(bust("C1", "X2"))
    assert again.before is not None and again.before.quantity == D(8)
    assert [f.fill_id for f in book.fills()] == ["f2"]
    assert book.effective_quantity("fix", "f1") == D(0)


def test_an_amendment_of_nothing_in_effect_changes_nothing() -> None:
    book = AmendedFills([fill("f1", Side.BUY, "10", "100")])
    assert book.amend(bust("f1", "X1")).applied
    twice = book.amend(bust("f1", "X9"))                      # busted already
    assert not twice.applied and twice.quantity_delta == 0
    other_venue = book.amend(bust("f1", "X1", venue="zmq"))   # ids are per venue
    assert not other_venue.applied
    assert book.fills() == []


def test_an_amendment_before_its_execution_applies_when_the_execution_comes() -> None:
    book = AmendedFills()
    assert not book.amend(correct("f1", "C1", "5", "99")).applied
    book.add(fill("f1", Side.BUY, "10", "100"))
    [only] = book.fills()
    assert (only.fill_id, only.quantity, only.price) == ("C1", D(5), D(99))
    # in_effect pairs each execution with the report it came from
    [(reported, current)] = book.in_effect()
    assert (reported.fill_id, current.fill_id) == ("f1", "C1")


def test_positions_of_other_symbols_and_venues_are_left_alone() -> None:
    fills = [fill("f1", Side.BUY, "10", "100"), fill("g1", Side.SELL, "3", "50", symbol="NQ"),
             fill("h1", Side.BUY, "1", "100", venue="zmq")]
    book = AmendedFills(fills)
    book.amend(bust("f1", "X1"))
    assert rebuild_position("fix", "NQ", book.fills()).quantity == D(-3)
    assert rebuild_position("zmq", "ES", book.fills()).quantity == D(1)
    assert rebuild_position("fix", "ES", book.fills()).quantity == D(0)


# ---- the venue's standing after an amendment ------------------------------------------------


def agree() -> Comparison:
    return compare("fix", {"ES": D(8)}, [VenuePosition(venue="fix", symbol="ES", quantity=D(8))])


def disagree() -> Comparison:
    return compare("fix", {"ES": D(8)}, [VenuePosition(venue="fix", symbol="ES", quantity=D(10))])


def test_an_amendment_unreconciles_a_reconciled_venue_until_its_positions_agree() -> None:
    state = ReconcileState(confirmations=3)
    first = state.record(agree(), now_ns=100)
    assert first.reconciled is True
    standing = state.mark_unreconciled("fix", "trade f2 busted", now_ns=200)
    assert (standing.reconciled, standing.since_ns) == (False, 200)
    assert standing.differences == ("trade f2 busted",)
    standing = state.mark_unreconciled("fix", "external fill E1", now_ns=300)
    assert standing.since_ns == 200 and standing.differences == ("trade f2 busted", "external fill E1")
    # a report that disagrees may be one on its way: pending, not yet a mismatch
    standing = state.record(disagree(), now_ns=400)
    assert standing.pending and standing.reconciled is False and not standing.new_mismatch
    # the venue agrees: reconciled from then on
    standing = state.record(agree(), now_ns=500)
    assert (standing.reconciled, standing.since_ns, standing.differences) == (True, 500, ())
    assert not standing.amended


def test_after_an_amendment_confirmed_disagreement_is_a_new_mismatch() -> None:
    state = ReconcileState(confirmations=2)
    state.mark_unreconciled("fix", "trade f2 busted", now_ns=10)
    assert state.record(disagree(), now_ns=20).pending
    standing = state.record(disagree(), now_ns=30)
    assert not standing.pending and standing.new_mismatch and standing.since_ns == 10
    assert standing.differences == ("ES: journal 8, venue 10",)
    # an ordinary mismatch from then on: the same differences again are no new incident
    assert not state.record(disagree(), now_ns=40).new_mismatch


# ---- the governor's exposure ----------------------------------------------------------------


def test_the_exposure_follows_busts_and_corrections_once() -> None:
    from core.exposure import Exposure

    exposure = Exposure()
    f1, f2 = fill("f1", Side.BUY, "10", "100"), fill("f2", Side.SELL, "4", "100")
    assert exposure.on_fill(f1) and exposure.on_fill(f2)
    assert exposure.positions[("fix", "ES")] == D(6)
    assert exposure.on_amendment(bust("f2", "X1"))
    assert exposure.positions[("fix", "ES")] == D(10)
    assert not exposure.on_amendment(bust("f2", "X1"))            # busted already
    assert exposure.on_amendment(correct("f1", "C1", "7", "100"))
    assert exposure.positions[("fix", "ES")] == D(7)
    assert exposure.on_amendment(bust("C1", "X2"))                # by the correction's id
    assert exposure.positions[("fix", "ES")] == D(0)
    assert not exposure.on_amendment(bust("f1", "X3"))            # the same execution
    assert not exposure.on_amendment(bust("nope", "X4"))
    assert exposure.positions[("fix", "ES")] == D(0)
