"""Portfolio: average-cost positions and P&L worked by hand, plus a cash-flow identity property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.messages import Fill, Side
from cluster.portfolio import Portfolio

_n = iter(range(1, 1_000_000))


def fill(side: Side, qty: float, price: float, fee: float = 0.0, strategy: str = "mm",
         symbol: str = "BTCUSDT") -> Fill:
    return Fill(client_order_id="c", trade_id=f"t{next(_n)}", strategy=strategy, venue="paper", symbol=symbol,
                side=side, price=price, qty=qty, fee=fee)


def test_open_add_reduce_flip_and_close_by_hand() -> None:
    p = Portfolio()
    pos = p.apply_fill(fill(Side.BUY, 2.0, 100.0, fee=0.1))
    assert (pos.qty, pos.avg_price, pos.realized_pnl, pos.fees, pos.volume, pos.fills) == (2.0, 100.0, 0.0, 0.1,
                                                                                             200.0, 1)
    pos = p.apply_fill(fill(Side.BUY, 1.0, 103.0, fee=0.05))  # add: avg (200 + 103) / 3
    assert pos.qty == 3.0 and pos.avg_price == pytest.approx(101.0) and pos.realized_pnl == 0.0
    pos = p.apply_fill(fill(Side.SELL, 1.0, 105.0))  # reduce: (105 - 101) * 1
    assert pos.qty == 2.0 and pos.avg_price == pytest.approx(101.0) and pos.realized_pnl == pytest.approx(4.0)
    pos = p.apply_fill(fill(Side.SELL, 3.0, 99.0))  # flip: close 2 at (99 - 101), open short 1 at 99
    assert pos.qty == -1.0 and pos.avg_price == 99.0 and pos.realized_pnl == pytest.approx(0.0)
    pos = p.apply_fill(fill(Side.BUY, 0.5, 97.0))  # cover half a short bought at 99: +2 * 0.5
    assert pos.qty == -0.5 and pos.avg_price == 99.0 and pos.realized_pnl == pytest.approx(1.0)

    p.set_mark("BTCUSDT", 95.0)
    assert p.unrealized_pnl() == pytest.approx((95.0 - 99.0) * -0.5)  # 2.0
    assert p.unrealized_pnl("BTCUSDT") == pytest.approx(2.0)
    assert p.unrealized_pnl("ETHUSDT") == 0.0

    pos = p.apply_fill(fill(Side.BUY, 0.5, 100.0, fee=0.02))  # close the short: -1 * 0.5
    assert pos.qty == 0.0 and pos.avg_price == 0.0 and pos.realized_pnl == pytest.approx(0.5)
    assert pos.fills == 6
    assert pos.volume == pytest.approx(200 + 103 + 105 + 297 + 48.5 + 50)
    assert p.realized_pnl() == pytest.approx(0.5)
    assert p.fees() == pytest.approx(0.17)
    assert p.net_realized() == pytest.approx(0.5 - 0.17)
    assert p.unrealized_pnl() == 0.0
    assert p.max_abs_net("BTCUSDT") == 3.0
    assert p.max_abs_positions() == {"BTCUSDT": 3.0}


def test_flip_from_short_to_long() -> None:
    p = Portfolio()
    p.apply_fill(fill(Side.SELL, 2.0, 50.0))
    pos = p.apply_fill(fill(Side.BUY, 5.0, 40.0))  # cover 2 at +10 each, open long 3 at 40
    assert pos.qty == 3.0 and pos.avg_price == 40.0 and pos.realized_pnl == pytest.approx(20.0)
    p.set_mark("BTCUSDT", 41.0)
    assert p.unrealized_pnl() == pytest.approx(3.0)
    assert p.total_pnl() == pytest.approx(23.0)


def test_flat_after_float_dust_is_exactly_flat() -> None:
    p = Portfolio()
    p.apply_fill(fill(Side.BUY, 0.3, 10.0))
    for _ in range(3):
        pos = p.apply_fill(fill(Side.SELL, 0.1, 11.0))
    assert pos.qty == 0.0 and pos.avg_price == 0.0
    assert pos.realized_pnl == pytest.approx(0.3)


def test_positions_are_per_strategy_and_net_sums_them() -> None:
    p = Portfolio()
    p.apply_fill(fill(Side.BUY, 2.0, 100.0, strategy="a"))
    p.apply_fill(fill(Side.SELL, 3.0, 101.0, strategy="b"))
    p.apply_fill(fill(Side.SELL, 1.0, 10.0, strategy="a", symbol="ETHUSDT"))
    assert p.net_qty("BTCUSDT") == -1.0
    assert p.net_qty("ETHUSDT") == -1.0
    assert p.position("a", "BTCUSDT").qty == 2.0
    assert p.position("b", "BTCUSDT").avg_price == 101.0
    assert p.position("b", "ETHUSDT").qty == 0.0, "an untraded pair is flat"
    assert sorted((x.strategy, x.symbol) for x in p.positions()) == [
        ("a", "BTCUSDT"), ("a", "ETHUSDT"), ("b", "BTCUSDT")]
    # Netting across strategies: max |net| was 2 (after a's buy), not 3 (b's own size).
    assert p.max_abs_positions() == {"BTCUSDT": 2.0, "ETHUSDT": 1.0}
    p.set_mark("BTCUSDT", 102.0)
    assert p.unrealized_pnl() == pytest.approx(2 * 2.0 + -3 * 1.0)


def test_returned_positions_are_snapshots() -> None:
    p = Portfolio()
    first = p.apply_fill(fill(Side.BUY, 1.0, 100.0))
    p.apply_fill(fill(Side.BUY, 1.0, 102.0))
    assert first.qty == 1.0
    p.position("mm", "BTCUSDT").qty = 99.0
    assert p.position("mm", "BTCUSDT").qty == 2.0


def test_load_rebuilds_from_stored_positions() -> None:
    p = Portfolio()
    p.apply_fill(fill(Side.BUY, 4.0, 100.0, fee=0.4))
    p.apply_fill(fill(Side.SELL, 3.0, 110.0))
    stored = p.positions()

    q = Portfolio()
    q.apply_fill(fill(Side.BUY, 9.0, 1.0, strategy="stale"))
    q.load(stored, max_abs={"BTCUSDT": 4.0})
    assert [x.strategy for x in q.positions()] == ["mm"], "load replaces, it does not merge"
    assert q.realized_pnl() == pytest.approx(30.0) and q.fees() == pytest.approx(0.4)
    assert q.max_abs_net("BTCUSDT") == 4.0
    q.apply_fill(fill(Side.SELL, 1.0, 120.0))
    assert q.realized_pnl() == pytest.approx(50.0) and q.net_qty("BTCUSDT") == 0.0

    r = Portfolio()
    r.load(stored)
    assert r.max_abs_net("BTCUSDT") == 1.0, "without the stored max it restarts from the loaded net"


def test_rejects_non_positive_quantity() -> None:
    with pytest.raises(ValueError):
        Portfolio().apply_fill(fill(Side.BUY, 0.0, 100.0))


fills_st = st.lists(
    st.tuples(st.sampled_from([Side.BUY, Side.SELL]),
              st.floats(0.001, 10.0, allow_nan=False),
              st.floats(1.0, 1000.0, allow_nan=False),
              st.floats(0.0, 1.0, allow_nan=False),
              st.sampled_from(["a", "b"])),
    min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(fills_st, st.floats(1.0, 1000.0, allow_nan=False))
def test_pnl_equals_cash_flow(seq: list[tuple[Side, float, float, float, str]], mark: float) -> None:
    p = Portfolio()
    cash = 0.0
    qty = 0.0
    scale = 0.0
    max_abs = 0.0
    for side, q, price, fee, strategy in seq:
        p.apply_fill(fill(side, q, price, fee=fee, strategy=strategy))
        cash += -side.sign * price * q - fee
        qty += side.sign * q
        scale += price * q + fee
        max_abs = max(max_abs, abs(qty))
    p.set_mark("BTCUSDT", mark)
    expected = cash + qty * mark
    got = p.realized_pnl() + p.unrealized_pnl() - p.fees()
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6 * (scale + abs(qty) * mark))
    assert p.net_qty("BTCUSDT") == pytest.approx(qty, abs=1e-9 * (1 + max_abs))
    assert p.max_abs_net("BTCUSDT") == pytest.approx(max_abs, abs=1e-9 * (1 + max_abs))
