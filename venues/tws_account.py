"""The account the fake TWS reports: cash, values and margin figures derived from the
venue's executions and positions, under the names TWS gives them in account updates
(``updateAccountValue``) and the account summary (``accountSummary``).

The account is a US margin account in USD (Reg T): initial margin is half the gross
position value, maintenance margin a quarter, and buying power four times the available
funds. Cash starts at ``initial_cash`` and moves by every execution's notional (commissions
are zero). Positions are marked at the venue's mid. So, always::

    NetLiquidation = TotalCashValue + StockMarketValue
                   = initial_cash + RealizedPnL + UnrealizedPnL
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

__all__ = ["ACCOUNT_SUMMARY_TAGS", "AccountFigures", "Holding", "account_figures"]

_CENT = Decimal("0.01")

ACCOUNT_SUMMARY_TAGS: tuple[str, ...] = (
    "AccountType", "NetLiquidation", "TotalCashValue", "SettledCash", "AccruedCash",
    "BuyingPower", "EquityWithLoanValue", "PreviousDayEquityWithLoanValue",
    "GrossPositionValue", "RegTEquity", "RegTMargin", "SMA", "InitMarginReq",
    "MaintMarginReq", "AvailableFunds", "ExcessLiquidity", "Cushion", "FullInitMarginReq",
    "FullMaintMarginReq", "FullAvailableFunds", "FullExcessLiquidity", "LookAheadNextChange",
    "LookAheadInitMarginReq", "LookAheadMaintMarginReq", "LookAheadAvailableFunds",
    "LookAheadExcessLiquidity", "HighestSeverity", "DayTradesRemaining", "Leverage",
)
"""Every tag ``reqAccountSummary`` accepts besides the ``$LEDGER`` forms, in IB's order."""

@dataclass(frozen=True)
class Holding:
    """One position as the account values it."""

    quantity: Decimal
    average_price: Decimal
    mark: Decimal
    """The price it is valued at (the venue's mid; the average price without a quote)."""


@dataclass(frozen=True)
class AccountFigures:
    """The account's figures in USD; the tag names are the TWS names."""

    cash: Decimal
    market_value: Decimal
    gross_position_value: Decimal
    unrealized: Decimal
    realized: Decimal

    @property
    def net_liquidation(self) -> Decimal:
        return self.cash + self.market_value

    @property
    def init_margin(self) -> Decimal:
        return self.gross_position_value / 2

    @property
    def maint_margin(self) -> Decimal:
        return self.gross_position_value / 4

    @property
    def available_funds(self) -> Decimal:
        return self.net_liquidation - self.init_margin

    @property
    def excess_liquidity(self) -> Decimal:
        return self.net_liquidation - self.maint_margin

    def summary(self, account_type: str = "INDIVIDUAL") -> dict[str, tuple[str, str]]:
        """tag -> (value, currency) for every account summary tag."""
        netliq = self.net_liquidation
        money = {
            "NetLiquidation": netliq,
            "TotalCashValue": self.cash,
            "SettledCash": self.cash,
            "AccruedCash": Decimal(0),
            "BuyingPower": self.available_funds * 4,
            "EquityWithLoanValue": netliq,
            "PreviousDayEquityWithLoanValue": netliq,
            "GrossPositionValue": self.gross_position_value,
            "RegTEquity": netliq,
            "RegTMargin": self.init_margin,
            "SMA": self.available_funds,
            "InitMarginReq": self.init_margin,
            "MaintMarginReq": self.maint_margin,
            "AvailableFunds": self.available_funds,
            "ExcessLiquidity": self.excess_liquidity,
            "FullInitMarginReq": self.init_margin,
            "FullMaintMarginReq": self.maint_margin,
            "FullAvailableFunds": self.available_funds,
            "FullExcessLiquidity": self.excess_liquidity,
            "LookAheadInitMarginReq": self.init_margin,
            "LookAheadMaintMarginReq": self.maint_margin,
            "LookAheadAvailableFunds": self.available_funds,
            "LookAheadExcessLiquidity": self.excess_liquidity,
        }
        values = {tag: (_amount(value), "USD") for tag, value in money.items()}
        values["AccountType"] = (account_type, "")
        values["Cushion"] = (
            f"{(self.excess_liquidity / netliq) if netliq > 0 else Decimal(0):.6f}", "")
        values["LookAheadNextChange"] = ("0", "")
        values["HighestSeverity"] = ("0", "")
        values["DayTradesRemaining"] = ("-1", "")
        values["Leverage"] = (
            f"{(self.gross_position_value / netliq) if netliq > 0 else Decimal(0):.2f}", "")
        return {tag: values[tag] for tag in ACCOUNT_SUMMARY_TAGS}

    def ledger(self) -> dict[str, str]:
        """The ``$LEDGER`` tags in USD."""
        return {
            "CashBalance": _amount(self.cash),
            "TotalCashBalance": _amount(self.cash),
            "NetLiquidationByCurrency": _amount(self.net_liquidation),
            "StockMarketValue": _amount(self.market_value),
            "UnrealizedPnL": _amount(self.unrealized),
            "RealizedPnL": _amount(self.realized),
            "ExchangeRate": "1.00",
        }

    def updates(self, account_type: str = "INDIVIDUAL") -> list[tuple[str, str, str]]:
        """(key, value, currency) as ``reqAccountUpdates`` reports them: the summary figures
        in USD, the ledger in USD and again as BASE."""
        rows = [(tag, value, currency) for tag, (value, currency)
                in self.summary(account_type).items()]
        ledger = self.ledger()
        rows += [(tag, value, "USD") for tag, value in ledger.items()]
        rows += [(tag, value, "BASE") for tag, value in ledger.items() if tag != "ExchangeRate"]
        return rows


def account_figures(
    initial_cash: Decimal,
    executions: Iterable[tuple[bool, Decimal, Decimal]],
    holdings: Iterable[Holding],
    realized: Decimal,
) -> AccountFigures:
    """The figures of an account that started with ``initial_cash``, made ``executions``
    (is_buy, quantity, price) and holds ``holdings``; ``realized`` is the profit taken by
    reducing positions."""
    cash = initial_cash
    for is_buy, quantity, price in executions:
        cash += -quantity * price if is_buy else quantity * price
    market_value = gross = unrealized = Decimal(0)
    for holding in holdings:
        market_value += holding.quantity * holding.mark
        gross += abs(holding.quantity * holding.mark)
        unrealized += (holding.mark - holding.average_price) * holding.quantity
    return AccountFigures(cash=cash, market_value=market_value, gross_position_value=gross,
                          unrealized=unrealized, realized=realized)


def _amount(value: Decimal) -> str:
    return format(value.quantize(_CENT), "f")
