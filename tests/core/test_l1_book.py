"""The level-1 book: assembled from separate updates, publishes only consistent quotes,
holds a book crossed by one side until the other side moves or the crossing settles."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.l1_book import L1Book, L1Books

D = Decimal
MS = 1_000_000


def book(settle_ms: int = 200) -> L1Book:
    return L1Book("ib", "AAPL", settle_ns=settle_ms * MS)


def test_no_quote_until_both_sides_arrive() -> None:
    b = book()
    b.set_bid(D("100.00"), D(5), 1)
    assert b.take(1) is None
    b.set_ask(D("100.02"), D(7), 2)
    quote = b.take(2)
    assert quote is not None
    assert (quote.bid, quote.ask, quote.bid_size, quote.ask_size) == (D("100.00"), D("100.02"), D(5), D(7))
    assert quote.venue == "ib" and quote.symbol == "AAPL" and quote.ts_ns == 2


def test_a_change_is_published_once() -> None:
    b = book()
    b.set_bid(D(100), D(1), 1)
    b.set_ask(D(101), D(1), 1)
    assert b.take(1) is not None
    assert b.take(2) is None
    b.set_ask_size(D(9), 3)
    quote = b.take(3)
    assert quote is not None and quote.ask_size == D(9) and quote.ask == D(101)


def test_size_updates_keep_the_price_and_price_updates_keep_the_size() -> None:
    b = book()
    b.set_bid(D(100), D(4), 1)
    b.set_ask(D(101), D(6), 1)
    b.set_bid(D("100.5"), None, 2)
    b.set_bid_size(D(8), 3)
    quote = b.take(3)
    assert quote is not None and (quote.bid, quote.bid_size, quote.ask, quote.ask_size) == (
        D("100.5"), D(8), D(101), D(6))


def test_a_bid_through_the_stale_ask_is_held_until_the_ask_arrives() -> None:
    """The market moves up: the new bid arrives before the new ask."""
    b = book(settle_ms=200)
    b.set_bid(D(100), D(1), 0)
    b.set_ask(D(101), D(1), 0)
    assert b.take(0) is not None
    b.set_bid(D("101.5"), D(2), 10 * MS)  # crosses the old ask
    assert b.crossed
    assert b.take(20 * MS) is None  # half an update: not published
    assert b.due_ns() == 210 * MS
    b.set_ask(D("101.6"), D(3), 30 * MS)
    quote = b.take(30 * MS)
    assert quote is not None and quote.bid < quote.ask
    assert (quote.bid, quote.ask) == (D("101.5"), D("101.6"))
    assert b.due_ns() is None


def test_a_crossing_that_persists_is_published_after_the_settle_time() -> None:
    b = book(settle_ms=200)
    b.set_bid(D(100), D(1), 0)
    b.set_ask(D(101), D(1), 0)
    b.take(0)
    b.set_bid(D(102), D(1), 10 * MS)
    assert b.take(209 * MS) is None
    quote = b.take(210 * MS)
    assert quote is not None and quote.bid > quote.ask  # the safety checks judge it
    b.set_bid(D("102.5"), D(1), 220 * MS)  # still crossed: published at once, no new hold
    later = b.take(220 * MS)
    assert later is not None and later.bid == D("102.5")


def test_a_crossing_confirmed_by_both_sides_is_published_at_once() -> None:
    b = book(settle_ms=200)
    b.set_bid(D(100), D(1), 0)
    b.set_ask(D(101), D(1), 0)
    b.take(0)
    b.set_bid(D(103), D(1), 10 * MS)
    b.set_ask(D(102), D(1), 11 * MS)  # the ask moved too and the book is still crossed
    quote = b.take(11 * MS)
    assert quote is not None and quote.bid == D(103) and quote.ask == D(102)


def test_a_locked_book_is_not_crossed() -> None:
    b = book()
    b.set_bid(D(100), D(1), 0)
    b.set_ask(D(100), D(1), 0)
    assert not b.crossed
    assert b.take(0) is not None


def test_a_new_crossing_after_it_cleared_is_held_again() -> None:
    b = book(settle_ms=200)
    b.set_bid(D(100), D(1), 0)
    b.set_ask(D(101), D(1), 0)
    b.take(0)
    b.set_bid(D(102), D(1), 1 * MS)
    assert b.take(300 * MS) is not None  # published crossed after settling
    b.set_ask(D(103), D(1), 301 * MS)  # uncrossed
    assert b.take(301 * MS) is not None
    b.set_ask(D("101.5"), D(1), 302 * MS)  # crossed again by the ask alone
    assert b.take(303 * MS) is None


def test_zero_settle_publishes_every_change() -> None:
    b = book(settle_ms=0)
    b.set_bid(D(100), D(1), 0)
    b.set_ask(D(99), D(1), 0)
    assert b.take(0) is not None


def test_a_cleared_side_means_no_quote() -> None:
    b = book()
    b.set_bid(D(100), D(1), 0)
    b.set_ask(D(101), D(1), 0)
    b.take(0)
    b.clear_ask(1)
    assert b.take(1) is None and b.quote() is None
    b.set_ask(D("101.1"), D(2), 2)
    quote = b.take(2)
    assert quote is not None and quote.ask == D("101.1")


@pytest.mark.parametrize("bad", [D("NaN"), D("Infinity"), D("-Infinity"), D("1e300"), D("1e-60")])
def test_bad_prices_are_refused_and_change_nothing(bad: Decimal) -> None:
    b = book()
    b.set_bid(D(100), D(1), 0)
    b.set_ask(D(101), D(1), 0)
    b.take(0)
    with pytest.raises(ValueError, match="bid"):
        b.set_bid(bad, D(1), 1)
    with pytest.raises(ValueError, match="ask"):
        b.set_ask(bad, None, 1)
    assert (b.bid, b.ask) == (D(100), D(101))
    assert b.take(1) is None


@pytest.mark.parametrize("bad", [D(-1), D("NaN"), D("Infinity"), D("1e300")])
def test_bad_sizes_are_refused_and_change_nothing(bad: Decimal) -> None:
    b = book()
    b.set_bid(D(100), D(3), 0)
    b.set_ask(D(101), D(4), 0)
    b.take(0)
    with pytest.raises(ValueError, match="size"):
        b.set_bid(D(99), bad, 1)
    with pytest.raises(ValueError, match="size"):
        b.set_ask_size(bad, 1)
    assert (b.bid, b.bid_size, b.ask_size) == (D(100), D(3), D(4))
    assert b.take(1) is None


def test_trades_are_validated_and_leave_the_book_alone() -> None:
    b = book()
    trade = b.trade(D("100.5"), D(200), 5)
    assert (trade.venue, trade.symbol, trade.price, trade.size, trade.ts_ns) == (
        "ib", "AAPL", D("100.5"), D(200), 5)
    with pytest.raises(ValueError):
        b.trade(D("NaN"), D(1), 6)
    with pytest.raises(ValueError):
        b.trade(D(100), D(-1), 6)
    assert b.take(6) is None


def test_negative_settle_is_refused() -> None:
    with pytest.raises(ValueError, match="settle_ns"):
        L1Book("ib", "AAPL", settle_ns=-1)


def test_books_of_a_venue() -> None:
    books = L1Books("ib", settle_ns=100 * MS)
    for symbol, bid, ask in (("AAPL", "100", "101"), ("MSFT", "400", "401")):
        books.book(symbol).set_bid(D(bid), D(1), 0)
        books.book(symbol).set_ask(D(ask), D(1), 0)
    assert sorted(q.symbol for q in books.take(0)) == ["AAPL", "MSFT"]
    books.book("AAPL").set_bid(D(102), D(1), 5 * MS)  # crossing: held
    books.book("MSFT").set_bid(D("400.5"), D(1), 5 * MS)
    assert [q.symbol for q in books.take(6 * MS)] == ["MSFT"]
    assert books.next_due_ns() == 105 * MS
    assert [q.symbol for q in books.take(105 * MS)] == ["AAPL"]
    assert books.next_due_ns() is None
    assert len(books) == 2
