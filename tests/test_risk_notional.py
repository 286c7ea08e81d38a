"""Notional intents (an amount of quote currency, qty 0, market orders only): checked as notional / fresh mid.

Pure logic: the engine is driven with explicit times.
"""

from __future__ import annotations

import math

import pytest

from cluster.config import RiskLimits, RiskSection, SymbolSection
from cluster.messages import (
    ExecutionReport,
    Fill,
    OrderIntent,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
)
from risk.engine import RiskEngine
from risk.trading_state import TradingState, TradingStatus

S = 1_000_000_000
NOW = 1_700_000_000 * S
SYMS = [SymbolSection(symbol="AAPL", venue="alpaca", price=200.0, tick_size=0.01, lot_size=1.0)]


def engine(**defaults) -> RiskEngine:
    limits = {"max_slippage_bps": 50.0, **defaults}
    section = RiskSection(defaults=RiskLimits(**limits), max_drawdown_pct=None, stop_loss_atr=None)
    eng = RiskEngine(section, SYMS, ["alpaca"])
    eng.set_mark("AAPL", 200.0, NOW)
    return eng


def notional(amount: float | None, side: Side = Side.BUY, qty: float = 0.0, order_type: OrderType = OrderType.MARKET,
             strategy: str = "s1", price: float | None = None) -> OrderIntent:
    return OrderIntent(strategy=strategy, venue="alpaca", symbol="AAPL", side=side, qty=qty, order_type=order_type,
                       price=price, notional=amount, tif=TimeInForce.IOC)


def test_notional_market_buy_is_checked_and_sent_as_its_quantity_estimate():
    eng = engine()
    d = eng.check(notional(500.0), NOW)
    assert d.approved, d
    assert d.values["qty"] == pytest.approx(2.5) and d.values["notional"] == 500.0 and d.values["mark"] == 200.0
    o = eng.make_order(notional(500.0), d, "n1", NOW)
    assert (o.qty, o.notional, o.order_type, o.price) == (pytest.approx(2.5), 500.0, OrderType.MARKET, None)
    eng.reserve(o, NOW)
    assert eng.open_exposure("AAPL") == (pytest.approx(2.5), 0.0)  # the estimate is reserved
    assert eng.open_counts["strategy:s1"] == 1


def test_every_limit_sees_the_estimated_quantity():
    eng = engine(max_position_qty=2.0)
    d = eng.check(notional(500.0), NOW)  # 2.5 shares at mid 200
    assert d.reason is RejectReason.POSITION_LIMIT and d.values["worst_case"] == pytest.approx(2.5)
    assert eng.check(notional(400.0), NOW).approved  # exactly 2
    eng = engine(max_order_qty=1.0)
    assert eng.check(notional(300.0), NOW).reason is RejectReason.MAX_ORDER_QTY
    eng = engine(max_gross_exposure=450.0)
    assert eng.check(notional(500.0), NOW).reason is RejectReason.GROSS_EXPOSURE


def test_order_notional_limits_use_the_notional_itself_and_the_lot_grid_does_not_apply():
    eng = engine(max_order_notional=450.0, min_order_notional=10.0)
    d = eng.check(notional(500.0), NOW)
    assert d.reason is RejectReason.MAX_ORDER_NOTIONAL and d.values["notional"] == 500.0
    d = eng.check(notional(5.0), NOW)
    assert d.reason is RejectReason.MIN_NOTIONAL
    d = eng.check(notional(333.0), NOW)  # 1.665 shares: not on the 1-share lot, but the venue sizes it
    assert d.approved and d.values["qty"] == pytest.approx(1.665)


@pytest.mark.parametrize("intent,words", [
    (notional(100.0, order_type=OrderType.LIMIT, price=199.0), "must be a market order"),
    (notional(100.0, qty=1.0), "carries qty 0"),
    (notional(0.0), "must be a positive number"),
    (notional(-5.0), "must be a positive number"),
    (notional(math.nan), "must be a positive number"),
    (notional(math.inf), "must be a positive number"),
])
def test_malformed_notional_intents_are_refused_with_a_clear_reason(intent, words):
    eng = engine()
    d = eng.check(intent, NOW)
    assert d.reason is RejectReason.INVALID_ORDER and words in d.detail, d
    assert not eng.reservations


def test_notional_needs_a_fresh_reference_price():
    eng = engine()
    eng.marks["AAPL"] = (200.0, NOW - 60 * S)
    d = eng.check(notional(100.0), NOW)
    assert d.reason is RejectReason.NO_REFERENCE_PRICE and "notional" in d.detail
    assert d.values["mark_age_s"] == pytest.approx(60)


def test_reducing_state_counts_the_estimate_and_fills_release_the_reservation():
    eng = engine()
    d = eng.check(notional(400.0), NOW)
    o = eng.make_order(notional(400.0), d, "n1", NOW)
    eng.reserve(o, NOW)
    # the venue fills 2.01 shares for the notional (the price moved): the position takes what was filled
    f = Fill(client_order_id="n1", trade_id="t1", strategy="s1", venue="alpaca", symbol="AAPL", side=Side.BUY,
             price=199.0, qty=2.01)
    eng.on_report(ExecutionReport(client_order_id="n1", strategy="s1", venue="alpaca", symbol="AAPL",
                                  status=OrderStatus.FILLED, side=Side.BUY, order_qty=2.0, fill=f))
    assert eng.positions[("s1", "AAPL")] == pytest.approx(2.01) and "n1" not in eng.reservations
    assert eng.open_exposure("AAPL") == (0.0, 0.0)
    eng.set_trading_state("strategy:s1", TradingStatus(state=TradingState.REDUCING, reason="r"))
    sell_all = eng.check(notional(402.0, side=Side.SELL), NOW + S)  # 2.01 shares at 200: shrinks the long
    assert sell_all.approved, sell_all
    too_much = eng.check(notional(404.0, side=Side.SELL), NOW + S)  # 2.02 shares would flip it
    assert too_much.reason is RejectReason.REDUCE_ONLY


def test_duplicates_of_a_notional_order_are_keyed_by_the_notional():
    eng = engine(duplicate_window_s=1.0)
    d = eng.check(notional(100.0), NOW)
    eng.reserve(eng.make_order(notional(100.0), d, "n1", NOW), NOW)
    assert eng.check(notional(100.0), NOW + S // 2).reason is RejectReason.DUPLICATE_ORDER
    eng.set_mark("AAPL", 201.0, NOW + S // 2)  # another estimate, the same notional: still a duplicate
    assert eng.check(notional(100.0), NOW + S // 2).reason is RejectReason.DUPLICATE_ORDER
    assert eng.check(notional(101.0), NOW + S // 2).approved
