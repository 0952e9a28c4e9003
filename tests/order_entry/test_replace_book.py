"""Cancel/replace in the per-session book (core.order_entry): cancel-then-new, decided
with a fake clock and no venue."""

from __future__ import annotations

from decimal import Decimal

from core.order_entry import CancelReject, EntryOrder, ExecReport, SessionBook, SessionLimits
from messages import OrderAccepted, OrderCancelled, OrderRejected, RejectReason, SubmitOrder
from tests.order_entry.test_session_book import fill, order

LIMITS = SessionLimits(max_order_quantity=Decimal(100), max_order_notional=Decimal(10_000),
                       max_position=Decimal(150), max_orders_per_s=50)


def resting(book: SessionBook, quantity: int = 10, cl_ord_id: str = "c1") -> EntryOrder:
    o = order(quantity, price="50")
    entry = book.add(o, cl_ord_id)
    book.handle(OrderAccepted(client_order_id=o.client_order_id, venue="paper", symbol="AAPL"))
    return entry


def replacement(entry: EntryOrder, quantity: int, price: str = "50") -> SubmitOrder:
    """The replacement as the gateway builds it: a fresh tradeguard id, the new quantity in full."""
    return order(quantity, side=entry.order.side, price=price, symbol=entry.order.symbol)


def cancelled(entry: EntryOrder) -> OrderCancelled:
    return OrderCancelled(client_order_id=entry.order.client_order_id, venue="paper", symbol="AAPL")


def test_a_replace_cancels_then_sends_the_rest_and_reports_replaced_on_acceptance() -> None:
    book = SessionBook(LIMITS)
    entry = resting(book, 10)
    book.handle(fill(entry.order, 4, "50", leaves=6))
    new = replacement(entry, 12, price="49")
    pending = book.request_replace("c1", "c2", new, None, 1.0)
    assert isinstance(pending, ExecReport)
    assert (pending.exec_type, pending.ord_status, pending.cl_ord_id, pending.orig_cl_ord_id) == (
        "E", "E", "c2", "c1")
    assert entry.working  # nothing happens until the venue confirms the cancel
    [sent] = book.handle(cancelled(entry))
    assert isinstance(sent, SubmitOrder)
    assert sent.client_order_id == new.client_order_id and sent.quantity == 8  # 12 less the 4 filled
    assert sent.limit_price == Decimal("49")
    [replaced] = book.handle(OrderAccepted(client_order_id=sent.client_order_id, venue="paper",
                                           symbol="AAPL"))
    assert isinstance(replaced, ExecReport)
    assert (replaced.exec_type, replaced.ord_status, replaced.cl_ord_id, replaced.orig_cl_ord_id) == (
        "5", "1", "c2", "c1")
    assert (replaced.order_qty, replaced.cum_qty, replaced.leaves_qty) == (12, 4, 8)
    # The order goes on under its new ClOrdID: fills count on top of what the original filled.
    [trade] = book.handle(fill(sent, 8, "49", leaves=0))
    assert isinstance(trade, ExecReport)
    assert (trade.cl_ord_id, trade.ord_status, trade.cum_qty, trade.leaves_qty) == ("c2", "2", 12, 0)
    assert trade.avg_px == (Decimal(4 * 50 + 8 * 49) / 12)
    assert book.positions[("paper", "AAPL")] == 12
    assert book.working() == []


def test_the_original_filling_first_rejects_the_replace() -> None:
    book = SessionBook(LIMITS)
    entry = resting(book, 10)
    assert isinstance(book.request_replace("c1", "c2", replacement(entry, 20), None, 1.0), ExecReport)
    outcomes = book.handle(fill(entry.order, 10, "50", leaves=0))
    trade, reject = outcomes
    assert isinstance(trade, ExecReport) and trade.ord_status == "2"
    assert isinstance(reject, CancelReject)
    assert (reject.cl_ord_id, reject.orig_cl_ord_id, reject.response_to) == ("c2", "c1", "2")
    assert (reject.reason, reject.ord_status) == ("0", "2")  # too late: filled
    # The venue then refuses the cancel of a filled order: nothing more for the session.
    assert book.handle(OrderRejected(client_order_id=entry.order.client_order_id, venue="paper",
                                     reason=RejectReason.VENUE, text="order not working")) == []
    assert book.working() == []


def test_filled_beyond_the_new_quantity_before_the_cancel_rejects_the_replace() -> None:
    book = SessionBook(LIMITS)
    entry = resting(book, 10)
    assert isinstance(book.request_replace("c1", "c2", replacement(entry, 5), None, 1.0), ExecReport)
    book.handle(fill(entry.order, 6, "50", leaves=4))
    canceled, reject = book.handle(cancelled(entry))
    assert isinstance(canceled, ExecReport) and (canceled.exec_type, canceled.cl_ord_id) == ("4", "c1")
    assert isinstance(reject, CancelReject) and reject.response_to == "2" and reject.ord_status == "4"
    assert book.working() == []


def test_a_replacement_refused_after_the_cancel_ends_the_order() -> None:
    book = SessionBook(LIMITS)
    entry = resting(book, 10)
    book.request_replace("c1", "c2", replacement(entry, 12), None, 1.0)
    [sent] = book.handle(cancelled(entry))
    assert isinstance(sent, SubmitOrder)
    canceled, reject = book.handle(OrderRejected(client_order_id=sent.client_order_id, venue="paper",
                                                 reason=RejectReason.PRICE_BAND, text="outside the band"))
    assert isinstance(canceled, ExecReport) and (canceled.exec_type, canceled.cl_ord_id) == ("4", "c1")
    assert isinstance(reject, CancelReject)
    assert (reject.cl_ord_id, reject.response_to, reject.text) == ("c2", "2", "price_band: outside the band")
    assert book.working() == []


def test_replaces_that_cannot_be_done_are_rejected_and_leave_the_order_alone() -> None:
    book = SessionBook(LIMITS)
    entry = resting(book, 10)

    def rejected(orig: str, cl_ord_id: str, new: SubmitOrder, now: float) -> CancelReject:
        outcome = book.request_replace(orig, cl_ord_id, new, None, now)
        assert isinstance(outcome, CancelReject), outcome
        assert outcome.response_to == "2"
        return outcome

    assert rejected("nope", "c2", replacement(entry, 5), 1.0).reason == "1"  # unknown
    assert rejected("c1", "c1", replacement(entry, 5), 2.0).reason == "6"  # ClOrdID reused
    over = rejected("c1", "c2", replacement(entry, 101), 3.0)  # the session's max quantity
    assert over.reason == "99" and over.text.startswith("max_quantity:")
    # Counted on the replaced quantity: 40 filled + 60 working elsewhere + 60 = 160 > 150,
    # though counting only the change (60 - 10) would have fitted exactly.
    other = order(100, price="50")
    book.add(other, "c9")
    book.handle(OrderAccepted(client_order_id=other.client_order_id, venue="paper", symbol="AAPL"))
    book.handle(fill(other, 40, "50", leaves=60))
    assert rejected("c1", "c2", replacement(entry, 60), 4.0).text.startswith("max_position:")
    side = replacement(entry, 5)
    sell = SubmitOrder(client_order_id="x", venue="paper", symbol="AAPL", side=side.side.opposite,
                       quantity=Decimal(5), order_type=side.order_type, limit_price=side.limit_price)
    assert "side" in rejected("c1", "c2", sell, 5.0).text
    assert entry.working and entry.replace is None and entry.order.quantity == 10
    # One at a time: a second replace (or a cancel) while one is pending.
    assert isinstance(book.request_replace("c1", "c2", replacement(entry, 8), None, 6.0), ExecReport)
    assert rejected("c1", "c3", replacement(entry, 7), 7.0).reason == "3"


def test_a_replace_counts_in_the_session_rate() -> None:
    book = SessionBook(SessionLimits(max_order_quantity=Decimal(100), max_order_notional=Decimal(10_000),
                                     max_position=Decimal(150), max_orders_per_s=2))
    entry = resting(book, 10)
    book.check(order(1, price="50"), None, 0.0)
    book.check(order(1, price="50"), None, 0.1)
    refused = book.request_replace("c1", "c2", replacement(entry, 12), None, 0.2)
    assert isinstance(refused, CancelReject) and refused.text.startswith("rate_limit:")


def test_a_pending_replace_is_abandoned_when_the_order_is_cancelled_for_good() -> None:
    book = SessionBook(LIMITS)
    entry = resting(book, 10)
    book.request_replace("c1", "c2", replacement(entry, 12), None, 1.0)
    reject = book.abandon_replace(entry, "too late: session disconnected")
    assert isinstance(reject, CancelReject) and reject.cl_ord_id == "c2"
    [canceled] = book.handle(cancelled(entry))  # a plain cancel now: no replacement goes out
    assert isinstance(canceled, ExecReport) and canceled.exec_type == "4"
    assert book.working() == []


def test_a_flattens_closing_fills_count_in_the_sessions_position_once() -> None:
    book = SessionBook(LIMITS)
    entry = resting(book, 10)
    book.handle(fill(entry.order, 10, "50", leaves=0))
    assert book.positions[("paper", "AAPL")] == 10
    closing = fill(order(10, side=entry.order.side.opposite), 10, "50", leaves=0)
    assert book.note_closing_fill(closing)
    assert not book.note_closing_fill(closing)  # published again: counted once
    assert book.positions[("paper", "AAPL")] == 0
