"""A strategy that restarts learns its positions and working orders from the position
keeper before it sends anything, so it carries on where it was.

Before, the sample strategy started from a blank position after a restart: holding +30
AAPL with the governor's limit at 50, it believed it was flat, kept buying toward its +50
target, and every order past the limit was refused, for ever (its own count never reached
the target that turns it round)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from messages import OrderStatus
from tests.strategies.plugin_site import on_path, write_plugin
from tradeguard.testing import StrategyKit, wait_for

SAMPLE = {"name": "swing", "symbols": ["AAPL"], "interval_s": 0.02, "limit_ratio": 0.0,
          "quantity": "10", "max_position": "50"}
LIMITS = {"max_position": "50"}


def test_a_crashed_sample_strategy_keeps_its_position_and_keeps_swinging(tmp_path: Path) -> None:
    with StrategyKit(SAMPLE, tmp_path, risk=LIMITS) as kit:
        wait_for(lambda: (s := kit.state()) is not None and s.positions.get("AAPL", 0) >= 20, 20.0,
                 "the strategy long at least 20 AAPL")
        state = kit.crash()

        # What it believes is what the journal says its orders built (it took the journal's
        # word at restart: book_fills of them).
        assert state.book_fills > 0 and state.positions.get("AAPL", Decimal(0)) > 0
        wait_for(lambda: kit.position("AAPL") == kit.journal_position("swing", "AAPL"), 10.0,
                 "the restarted strategy's position equal to the journal's")
        # It turns round at +50 and goes short: impossible while it believed it was flat.
        wait_for(lambda: (s := kit.state()) is not None and s.positions.get("AAPL", 0) <= -20, 20.0,
                 "the restarted strategy short 20 AAPL")
        # Its belief and the journal meet (each hears a fill on its own, in its own time).
        wait_for(lambda: kit.position("AAPL") == kit.journal_position("swing", "AAPL"), 10.0,
                 "the strategy's position equal to the journal's")
        now = kit.state()
        assert now is not None and now.submitted > 0
        refusals = [o for o in kit.journal_orders("swing") if o.status is OrderStatus.REJECTED]
        assert refusals == []  # nothing it sent was refused by the venue
        assert now.rejected <= 2  # at most an order racing the fill of the one before, at the limit


def test_a_restart_twice_in_a_row_still_agrees_with_the_journal(tmp_path: Path) -> None:
    with StrategyKit(SAMPLE, tmp_path, risk=LIMITS) as kit:
        for _ in range(2):
            kit.wait_fills(2)
            kit.crash()
            wait_for(lambda: kit.position("AAPL") == kit.journal_position("swing", "AAPL"), 10.0,
                     "the restarted strategy's position equal to the journal's")
        final = kit.wait_fills(2)
        assert final.book_fills >= 4 and final.rejected == 0


RESTER = '''
from __future__ import annotations

from decimal import Decimal

from actors.strategies import Strategy
from messages import Side, OrderType


class Rester(Strategy):
    """Rests one buy far below the market; a restarted one cancels what it finds working."""

    found: tuple[str, ...] = ()

    def on_strategy_start(self) -> None:
        self.found = tuple(self.working_orders)
        if self.found:
            self.cancel_all_mine()
        else:
            self.call_later(0.0, "post")

    def on_timer(self, name: str) -> None:
        mid = self.mid("AAPL")
        if mid is None:
            self.call_later(0.05, "post")
            return
        self.submit("AAPL", Side.BUY, Decimal(3), order_type=OrderType.LIMIT,
                    limit_price=(mid * Decimal("0.99")).quantize(Decimal("0.01")))
'''


def test_a_restarted_strategy_knows_its_working_orders_and_cancels_only_its_own(tmp_path: Path) -> None:
    site = write_plugin(tmp_path / "site", kind="rester", module="rester_plugin", source=RESTER,
                        target="Rester")
    with on_path(site, "rester_plugin"), StrategyKit(
        [{"name": "rester", "kind": "rester", "symbols": ["AAPL"]},
         {"name": "other", "kind": "rester", "symbols": ["AAPL"]}], tmp_path / "run",
    ) as kit:
        for name in ("rester", "other"):
            wait_for(lambda n=name: (s := kit.state(n)) is not None and len(s.working) == 1, 20.0,
                     f"the resting order of {name}")
            wait_for(lambda n=name: [o.status for o in kit.journal_orders(n)] == [OrderStatus.ACCEPTED],
                     10.0, f"{name}'s order accepted at the venue")
        [resting] = kit.journal_orders("rester")

        state = kit.crash("rester")

        assert state.submitted == 0
        wait_for(lambda: [o.status for o in kit.journal_orders("rester")] == [OrderStatus.CANCELLED], 10.0,
                 "the order found at restart cancelled at the venue")
        assert kit.journal_orders("rester")[0].order.client_order_id == resting.order.client_order_id
        after = kit.state("rester")
        assert after is not None and after.working == () and after.submitted == 0
        # The other strategy's order on the same symbol is untouched.
        assert [o.status for o in kit.journal_orders("other")] == [OrderStatus.ACCEPTED]
        other = kit.state("other")
        assert other is not None and len(other.working) == 1
