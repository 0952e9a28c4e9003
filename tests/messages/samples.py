"""One valid, fully populated instance of every message class, built by hand."""

from __future__ import annotations

from decimal import Decimal

from messages import (
    Bar,
    Book,
    BookLevel,
    CancelAll,
    CancelAllDone,
    CancelOrder,
    ConnectorDown,
    ConnectorUp,
    Escalation,
    FailsafeReport,
    FlattenRequested,
    HealthReport,
    Message,
    Mode,
    ModeChanged,
    OperatorCommand,
    OperatorVerb,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    PortfolioSnapshot,
    PositionState,
    Quote,
    QuoteBatch,
    Reconciliation,
    RejectReason,
    RequestPositions,
    SafetyEvent,
    Severity,
    Side,
    SubmitOrder,
    TimeInForce,
    Trade,
    VenuePosition,
    VenuePositions,
)
from messages.orders import FillBusted, FillCorrected

TS = 1_700_000_000_123_456_789
"""A realistic wall-clock timestamp in nanoseconds (beyond 2**53: floats would round it)."""

QUOTE = Quote(
    venue="paper", symbol="ESZ5", bid=Decimal("4999.75"), ask=Decimal("5000.25"),
    bid_size=Decimal("12"), ask_size=Decimal("0.00000001"), seq=42, ts_ns=TS,
)
TRADE = Trade(venue="paper", symbol="ESZ5", price=Decimal("5000.00"), size=Decimal("3"), seq=43, ts_ns=TS)
LEVEL = BookLevel(price=Decimal("4999.50"), size=Decimal("7"))
POSITION_STATE = PositionState(
    venue="paper", symbol="ESZ5", quantity=Decimal("-2"), average_price=Decimal("5001.25"),
    realized_pnl=Decimal("-12.5"), mark_price=Decimal("5000.00"), unrealized_pnl=Decimal("2.50"),
)
VENUE_POSITION = VenuePosition(
    venue="paper", symbol="ESZ5", quantity=Decimal("-2"), average_price=Decimal("5001.25")
)

SAMPLES: dict[type[Message], Message] = {
    Quote: QUOTE,
    Trade: TRADE,
    BookLevel: LEVEL,
    Book: Book(
        venue="paper", symbol="ESZ5", bids=(LEVEL, BookLevel(price=Decimal("4999.25"), size=Decimal("1"))),
        asks=(BookLevel(price=Decimal("5000.50"), size=Decimal("4")),), ts_ns=TS,
    ),
    Bar: Bar(
        venue="paper", symbol="ESZ5", start_ns=TS, interval_s=60, open=Decimal("4990"),
        high=Decimal("5010.5"), low=Decimal("4985.25"), close=Decimal("5000"), volume=Decimal("1234"),
    ),
    QuoteBatch: QuoteBatch(venue="paper", quotes=(QUOTE, QUOTE), trades=(TRADE,), recv_ns=TS + 1),
    SubmitOrder: SubmitOrder(
        client_order_id="s1-000001", venue="paper", symbol="ESZ5", side=Side.SELL,
        quantity=Decimal("2.5"), order_type=OrderType.STOP_LIMIT, limit_price=Decimal("4998.75"),
        stop_price=Decimal("4999.00"), time_in_force=TimeInForce.GTC, reduce_only=True,
        source="sample", created_ns=TS,
    ),
    CancelOrder: CancelOrder(client_order_id="s1-000001", venue="paper", source="operator"),
    CancelAll: CancelAll(venue="paper", source="failsafe", request_id="ca-1"),
    CancelAllDone: CancelAllDone(venue="paper", request_id="ca-1", ts_ns=TS),
    RequestPositions: RequestPositions(venue="paper", request_id="rp-1"),
    OrderAccepted: OrderAccepted(
        client_order_id="s1-000001", venue="paper", symbol="ESZ5", venue_order_id="V-9", ts_ns=TS
    ),
    OrderRejected: OrderRejected(
        client_order_id="s1-000002", venue="paper", reason=RejectReason.VENUE,
        text="201: order rejected - insufficient margin", symbol="ESZ5", source="sample", ts_ns=TS,
    ),
    OrderFilled: OrderFilled(
        client_order_id="s1-000001", venue="paper", fill_id="F-1", symbol="ESZ5", side=Side.SELL,
        quantity=Decimal("1.5"), price=Decimal("4998.75"), leaves_quantity=Decimal("1.0"),
        venue_order_id="V-9", ts_ns=TS,
    ),
    OrderCancelled: OrderCancelled(
        client_order_id="s1-000001", venue="paper", symbol="ESZ5", text="mass cancel", ts_ns=TS
    ),
    FillBusted: FillBusted(
        client_order_id="s1-000001", venue="paper", fill_id="F-1", bust_id="X-1", symbol="ESZ5",
        side=Side.SELL, quantity=Decimal("1.5"), price=Decimal("4998.75"),
        cumulative_quantity=Decimal("0"), average_price=Decimal("0"), venue_order_id="V-9",
        text="trade busted", ts_ns=TS,
    ),
    FillCorrected: FillCorrected(
        client_order_id="s1-000001", venue="paper", fill_id="F-1", correction_id="F-2",
        symbol="ESZ5", side=Side.SELL, quantity=Decimal("1.0"), price=Decimal("4998.5"),
        cumulative_quantity=Decimal("1.0"), average_price=Decimal("4998.5"), venue_order_id="V-9",
        text="trade corrected", ts_ns=TS,
    ),
    VenuePosition: VENUE_POSITION,
    VenuePositions: VenuePositions(venue="paper", positions=(VENUE_POSITION,), request_id="rp-1", ts_ns=TS),
    HealthReport: HealthReport(
        name="paper", connected=True, latency_ms=1.25, messages_in=10, messages_out=4, drops=1,
        errors=2, malformed=3, gaps=1, fills=2, last_message_ns=TS, ts_ns=TS + 5,
    ),
    ConnectorUp: ConnectorUp(name="paper", generation=3, ts_ns=TS),
    ConnectorDown: ConnectorDown(name="paper", reason="session lost", ts_ns=TS),
    SafetyEvent: SafetyEvent(
        kind="crossed_market", severity=Severity.WARNING, detail="bid above ask", venue="paper",
        symbol="ESZ5", value=Decimal("-0.25"), ts_ns=TS,
    ),
    ModeChanged: ModeChanged(previous=Mode.LIVE, current=Mode.DEGRADED, reason="connector down", ts_ns=TS),
    Escalation: Escalation(source="connectors", reason="4 restarts within 5s", ts_ns=TS),
    OperatorCommand: OperatorCommand(verb=OperatorVerb.FLATTEN, operator="alice", reason="drill", ts_ns=TS),
    FlattenRequested: FlattenRequested(reason="daily loss limit", source="risk_governor", ts_ns=TS),
    FailsafeReport: FailsafeReport(
        flat=True, attempts=2, incident_path="/var/lib/tradeguard/incident.json", detail="flat", ts_ns=TS
    ),
    PositionState: POSITION_STATE,
    PortfolioSnapshot: PortfolioSnapshot(
        positions=(POSITION_STATE,), realized_pnl=Decimal("-12.5"), unrealized_pnl=Decimal("2.50"),
        daily_realized_pnl=Decimal("-12.5"), daily_pnl=Decimal("-10.00"),
        daily_traded_notional=Decimal("25007.50"), fills=3, ts_ns=TS,
    ),
    Reconciliation: Reconciliation(
        venue="paper", reconciled=False, venue_positions=(POSITION_STATE,), keeper_positions=(),
        mismatches=("ESZ5: venue -2, journal 0",), ts_ns=TS,
    ),
}
"""Every message class to one sample instance."""
