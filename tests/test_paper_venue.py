"""PaperVenue: walk-the-book fills with hand-worked prices and fees, resting orders, IOC, cancels."""

from __future__ import annotations

import pytest

from cluster.messages import (
    BookUpdate,
    ExecutionReport,
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from gateways.order_state import OrderStateMachine, event_for_status
from gateways.paper import PaperVenue

S = OrderStatus
_ids = iter(range(1, 1_000_000))


def book(seq: int, bids: list[tuple[float, float]], asks: list[tuple[float, float]], symbol: str = "BTCUSDT") -> BookUpdate:
    return BookUpdate(venue="paper", symbol=symbol, seq=seq, bids=bids, asks=asks)


def order(side: Side, qty: float, price: float | None = None, tif: TimeInForce = TimeInForce.GTC,
          order_type: OrderType | None = None, coid: str | None = None, symbol: str = "BTCUSDT") -> Order:
    return Order(client_order_id=coid or f"c{next(_ids)}", strategy="mm", venue="paper", symbol=symbol, side=side,
                 qty=qty, price=price, tif=tif,
                 order_type=order_type or (OrderType.MARKET if price is None else OrderType.LIMIT))


def statuses(reports: list[ExecutionReport]) -> list[OrderStatus]:
    return [r.status for r in reports]


BOOK1 = book(1, bids=[(100.0, 1.0), (99.0, 2.0)], asks=[(101.0, 1.0), (102.0, 2.0), (103.0, 5.0)])


def venue(*books: BookUpdate) -> PaperVenue:
    v = PaperVenue(maker_fee_bps=1.0, taker_fee_bps=5.0, trade_id_prefix="gw-a")
    for b in books:
        assert v.on_book(b) == []
    return v


def test_market_buy_walks_the_book_with_slippage() -> None:
    v = venue(BOOK1)
    reports = v.submit(order(Side.BUY, 2.5))
    assert statuses(reports) == [S.NEW, S.PARTIALLY_FILLED, S.FILLED]
    f1, f2 = reports[1].fill, reports[2].fill
    assert f1 is not None and f2 is not None
    assert (f1.price, f1.qty, f1.trade_id, f1.liquidity) == (101.0, 1.0, "gw-a-1", Liquidity.TAKER)
    assert (f2.price, f2.qty, f2.trade_id) == (102.0, 1.5, "gw-a-2")
    assert f1.fee == pytest.approx(101.0 * 1.0 * 5 / 1e4)  # 0.0505
    assert f2.fee == pytest.approx(102.0 * 1.5 * 5 / 1e4)  # 0.0765
    assert [r.filled_qty for r in reports] == [0.0, 1.0, 2.5]
    assert reports[0].fill is None
    assert v.open_orders() == []


def test_market_sell_walks_bids() -> None:
    v = venue(BOOK1)
    reports = v.submit(order(Side.SELL, 2.0))
    fills = [r.fill for r in reports if r.fill]
    assert [(f.price, f.qty, f.side) for f in fills] == [(100.0, 1.0, Side.SELL), (99.0, 1.0, Side.SELL)]
    assert reports[-1].status is S.FILLED


def test_market_remainder_canceled_when_book_runs_out() -> None:
    v = venue(BOOK1)
    reports = v.submit(order(Side.SELL, 5.0))
    assert statuses(reports) == [S.NEW, S.PARTIALLY_FILLED, S.PARTIALLY_FILLED, S.CANCELED]
    assert reports[-1].filled_qty == 3.0 and reports[-1].reason == "ioc remainder"


def test_partial_fill_rests_then_maker_fills_on_later_books() -> None:
    v = venue(BOOK1)
    o = order(Side.BUY, 4.0, price=102.0)
    reports = v.submit(o)
    assert statuses(reports) == [S.NEW, S.PARTIALLY_FILLED, S.PARTIALLY_FILLED]
    assert [(r.fill.price, r.fill.qty) for r in reports if r.fill] == [(101.0, 1.0), (102.0, 2.0)]
    [resting] = v.open_orders()
    assert resting.status is S.PARTIALLY_FILLED and resting.filled_qty == 3.0
    assert resting.avg_fill_price == pytest.approx((101.0 + 204.0) / 3.0)

    # Asks drop through the limit: 0.3 shown at or below 102 (102.5 is beyond it). Fills at its own price.
    [r] = v.on_book(book(2, bids=[(100.0, 1.0)], asks=[(101.5, 0.1), (101.9, 0.2), (102.5, 3.0)]))
    assert r.status is S.PARTIALLY_FILLED and r.filled_qty == pytest.approx(3.3)
    assert r.fill is not None
    assert (r.fill.price, r.fill.liquidity, r.fill.trade_id) == (102.0, Liquidity.MAKER, "gw-a-3")
    assert r.fill.qty == pytest.approx(0.3)
    assert r.fill.fee == pytest.approx(102.0 * 0.3 * 1 / 1e4)  # 0.00306

    assert v.on_book(book(3, bids=[(100.0, 1.0)], asks=[(102.5, 3.0)])) == []
    [r] = v.on_book(book(4, bids=[(100.0, 1.0)], asks=[(102.0, 5.0)]))
    assert r.status is S.FILLED and r.filled_qty == 4.0
    assert r.fill is not None and r.fill.qty == pytest.approx(0.7)
    assert v.open_orders() == []


def test_limit_that_does_not_cross_rests_as_new() -> None:
    v = venue(BOOK1)
    reports = v.submit(order(Side.SELL, 1.0, price=101.5))
    assert statuses(reports) == [S.NEW]
    [r] = v.on_book(book(2, bids=[(101.6, 0.4), (101.5, 0.4), (101.0, 9.0)], asks=[(102.0, 1.0)]))
    assert r.fill is not None and (r.fill.price, r.fill.qty) == (101.5, pytest.approx(0.8))
    assert r.status is S.PARTIALLY_FILLED


def test_ioc_remainder_canceled() -> None:
    v = venue(BOOK1)
    reports = v.submit(order(Side.BUY, 3.0, price=101.0, tif=TimeInForce.IOC))
    assert statuses(reports) == [S.NEW, S.PARTIALLY_FILLED, S.CANCELED]
    assert reports[-1].reason == "ioc remainder"
    assert reports[-1].filled_qty == 1.0 and reports[-1].fill is None
    assert v.open_orders() == []


def test_ioc_with_nothing_to_take_is_canceled_unfilled() -> None:
    v = venue(BOOK1)
    reports = v.submit(order(Side.BUY, 1.0, price=100.5, tif=TimeInForce.IOC))
    assert statuses(reports) == [S.NEW, S.CANCELED]
    assert reports[-1].filled_qty == 0.0


@pytest.mark.parametrize(("setup", "o", "why"), [
    ([], order(Side.BUY, 1.0, price=100.0), "no book"),
    ([book(1, bids=[(100.0, 1.0)], asks=[])], order(Side.BUY, 1.0), "no opposite liquidity"),
    ([BOOK1], order(Side.BUY, 0.0, price=100.0), "must be positive"),
    ([BOOK1], order(Side.SELL, -1.0), "must be positive"),
    ([BOOK1], order(Side.BUY, 1.0, order_type=OrderType.LIMIT), "without a price"),
    ([BOOK1], order(Side.BUY, 1.0, price=0.0), "must be positive"),
])
def test_rejections(setup: list[BookUpdate], o: Order, why: str) -> None:
    v = venue(*setup)
    [r] = v.submit(o)
    assert r.status is S.REJECTED and why in r.reason
    assert r.fill is None and v.open_orders() == []


def test_submit_requires_pending_new_and_unique_id() -> None:
    v = venue(BOOK1)
    v.submit(order(Side.BUY, 1.0, price=90.0, coid="dup"))
    with pytest.raises(ValueError, match="already resting"):
        v.submit(order(Side.BUY, 1.0, price=90.0, coid="dup"))
    ordered = OrderStateMachine().transition(order(Side.BUY, 1.0, price=90.0), event_for_status(S.NEW))
    with pytest.raises(ValueError, match="pending_new"):
        v.submit(ordered)


def test_one_book_does_not_fill_the_same_liquidity_twice() -> None:
    v = venue(book(1, bids=[(98.0, 1.0)], asks=[(101.0, 5.0)]))
    a = order(Side.BUY, 1.0, price=99.5, coid="a")
    b = order(Side.BUY, 1.0, price=100.0, coid="b")
    c = order(Side.BUY, 1.0, price=99.5, coid="c")
    for o in (a, b, c):
        assert statuses(v.submit(o)) == [S.NEW]

    asks = [(99.0, 1.5), (99.8, 5.0)]
    reports = v.on_book(book(2, bids=[(98.0, 1.0)], asks=asks))
    # Best price first (b), then oldest first (a before c); 1.5 shown at <= 99.5, and b may also take 99.8.
    assert [(r.client_order_id, r.fill.qty, r.fill.price) for r in reports if r.fill] == [
        ("b", 1.0, 100.0), ("a", 0.5, 99.5)]
    assert v.on_book(book(2, bids=[(98.0, 1.0)], asks=asks)) == [], "a re-delivered seq has nothing left"
    # A taker on the same seq sees only what is left: 99.8 x 5.
    [_, taken] = v.submit(order(Side.BUY, 1.0, price=99.9, tif=TimeInForce.IOC))
    assert taken.fill is not None and (taken.fill.price, taken.fill.qty) == (99.8, 1.0)
    # A new seq is new liquidity.
    reports = v.on_book(book(3, bids=[(98.0, 1.0)], asks=asks))
    assert [(r.client_order_id, r.fill.qty, r.status) for r in reports if r.fill] == [
        ("a", 0.5, S.FILLED), ("c", 1.0, S.FILLED)]


def test_taker_then_maker_on_same_seq_do_not_double_use() -> None:
    v = venue(book(1, bids=[(98.0, 1.0)], asks=[(101.0, 5.0)]))
    v.submit(order(Side.BUY, 2.0, price=100.0, coid="rest"))
    seq2 = book(2, bids=[(98.0, 1.0)], asks=[(99.0, 1.0), (100.0, 1.0)])
    v.on_book(seq2)  # rest takes both levels (1.0 @ 99, 1.0 @ 100) as maker
    [r] = v.submit(order(Side.BUY, 1.0))
    assert r.status is S.REJECTED and "no opposite liquidity" in r.reason


def test_cancel_resting_and_unknown() -> None:
    v = venue(BOOK1)
    v.submit(order(Side.BUY, 2.0, price=99.0, coid="x"))
    [r] = v.cancel("x")
    assert r.status is S.CANCELED and r.client_order_id == "x" and r.order_qty == 2.0
    assert v.open_orders() == []
    [again] = v.cancel("x")
    assert again.status is S.REJECTED and again.reason == "unknown order"
    assert v.on_book(book(2, bids=[], asks=[(98.0, 10.0)])) == [], "a canceled order never fills"


def test_restore_rests_an_acknowledged_order() -> None:
    v = venue(BOOK1)
    sm = OrderStateMachine()
    o = sm.transition(order(Side.SELL, 2.0, price=105.0, coid="r"), event_for_status(S.NEW))
    o = sm.apply_fill(o, Fill(client_order_id="r", trade_id="old-1", strategy="mm", venue="paper",
                              symbol="BTCUSDT", side=Side.SELL, price=105.0, qty=0.5))
    v.restore(o)
    assert [x.client_order_id for x in v.open_orders()] == ["r"]
    [r] = v.on_book(book(2, bids=[(106.0, 3.0)], asks=[(107.0, 1.0)]))
    assert r.status is S.FILLED and r.filled_qty == 2.0
    assert r.fill is not None and (r.fill.price, r.fill.qty) == (105.0, 1.5)
    with pytest.raises(ValueError):
        v.restore(order(Side.BUY, 1.0, price=100.0))  # still pending_new: never acknowledged


def test_books_are_per_symbol() -> None:
    v = venue(BOOK1)
    [r] = v.submit(order(Side.BUY, 1.0, symbol="ETHUSDT"))
    assert r.status is S.REJECTED
    v.on_book(book(1, bids=[(10.0, 1.0)], asks=[(11.0, 1.0)], symbol="ETHUSDT"))
    assert v.submit(order(Side.BUY, 1.0, symbol="ETHUSDT"))[-1].fill.price == 11.0


def test_reports_replay_cleanly_through_a_gateway_side_state_machine() -> None:
    """What the gateway does with each report must never hit an invalid transition."""
    v = venue(BOOK1)
    sm = OrderStateMachine()
    mine: dict[str, Order] = {}
    flow = [order(Side.BUY, 4.0, price=102.0), order(Side.SELL, 5.0), order(Side.BUY, 3.0, price=101.5,
                                                                              tif=TimeInForce.IOC)]
    reports: list[ExecutionReport] = []
    for o in flow:
        mine[o.client_order_id] = o
        reports += v.submit(o)
    reports += v.on_book(book(2, bids=[(99.0, 1.0)], asks=[(100.0, 10.0)]))
    for r in reports:
        cur = mine[r.client_order_id]
        if r.fill is not None:
            cur = sm.apply_fill(cur, r.fill)
        elif r.status is not cur.status:
            cur = sm.transition(cur, event_for_status(r.status), r.reason)
        assert cur.status is r.status and cur.filled_qty == pytest.approx(r.filled_qty)
        mine[r.client_order_id] = cur
    assert all(o.status.is_terminal for o in mine.values())
