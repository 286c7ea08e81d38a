"""OrderStateMachine: every allowed transition, the refused ones, fills and their races."""

from __future__ import annotations

import msgspec
import pytest

from cluster.messages import Fill, Order, OrderStatus, OrderType, Side
from gateways.order_state import (
    TRANSITIONS,
    InvalidTransition,
    OrderEvent,
    OrderStateMachine,
    event_for_status,
)

S = OrderStatus
E = OrderEvent
sm = OrderStateMachine()
LIVE = [S.PENDING_NEW, S.NEW, S.PARTIALLY_FILLED, S.PENDING_CANCEL, S.UNKNOWN]
TERMINAL = [S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED]

EXPECTED = {
    (S.PENDING_NEW, E.SUBMIT): S.PENDING_NEW,
    (S.PENDING_NEW, E.ACCEPTED): S.NEW,
    (S.PENDING_NEW, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.PENDING_NEW, E.FILL): S.FILLED,
    (S.PENDING_NEW, E.CANCEL_REQUESTED): S.PENDING_CANCEL,
    (S.PENDING_NEW, E.CANCELED): S.CANCELED,
    (S.PENDING_NEW, E.REJECTED): S.REJECTED,
    (S.PENDING_NEW, E.EXPIRED): S.EXPIRED,
    (S.PENDING_NEW, E.TIMED_OUT): S.UNKNOWN,
    (S.NEW, E.ACCEPTED): S.NEW,
    (S.NEW, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.NEW, E.FILL): S.FILLED,
    (S.NEW, E.CANCEL_REQUESTED): S.PENDING_CANCEL,
    (S.NEW, E.CANCELED): S.CANCELED,
    (S.NEW, E.EXPIRED): S.EXPIRED,
    (S.NEW, E.TIMED_OUT): S.UNKNOWN,
    (S.PARTIALLY_FILLED, E.ACCEPTED): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, E.FILL): S.FILLED,
    (S.PARTIALLY_FILLED, E.CANCEL_REQUESTED): S.PENDING_CANCEL,
    (S.PARTIALLY_FILLED, E.CANCELED): S.CANCELED,
    (S.PARTIALLY_FILLED, E.EXPIRED): S.EXPIRED,
    (S.PARTIALLY_FILLED, E.TIMED_OUT): S.UNKNOWN,
    (S.PENDING_CANCEL, E.ACCEPTED): S.PENDING_CANCEL,
    (S.PENDING_CANCEL, E.PARTIAL_FILL): S.PENDING_CANCEL,
    (S.PENDING_CANCEL, E.FILL): S.FILLED,
    (S.PENDING_CANCEL, E.CANCELED): S.CANCELED,
    (S.PENDING_CANCEL, E.REJECTED): S.REJECTED,
    (S.PENDING_CANCEL, E.EXPIRED): S.EXPIRED,
    (S.PENDING_CANCEL, E.TIMED_OUT): S.UNKNOWN,
    (S.UNKNOWN, E.ACCEPTED): S.NEW,
    (S.UNKNOWN, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.UNKNOWN, E.FILL): S.FILLED,
    (S.UNKNOWN, E.CANCEL_REQUESTED): S.PENDING_CANCEL,
    (S.UNKNOWN, E.CANCELED): S.CANCELED,
    (S.UNKNOWN, E.REJECTED): S.REJECTED,
    (S.UNKNOWN, E.EXPIRED): S.EXPIRED,
    (S.UNKNOWN, E.TIMED_OUT): S.UNKNOWN,
}


def order(status: OrderStatus = S.PENDING_NEW, qty: float = 2.0, filled: float = 0.0, avg: float = 0.0) -> Order:
    return Order(client_order_id="c1", strategy="mm", venue="paper", symbol="BTCUSDT", side=Side.BUY, qty=qty,
                 order_type=OrderType.LIMIT, price=100.0, status=status, filled_qty=filled, avg_fill_price=avg)


def fill(qty: float, price: float = 100.0, trade_id: str = "t1") -> Fill:
    return Fill(client_order_id="c1", trade_id=trade_id, strategy="mm", venue="paper", symbol="BTCUSDT",
                side=Side.BUY, price=price, qty=qty)


def test_table_is_exactly_the_expected_one() -> None:
    assert dict(TRANSITIONS) == EXPECTED


@pytest.mark.parametrize(("state", "event"), sorted(EXPECTED, key=str))
def test_every_allowed_transition(state: OrderStatus, event: OrderEvent) -> None:
    before = order(state)
    after = sm.transition(before, event, reason="why")
    assert after.status is EXPECTED[(state, event)]
    assert after.updated_ts_ns > 0
    assert after.reason == "why"
    assert before.status is state, "the input order is not modified"


@pytest.mark.parametrize("state", TERMINAL)
@pytest.mark.parametrize("event", list(OrderEvent))
def test_terminal_states_accept_nothing(state: OrderStatus, event: OrderEvent) -> None:
    with pytest.raises(InvalidTransition, match="terminal") as info:
        sm.transition(order(state), event)
    assert info.value.client_order_id == "c1"
    assert info.value.status is state and info.value.event is event


@pytest.mark.parametrize(("state", "event"), [
    (S.NEW, E.SUBMIT),
    (S.UNKNOWN, E.SUBMIT),  # an order whose fate is unknown is never sent again
    (S.PARTIALLY_FILLED, E.SUBMIT),
    (S.NEW, E.REJECTED),  # acknowledged orders are not rejected
    (S.PARTIALLY_FILLED, E.REJECTED),
    (S.PENDING_CANCEL, E.CANCEL_REQUESTED),  # one cancel at a time
    (S.PENDING_CANCEL, E.SUBMIT),
])
def test_illegal_transitions_raise(state: OrderStatus, event: OrderEvent) -> None:
    o = order(state)
    with pytest.raises(InvalidTransition) as info:
        sm.transition(o, event)
    assert str(info.value) == f"order c1: event {event.value} not allowed from {state.value}"


def test_submit_only_for_a_fresh_order() -> None:
    assert sm.transition(order(), E.SUBMIT).status is S.PENDING_NEW
    with pytest.raises(InvalidTransition, match="fresh"):
        sm.transition(order(filled=0.5), E.SUBMIT)
    with pytest.raises(InvalidTransition, match="fresh"):
        sm.transition(msgspec.structs.replace(order(), venue_order_id="v9"), E.SUBMIT)


def test_reason_kept_when_not_given() -> None:
    o = sm.transition(order(), E.REJECTED, "no book")
    assert o.reason == "no book"
    o2 = sm.transition(order(S.NEW), E.CANCEL_REQUESTED)
    assert o2.reason == ""


def test_event_for_status_roundtrips_through_the_table() -> None:
    for status in OrderStatus:
        ev = event_for_status(status)
        targets = {t for (_, e), t in EXPECTED.items() if e is ev}
        assert status in targets
    assert event_for_status(S.UNKNOWN) is E.TIMED_OUT
    assert event_for_status(S.PENDING_NEW) is E.SUBMIT
    assert event_for_status(S.FILLED) is E.FILL


def test_apply_fill_partial_then_full_with_vwap() -> None:
    o = sm.transition(order(qty=2.0), E.ACCEPTED)
    o = sm.apply_fill(o, fill(0.5, 100.0, "t1"))
    assert o.status is S.PARTIALLY_FILLED
    assert o.filled_qty == 0.5 and o.avg_fill_price == 100.0
    o = sm.apply_fill(o, fill(1.5, 104.0, "t2"))
    assert o.status is S.FILLED
    assert o.filled_qty == 2.0
    assert o.avg_fill_price == pytest.approx((0.5 * 100 + 1.5 * 104) / 2.0)  # 103.0
    assert o.remaining == 0.0


def test_apply_fill_within_tolerance_completes_exactly() -> None:
    o = sm.apply_fill(order(S.NEW, qty=0.3), fill(0.1))
    o = sm.apply_fill(o, fill(0.1, trade_id="t2"))
    o = sm.apply_fill(o, fill(0.1, trade_id="t3"))  # 0.1+0.1+0.1 != 0.3 in floats
    assert o.status is S.FILLED
    assert o.filled_qty == 0.3 and o.remaining == 0.0


def test_overfill_raises_and_leaves_order_unchanged() -> None:
    o = sm.apply_fill(order(S.NEW, qty=1.0), fill(0.6))
    with pytest.raises(InvalidTransition, match="overfill"):
        sm.apply_fill(o, fill(0.5, trade_id="t2"))
    assert o.filled_qty == 0.6 and o.status is S.PARTIALLY_FILLED
    with pytest.raises(InvalidTransition, match="overfill"):
        sm.apply_fill(order(S.NEW, qty=1.0), fill(1.0 + 1e-9))


def test_fill_on_terminal_order_raises() -> None:
    done = sm.apply_fill(order(S.NEW, qty=1.0), fill(1.0))
    assert done.status is S.FILLED
    with pytest.raises(InvalidTransition):
        sm.apply_fill(done, fill(1e-9, trade_id="t2"))
    with pytest.raises(InvalidTransition, match="terminal"):
        sm.apply_fill(order(S.CANCELED, qty=1.0), fill(0.1))


def test_bad_fills_raise() -> None:
    with pytest.raises(InvalidTransition, match="not positive"):
        sm.apply_fill(order(S.NEW), fill(0.0))
    with pytest.raises(InvalidTransition, match="for order c2"):
        sm.apply_fill(order(S.NEW), msgspec.structs.replace(fill(0.1), client_order_id="c2"))


def test_fill_before_ack_then_late_ack() -> None:
    o = sm.apply_fill(order(S.PENDING_NEW, qty=2.0), fill(0.5))
    assert o.status is S.PARTIALLY_FILLED
    o = sm.transition(o, E.ACCEPTED)
    assert o.status is S.PARTIALLY_FILLED and o.filled_qty == 0.5


def test_fill_racing_a_cancel() -> None:
    o = sm.transition(order(S.NEW, qty=2.0), E.CANCEL_REQUESTED)
    o = sm.apply_fill(o, fill(0.5))
    assert o.status is S.PENDING_CANCEL, "the cancel is still in flight"
    assert o.filled_qty == 0.5
    canceled = sm.transition(o, E.CANCELED)
    assert canceled.status is S.CANCELED and canceled.filled_qty == 0.5
    # Or the fill wins: the rest fills before the cancel lands, and the cancel's answer is refused.
    filled = sm.apply_fill(o, fill(1.5, trade_id="t2"))
    assert filled.status is S.FILLED
    with pytest.raises(InvalidTransition):
        sm.transition(filled, E.CANCELED)


def test_timeout_then_query_resolves() -> None:
    lost = sm.transition(order(S.PENDING_NEW), E.TIMED_OUT)
    assert lost.status is S.UNKNOWN
    with pytest.raises(InvalidTransition):
        sm.transition(lost, E.SUBMIT)
    # The query says the venue has it, untouched.
    assert sm.transition(lost, event_for_status(S.NEW)).status is S.NEW
    # Or it says it was rejected / filled.
    assert sm.transition(lost, event_for_status(S.REJECTED)).status is S.REJECTED
    assert sm.apply_fill(lost, fill(2.0)).status is S.FILLED
    # A query that says "open" for an order we already hold fills for means partially filled.
    part = sm.apply_fill(sm.transition(order(S.NEW), E.TIMED_OUT), fill(0.5))
    assert part.status is S.PARTIALLY_FILLED
    again = sm.transition(sm.transition(part, E.TIMED_OUT), E.ACCEPTED)
    assert again.status is S.PARTIALLY_FILLED


@pytest.mark.parametrize("state", LIVE)
def test_fills_allowed_in_every_live_state(state: OrderStatus) -> None:
    o = sm.apply_fill(order(state, qty=1.0), fill(1.0))
    assert o.status is S.FILLED
