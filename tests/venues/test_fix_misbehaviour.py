"""The FIX venue's misbehaviour switches, each seen by a bare quickfix initiator over loopback.

Every test switches one thing on (``FixBehaviour``) and checks what a client of a real
venue that behaves so would see on the wire.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from messages import Side
from tests.helpers import wait_for
from tests.venues.test_fix_venue import (
    ACCOUNT,
    Client,
    Received,
    by,
    engine,
    start_pair,
    started,
)
from venues.engine import VenueEngine
from venues.fix_venue import FIX42, FixBehaviour, FixVenue, Tag, free_port, utc_timestamp

__all__ = ["engine", "started"]  # fixtures, used by name

EXEC_REF_ID = 19
BUSINESS_REJECT_REF_ID = 379
ORD_STATUS_REQ_ID = 790


def status_request(client: Client, coid: str, req_id: str, side: str = "1") -> Received:
    """Send an OrderStatusRequest (35=H) and return its answer."""
    client.send("H", [(Tag.CL_ORD_ID, coid), (ORD_STATUS_REQ_ID, req_id),
                      (Tag.SYMBOL, "AAPL"), (Tag.SIDE, side)])
    [answer] = client.wait(lambda m: m.type == "8" and m.get(ORD_STATUS_REQ_ID) == req_id)
    return answer


def test_standard_recovery_reports_order_status_only_and_answers_35_h(
    engine: VenueEngine, tmp_path: Path, started: list[object]
) -> None:
    venue, client = start_pair(engine, tmp_path, started, behaviour=FixBehaviour.standard())
    engine.step()
    client.order("F1", "AAPL", "1", "10")
    [fill] = client.wait(by("8", cl_ord_id="F1", exec_type="F"))
    client.order("W1", "AAPL", "1", "150")  # 90 left at the touch: 60 stay working
    client.wait(by("8", cl_ord_id="W1", exec_type="F"))

    # AF: the working order's status and nothing else (no trade replay)
    client.send("AF", [(Tag.MASS_STATUS_REQ_ID, "S1"), (Tag.MASS_STATUS_REQ_TYPE, "7")])
    [only] = client.wait(lambda m: m.get(Tag.MASS_STATUS_REQ_ID) == "S1")
    assert (only[Tag.EXEC_TYPE], only[Tag.CL_ORD_ID], only[Tag.ORD_STATUS]) == ("I", "W1", "1")
    assert only[Tag.LAST_RPT_REQUESTED] == "Y"

    # 35=H on a filled order, a working order and one the venue never saw
    done = status_request(client, "F1", "q1")
    assert (done[Tag.EXEC_TYPE], done[Tag.ORD_STATUS]) == ("I", "2")
    assert Decimal(done[Tag.CUM_QTY]) == 10 and Decimal(done[Tag.LEAVES_QTY]) == 0
    assert Decimal(done[Tag.AVG_PX]) == Decimal(fill[Tag.LAST_PX])
    working = status_request(client, "W1", "q2")
    assert (working[Tag.EXEC_TYPE], working[Tag.ORD_STATUS]) == ("I", "1")
    assert (Decimal(working[Tag.CUM_QTY]), Decimal(working[Tag.LEAVES_QTY])) == (90, 60)
    unknown = status_request(client, "NEVER", "q3")
    assert (unknown[Tag.EXEC_TYPE], unknown[Tag.ORD_STATUS]) == ("I", "8")
    assert unknown[Tag.ORD_REJ_REASON] == "5"

    # AN: the venue's positions, the authority after a recovery
    client.send("AN", [(Tag.POS_REQ_ID, "P1"), (Tag.POS_REQ_TYPE, "0"), (Tag.ACCOUNT, ACCOUNT),
                       (Tag.ACCOUNT_TYPE, "1"), (Tag.CLEARING_BUSINESS_DATE, "20260101"),
                       (Tag.TRANSACT_TIME, utc_timestamp())])
    [position] = client.wait(by("AP", pos_req_id="P1"))
    assert Decimal(position[Tag.LONG_QTY]) == 100
    assert client.errors == [] and venue.callback_errors == 0


def test_fills_while_the_session_is_down_are_not_resent_but_35_h_shows_them(
    engine: VenueEngine, tmp_path: Path, started: list[object]
) -> None:
    port = free_port()
    behaviour = FixBehaviour.standard(resend_fills=False)
    venue, client = start_pair(engine, tmp_path, started, port=port, behaviour=behaviour)
    engine.step()
    client.order("L1", "AAPL", "1", "5", ord_type="2", price="150")
    client.wait(by("8", cl_ord_id="L1", exec_type="0"))
    client.stop()
    wait_for(lambda: not venue.logged_on(), what="venue sees the client go")
    engine.set_mid("AAPL", Decimal("140"))
    engine.step()  # fills while nobody is logged on
    assert engine.executions(ACCOUNT)

    client = Client(port, tmp_path / "client")
    started.append(client)
    client.start()
    answer = status_request(client, "L1", "after")  # ordered behind any resend
    assert (answer[Tag.ORD_STATUS], Decimal(answer[Tag.CUM_QTY])) == ("2", Decimal(5))
    assert [m for m in client.messages if m.get(Tag.EXEC_TYPE) == "F"] == []
    assert client.errors == [] and venue.callback_errors == 0


def test_mass_cancel_refused_or_left_unanswered(
    engine: VenueEngine, tmp_path: Path, started: list[object]
) -> None:
    venue, client = start_pair(engine, tmp_path, started,
                               behaviour=FixBehaviour(mass_cancel="refuse"))
    engine.step()
    client.order("L1", "AAPL", "1", "5", ord_type="2", price="1.00")
    client.wait(by("8", cl_ord_id="L1", exec_type="0"))
    client.send("q", [(Tag.CL_ORD_ID, "MC1"), (Tag.MASS_CANCEL_REQUEST_TYPE, "7"),
                      (Tag.TRANSACT_TIME, utc_timestamp())])
    [report] = client.wait(by("r", cl_ord_id="MC1"))
    assert report[Tag.MASS_CANCEL_RESPONSE] == "0"  # cancel request rejected
    assert report.get(Tag.MASS_CANCEL_REJECT_REASON) is not None
    assert [w.order.client_order_id for w in engine.open_orders(ACCOUNT)] == ["L1"]

    venue.behaviour = FixBehaviour(mass_cancel="ignore")
    client.send("q", [(Tag.CL_ORD_ID, "MC2"), (Tag.MASS_CANCEL_REQUEST_TYPE, "7"),
                      (Tag.TRANSACT_TIME, utc_timestamp())])
    status_request(client, "L1", "after-mc2")  # answered after anything MC2 caused
    assert [m for m in client.messages if m.get(Tag.CL_ORD_ID) == "MC2"] == []
    assert [w.order.client_order_id for w in engine.open_orders(ACCOUNT)] == ["L1"]
    assert venue.misbehaviours == {"mass_cancel_refused": 1, "mass_cancel_ignored": 1}


def test_orders_refused_at_session_level_and_by_business_reject(
    engine: VenueEngine, tmp_path: Path, started: list[object]
) -> None:
    venue, client = start_pair(engine, tmp_path, started,
                               behaviour=FixBehaviour(session_reject_rate=1.0))
    engine.step()
    client.order("S1", "AAPL", "1", "10")
    [reject] = wait_for(lambda: list(client.rejects), what="a session-level reject")  # type: ignore[misc]
    assert reject[Tag.REF_MSG_TYPE] == "D" and reject.get(Tag.REF_SEQ_NUM) is not None
    assert reject.get(Tag.SESSION_REJECT_REASON) is not None

    venue.behaviour = FixBehaviour(business_reject_rate=1.0)
    client.order("B1", "AAPL", "1", "10")
    [business] = client.wait(lambda m: m.type == "j" and m.get(BUSINESS_REJECT_REF_ID) == "B1")
    assert business[Tag.REF_MSG_TYPE] == "D" and business[Tag.BUSINESS_REJECT_REASON] == "4"

    # neither order reached the book, and no ExecutionReport was sent for them
    assert engine.order_status(ACCOUNT, "S1") is None and engine.order_status(ACCOUNT, "B1") is None
    assert client.reports("S1") == [] and client.reports("B1") == []
    assert venue.misbehaviours == {"session_reject": 1, "business_reject": 1}


def test_orders_dropped_in_flight_are_never_acknowledged(
    engine: VenueEngine, tmp_path: Path, started: list[object]
) -> None:
    venue, client = start_pair(engine, tmp_path, started, behaviour=FixBehaviour(drop_rate=1.0))
    engine.step()
    client.order("D1", "AAPL", "1", "10")
    answer = status_request(client, "D1", "q1")  # the venue has never heard of it
    assert (answer[Tag.ORD_STATUS], answer[Tag.ORD_REJ_REASON]) == ("8", "5")
    assert [r for r in client.reports("D1") if r is not answer] == [] and venue.dropped == ["D1"]
    assert engine.order_status(ACCOUNT, "D1") is None and engine.positions(ACCOUNT) == []


def test_trades_busted_and_corrected_after_they_were_reported(
    engine: VenueEngine, tmp_path: Path, started: list[object]
) -> None:
    venue, client = start_pair(engine, tmp_path, started)
    engine.step()
    client.order("T1", "AAPL", "1", "10")
    client.order("T2", "AAPL", "1", "6")
    [first] = client.wait(by("8", cl_ord_id="T1", exec_type="F"))
    [second] = client.wait(by("8", cl_ord_id="T2", exec_type="F"))

    venue.bust(first[Tag.EXEC_ID])
    [bust] = client.wait(by("8", cl_ord_id="T1", exec_type="H"))
    assert bust[EXEC_REF_ID] == first[Tag.EXEC_ID] and bust[Tag.EXEC_ID] != first[Tag.EXEC_ID]
    assert Decimal(bust[Tag.LAST_QTY]) == 10 and Decimal(bust[Tag.CUM_QTY]) == 0

    new_price = Decimal(second[Tag.LAST_PX]) + Decimal("0.05")
    venue.correct(second[Tag.EXEC_ID], price=new_price, quantity=Decimal(4))
    [correction] = client.wait(by("8", cl_ord_id="T2", exec_type="G"))
    assert correction[EXEC_REF_ID] == second[Tag.EXEC_ID]
    assert Decimal(correction[Tag.LAST_PX]) == new_price == Decimal(correction[Tag.AVG_PX])
    assert Decimal(correction[Tag.LAST_QTY]) == 4 == Decimal(correction[Tag.CUM_QTY])
    assert [(p.quantity, p.average_price) for p in engine.positions(ACCOUNT)] == [
        (Decimal(4), new_price)]

    # with a bust rate, every trade is busted at the next engine step
    venue.behaviour = FixBehaviour(bust_rate=1.0)
    client.order("T3", "AAPL", "2", "4")
    [third] = client.wait(by("8", cl_ord_id="T3", exec_type="F"))
    engine.step()
    [busted] = client.wait(by("8", cl_ord_id="T3", exec_type="H"))
    assert busted[EXEC_REF_ID] == third[Tag.EXEC_ID]
    assert [p.quantity for p in engine.positions(ACCOUNT)] == [Decimal(4)]

    # with a correction rate, every trade is corrected one tick against the client
    venue.behaviour = FixBehaviour(correct_rate=1.0)
    client.order("T4", "AAPL", "1", "2")
    [fourth] = client.wait(by("8", cl_ord_id="T4", exec_type="F"))
    engine.step()
    [corrected] = client.wait(by("8", cl_ord_id="T4", exec_type="G"))
    assert corrected[EXEC_REF_ID] == fourth[Tag.EXEC_ID]
    tick = engine.config.tick_size
    assert Decimal(corrected[Tag.LAST_PX]) == Decimal(fourth[Tag.LAST_PX]) + tick
    assert client.errors == [] and venue.callback_errors == 0


def test_fills_for_orders_the_client_never_sent(
    engine: VenueEngine, tmp_path: Path, started: list[object]
) -> None:
    venue, client = start_pair(engine, tmp_path, started)
    engine.step()
    fill = venue.foreign_fill("MSFT", Side.SELL, Decimal(3))
    [report] = client.wait(by("8", cl_ord_id=fill.client_order_id, exec_type="F"))
    assert report[Tag.EXEC_ID] == fill.fill_id and report[Tag.SIDE] == "2"
    assert Decimal(report[Tag.LAST_QTY]) == 3 and report[Tag.ORD_STATUS] == "2"

    venue.behaviour = FixBehaviour(foreign_fill_rate=1.0)
    engine.step()
    foreign = client.wait(lambda m: m.type == "8" and m.get(Tag.EXEC_TYPE) == "F"
                          and (m.get(Tag.CL_ORD_ID) or "").startswith("EXT-"), count=2)
    assert foreign[-1][Tag.CL_ORD_ID] != fill.client_order_id
    held = sum((f.quantity if f.side is Side.BUY else -f.quantity)
               for f in engine.executions(ACCOUNT) if f.symbol == foreign[-1][Tag.SYMBOL])
    assert {p.symbol: p.quantity for p in engine.positions(ACCOUNT)}.get(
        foreign[-1][Tag.SYMBOL], Decimal(0)) == held
    assert client.errors == [] and venue.callback_errors == 0


def test_bad_behaviour_is_refused_naming_the_field() -> None:
    import pytest

    with pytest.raises(ValueError, match="mass_cancel"):
        FixBehaviour(mass_cancel="sometimes")
    with pytest.raises(ValueError, match="drop_rate"):
        FixBehaviour(drop_rate=1.5)
    with pytest.raises(ValueError, match="host"):
        FixVenue(VenueEngine("x"), free_port(), Path("unused"), host="0.0.0.0")


def test_fix42_status_request_and_bust(
    engine: VenueEngine, tmp_path: Path, started: list[object]
) -> None:
    venue, client = start_pair(engine, tmp_path, started, begin_string=FIX42)
    engine.step()
    client.order("T1", "AAPL", "1", "10")
    [fill] = client.wait(lambda m: m.type == "8" and m.get(Tag.CL_ORD_ID) == "T1"
                         and m.get(Tag.EXEC_TYPE) == "2")
    client.send("H", [(Tag.CL_ORD_ID, "T1"), (Tag.SYMBOL, "AAPL"), (Tag.SIDE, "1")])
    [status] = client.wait(lambda m: m.get(Tag.EXEC_TRANS_TYPE) == "3")
    assert (status[Tag.ORD_STATUS], Decimal(status[Tag.CUM_QTY])) == ("2", Decimal(10))
    venue.bust(fill[Tag.EXEC_ID])
    [bust] = client.wait(lambda m: m.get(Tag.EXEC_TRANS_TYPE) == "1")
    assert bust[EXEC_REF_ID] == fill[Tag.EXEC_ID] and Decimal(bust[Tag.CUM_QTY]) == 0
    assert client.errors == [] and venue.callback_errors == 0


def test_a_status_request_without_clordid_is_refused_and_the_venue_goes_on(
    engine: VenueEngine, tmp_path: Path, started: list[object]
) -> None:
    venue, client = start_pair(engine, tmp_path, started)
    client.send("H", [(ORD_STATUS_REQ_ID, "bad"), (Tag.SYMBOL, "AAPL"), (Tag.SIDE, "1")])
    # ClOrdID is required: quickfix's dictionary refuses it at session level (35=3)
    [reject] = wait_for(lambda: [r for r in client.rejects if r.get(Tag.REF_MSG_TYPE) == "H"],
                        what="a session-level reject of the H")  # type: ignore[misc]
    assert reject.get(Tag.REF_TAG_ID) == str(int(Tag.CL_ORD_ID))
    answer = status_request(client, "NEVER", "good")
    assert answer[Tag.ORD_STATUS] == "8" and venue.callback_errors == 0
