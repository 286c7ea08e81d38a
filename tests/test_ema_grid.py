"""EMA grid-range predictor: shares_amount at its edges, candles, the predictor and the strategy, by hand."""

from __future__ import annotations

import math

import pytest

from cluster.messages import Side, TimeInForce, Trade
from strategies.base import StrategyParamError
from strategies.ema_grid import CandleBuilder, EmaGrid, EmaGridPredictor, grid_index, shares_amount
from tests.test_strategies import SYM, VENUES, Host, book

S = 1_000_000_000  # ns per second


def test_shares_amount_edges_and_formula():
    for level in (0.5, 1.0, 2.0, 5.0):
        assert shares_amount(0.0, level, 10.0) == 0.0
        assert shares_amount(1.0, level, 10.0) == 10.0
    # level 1: linear, (1 - (1 - x)) * Max
    for x in (0.1, 0.25, 0.5, 0.9):
        assert shares_amount(x, 1.0, 8.0) == pytest.approx(8.0 * x)
    # level 2, x = 0.6: (1 - (1 - 0.36) ** 0.5) * 5 = (1 - 0.8) * 5 = 1.0
    assert shares_amount(0.6, 2.0, 5.0) == pytest.approx(1.0)
    assert shares_amount(0.3, 3.0, 7.0) == pytest.approx((1 - (1 - 0.3**3) ** (1 / 3)) * 7.0)
    # x is clipped to [0, 1]
    assert shares_amount(-0.5, 2.0, 5.0) == 0.0 and shares_amount(3.0, 2.0, 5.0) == 5.0
    # a larger level keeps the amount smaller until the deviation is large
    assert shares_amount(0.5, 3.0, 1.0) < shares_amount(0.5, 1.0, 1.0)
    with pytest.raises(ValueError):
        shares_amount(0.5, 0.0, 1.0)


def test_grid_index_is_a_floor_on_the_grid():
    g = 0.001
    assert grid_index(100.3 / 100.0 - 1, g) == 3  # 0.0030000000000001 -> 3, not 2 or 4
    assert grid_index(0.0, g) == 0 and grid_index(0.00099, g) == 0
    assert grid_index(-0.0001, g) == -1 and grid_index(-0.001, g) == -1 and grid_index(-0.0021, g) == -3


def test_candles_from_trades_close_on_the_next_bucket():
    cb = CandleBuilder(S)
    assert cb.on_trade(int(0.1 * S), 100.0, 1.0) is None
    assert cb.on_trade(int(0.5 * S), 101.0, 2.0) is None
    assert cb.on_trade(int(0.9 * S), 99.0, 1.0) is None
    closed = cb.on_trade(int(1.2 * S), 102.0, 1.0)
    assert closed is not None and (closed.open, closed.close, closed.high, closed.low, closed.volume) == (
        100.0, 99.0, 101.0, 99.0, 4.0)
    assert closed.price == 99.5  # midpoint of open and close
    assert cb.advance(int(1.9 * S)) is None
    assert cb.advance(2 * S).price == 102.0


def test_predictor_ema_of_ranges_and_prediction():
    p = EmaGridPredictor(grid=0.001, alpha=0.5)
    p.on_candle(100.0)
    assert p.prediction is None  # one price: no change ratio yet
    p.on_candle(100.3)  # +0.3% -> range 3
    assert p.ranges == [3] and p.ema == 3.0
    assert p.prediction == pytest.approx(100.3 * (1 + 3.5 * 0.001))
    p.on_candle(100.3 * 0.9985)  # -0.15% -> range -2; ema = 0.5 * -2 + 0.5 * 3 = 0.5
    assert p.ranges == [3, -2] and p.ema == pytest.approx(0.5)
    assert p.prediction == pytest.approx(100.3 * 0.9985 * (1 + 1.0 * 0.001))


def grid_strategy(**params) -> EmaGrid:
    base = {"candle_s": 1.0, "grid_bps": 10.0, "ema_span": 1, "min_margin_bps": 5.0, "max_range": 5.0, "level": 1.0,
            "max_amount": 10.0, "min_order_notional": 0.0, "reject_backoff_updates": 0}
    return EmaGrid("grid", [SYM], VENUES, {**base, **params})


def trade(ts_s: float, price: float) -> Trade:
    return Trade(venue="paper", symbol=SYM, trade_id=str(ts_s), price=price, qty=1.0, aggressor=Side.BUY,
                 exchange_ts_ns=int(ts_s * S))


def at(update, ts_s: float):
    import msgspec

    return msgspec.structs.replace(update, exchange_ts_ns=int(ts_s * S))


def warmed(**params) -> tuple[EmaGrid, Host]:
    """Candle 0 at 100 (open = close), candle 1 open 100.2 close 100.4 -> price 100.3, range 3, ema 3."""
    s = grid_strategy(**params)
    h = Host(s)
    for ts, px in ((0.1, 100.0), (0.6, 100.0), (1.1, 100.2), (1.8, 100.4), (2.02, 100.6)):  # the last closes candle 1
        assert s.on_trade(trade(ts, px)) == []
    return s, h


def test_ema_grid_sells_above_the_prediction_sized_by_shares_amount():
    s, h = warmed()
    pred = s.predictors[SYM].prediction
    assert pred == pytest.approx(100.3 * 1.0035)  # 100.65105
    # mid 101.01: dev = 101.01 / 100.65105 - 1 = 35.66 bp > 5 bp margin -> sell.
    (intent,) = h.book(at(book(101.0, 101.02, seq=2), 2.1))
    dev_bps = (101.01 / pred - 1) * 1e4
    x = dev_bps / 10.0 / 5.0
    assert intent.side is Side.SELL and intent.tif is TimeInForce.IOC and intent.price == 101.0  # the best bid
    assert intent.qty == pytest.approx(shares_amount(x, 1.0, 10.0), rel=1e-7)
    assert intent.qty == pytest.approx(10.0 * x, rel=1e-7)


def test_ema_grid_buys_below_and_caps_at_max_range():
    s, h = warmed()
    # Far below: x clipped to 1 -> the full Max.
    (intent,) = h.book(at(book(99.0, 99.02, seq=2), 2.1))
    assert intent.side is Side.BUY and intent.price == 99.02 and intent.qty == 10.0


def test_ema_grid_no_trade_inside_the_margin_and_flattens_there():
    s, h = warmed()
    pred = s.predictors[SYM].prediction
    mid = round(pred, 2)  # within 1 bp of the prediction
    assert h.book(at(book(round(mid - 0.01, 2), round(mid + 0.01, 2), seq=2), 2.1)) == []
    # Holding a short from earlier: inside the margin it is bought back to flat.
    coid = h.decide(s.limit(SYM, Side.SELL, 2.0, 101.0))
    from cluster.messages import OrderStatus

    h.report(coid, OrderStatus.FILLED, 2.0, 101.0)
    (back,) = h.book(at(book(round(mid - 0.01, 2), round(mid + 0.01, 2), seq=3), 2.2))
    assert back.side is Side.BUY and back.qty == 2.0
    keep, hk = warmed(flatten_inside_margin=False)
    coid = hk.decide(keep.limit(SYM, Side.SELL, 2.0, 101.0))
    hk.report(coid, OrderStatus.FILLED, 2.0, 101.0)
    assert hk.book(at(book(round(mid - 0.01, 2), round(mid + 0.01, 2), seq=3), 2.2)) == []


def test_ema_grid_only_trades_towards_the_target_in_the_signal_direction():
    from cluster.messages import OrderStatus

    s, h = warmed()
    # Already short 10 (more than the target of about -7.1): above the prediction it never buys.
    coid = h.decide(s.limit(SYM, Side.SELL, 10.0, 101.0))
    h.report(coid, OrderStatus.FILLED, 10.0, 101.0)
    assert h.book(at(book(101.0, 101.02, seq=2), 2.1)) == []
    # Short 3 with a target near -7.1: sells the difference.
    t, ht = warmed()
    coid = ht.decide(t.limit(SYM, Side.SELL, 3.0, 101.0))
    ht.report(coid, OrderStatus.FILLED, 3.0, 101.0)
    (more,) = ht.book(at(book(101.0, 101.02, seq=2), 2.1))
    assert more.side is Side.SELL and more.qty == pytest.approx(-t.last_target[SYM] - 3.0, rel=1e-6)


def test_ema_grid_one_order_in_flight_and_params_validated():
    s, h = warmed()
    assert len(h.book(at(book(101.0, 101.02, seq=2), 2.1))) == 1
    assert h.book(at(book(101.0, 101.02, seq=3), 2.15)) == []  # the IOC is still working
    with pytest.raises(StrategyParamError, match="level"):
        grid_strategy(level=0.0)
    with pytest.raises(StrategyParamError, match="ema_span"):
        grid_strategy(ema_span=0)
    s.set_params({"ema_span": 3})
    assert s.predictors[SYM].alpha == pytest.approx(0.5)
    assert math.isfinite(s.predictors[SYM].prediction)
