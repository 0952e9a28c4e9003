"""Incidents on their own: one per condition until it clears. Time is a number the test
passes in."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.incidents import (
    CROSSED_MARKET,
    FEED_STALE,
    RECONCILIATION_MISMATCH,
    VENUE_DOWN,
    IncidentBook,
    IncidentKey,
)
from messages import Quote, QuoteBatch


def test_repeated_signals_of_one_condition_are_one_incident() -> None:
    book = IncidentBook(quiet_s=30.0)
    key = IncidentKey(VENUE_DOWN, "fix")
    opened = [book.signal(key, float(t), f"restart {t} failed") for t in range(0, 60, 2)]
    assert opened[0] is not None and all(o is None for o in opened[1:])
    (incident,) = book.open()
    assert (incident.opened, incident.last_seen, incident.signals) == (0.0, 58.0, 30)
    assert incident.reason == "restart 0 failed"
    assert book.opened_total == 1 and book.signals_total == 30
    assert book.expire(10_000.0) == []              # an outage only ends with its signal
    assert [i.key for i in book.clear(VENUE_DOWN, "fix")] == [key]
    assert book.signal(key, 70.0, "down again") is not None   # a new outage is a new incident
    assert book.opened_total == 2


def test_keys_are_kind_venue_and_symbol() -> None:
    book = IncidentBook(quiet_s=30.0)
    assert book.signal(IncidentKey(CROSSED_MARKET, "ib", "AAPL"), 0.0, "") is not None
    assert book.signal(IncidentKey(CROSSED_MARKET, "ib", "MSFT"), 0.0, "") is not None
    assert book.signal(IncidentKey(CROSSED_MARKET, "zmq", "AAPL"), 0.0, "") is not None
    assert book.signal(IncidentKey(FEED_STALE, "ib"), 0.0, "") is not None
    assert len(book) == 4
    # an uncrossed AAPL at ib ends that one only
    assert [i.key.symbol for i in book.clear(CROSSED_MARKET, "ib", ["AAPL", "EURUSD"])] == ["AAPL"]
    assert book.has(CROSSED_MARKET, "ib") and book.has(CROSSED_MARKET, "zmq")
    assert [i.describe() for i in book.at("ib")] == ["crossed_market ib/MSFT", "feed_stale ib"]


@pytest.mark.parametrize(("at", "closes"), [(39.99, False), (40.0, True)])
def test_an_incident_without_a_recovery_signal_closes_after_the_quiet_time(at: float, closes: bool) -> None:
    book = IncidentBook(quiet_s=30.0)
    spike = IncidentKey("price_spike", "zmq", "AAPL")
    book.signal(spike, 0.0, "mid jumped")
    book.signal(spike, 10.0, "mid jumped again")        # the quiet time counts from the last
    book.signal(IncidentKey(RECONCILIATION_MISMATCH, "zmq"), 0.0, "journal 0, venue 5")
    closed = book.expire(at)
    assert [i.key for i in closed] == ([spike] if closes else [])
    assert IncidentKey(RECONCILIATION_MISMATCH, "zmq") in book   # cleared by a reconciliation only


def test_a_negative_quiet_time_is_refused() -> None:
    with pytest.raises(ValueError, match="quiet_s"):
        IncidentBook(quiet_s=-1.0)


def test_a_stale_feed_during_an_outage_is_the_outage() -> None:
    book = IncidentBook(quiet_s=30.0)
    assert book.key_for(FEED_STALE, "fix") == IncidentKey(FEED_STALE, "fix")
    book.signal(IncidentKey(VENUE_DOWN, "fix"), 0.0, "session lost")
    assert book.key_for(FEED_STALE, "fix") == IncidentKey(VENUE_DOWN, "fix")
    assert book.key_for(FEED_STALE, "zmq") == IncidentKey(FEED_STALE, "zmq")
    assert book.key_for(CROSSED_MARKET, "fix", "AAPL") == IncidentKey(CROSSED_MARKET, "fix", "AAPL")


def test_market_data_clears_stale_feeds_and_uncrossed_symbols() -> None:
    book = IncidentBook(quiet_s=30.0)
    for key in (IncidentKey(FEED_STALE, "ib"), IncidentKey(CROSSED_MARKET, "ib", "AAPL"),
                IncidentKey(CROSSED_MARKET, "ib", "MSFT"), IncidentKey("price_spike", "ib", "AAPL"),
                IncidentKey(RECONCILIATION_MISMATCH, "ib")):
        book.signal(key, 0.0, "")
    assert book.watches_quotes("ib") and not book.watches_quotes("zmq")
    assert book.findings("ib") == ["feed_stale ib", "crossed_market ib/AAPL", "crossed_market ib/MSFT",
                                   "price_spike ib/AAPL"]            # the mismatch halts, not a finding
    d = Decimal
    batch = QuoteBatch(venue="ib", quotes=(
        Quote(venue="ib", symbol="AAPL", bid=d("100"), ask=d("100.01"), bid_size=d(1), ask_size=d(1)),
        Quote(venue="ib", symbol="MSFT", bid=d("101"), ask=d("100"), bid_size=d(1), ask_size=d(1)),
    ))
    closed = book.on_quotes(batch)
    assert sorted(i.describe() for i in closed) == ["crossed_market ib/AAPL", "feed_stale ib"]
    assert book.watches_quotes("ib")                                  # MSFT is still crossed
    assert book.on_quotes(QuoteBatch(venue="zmq")) == []
