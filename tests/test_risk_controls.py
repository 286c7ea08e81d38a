"""Each risk control refuses an order for its reason, with its numbers, and leaves the state it should.

Pure logic (no Redis, no Ray): the engine is driven with explicit times.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from cluster.config import RiskLimits, RiskSection, SymbolSection
from cluster.config_base import ConfigError
from cluster.messages import (
    ExecutionReport,
    Fill,
    IntentAction,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
)
from risk.engine import RiskEngine
from risk.limits import DefaultLimits, ScheduleWindow, apply_overrides
from risk.losses import STOP_TAG
from risk.trading_state import TradingState, TradingStatus

S = 1_000_000_000
NOW = 1_700_000_000 * S  # Tue 2023-11-14 22:13:20 UTC
SYMS = [SymbolSection(symbol="BTCUSDT", venue="paper", price=100.0, tick_size=0.1, lot_size=0.001),
        SymbolSection(symbol="ETHUSDT", venue="paper", price=10.0, tick_size=0.01, lot_size=0.01),
        SymbolSection(symbol="AAPL", venue="alpaca", price=200.0, tick_size=0.01, lot_size=1.0)]


def engine(section: RiskSection | None = None, now: int = NOW, **defaults) -> RiskEngine:
    if section is None:
        section = RiskSection(defaults=RiskLimits(**defaults), max_drawdown_pct=None, stop_loss_atr=None,
                              self_trade_prevention=False)
    eng = RiskEngine(section, SYMS, ["paper", "alpaca"])
    eng.set_mark("BTCUSDT", 100.0, now)
    eng.set_mark("ETHUSDT", 10.0, now)
    eng.set_mark("AAPL", 200.0, now)
    return eng


def intent(side=Side.BUY, qty=1.0, price=100.0, strategy="s1", symbol="BTCUSDT", venue="paper",
           order_type=OrderType.LIMIT, tag=""):
    return OrderIntent(strategy=strategy, venue=venue, symbol=symbol, side=side, qty=qty, price=price,
                       order_type=order_type, tag=tag)


_n = [0]


def send(eng: RiskEngine, i: OrderIntent, now: int = NOW) -> Order:
    """Check, and on approval reserve like the risk actor does; returns the order."""
    d = eng.check(i, now)
    assert d.approved, d
    _n[0] += 1
    o = eng.make_order(i, d, f"o{_n[0]}", now)
    eng.reserve(o, now)
    return o


def fill(eng: RiskEngine, o: Order, qty: float | None = None, price: float | None = None, fee: float = 0.0,
         terminal: bool = True) -> None:
    _n[0] += 1
    q = o.qty if qty is None else qty
    f = Fill(client_order_id=o.client_order_id, trade_id=f"t{_n[0]}", strategy=o.strategy, venue=o.venue,
             symbol=o.symbol, side=o.side, price=price or o.price or 100.0, qty=q, fee=fee)
    eng.on_report(ExecutionReport(client_order_id=o.client_order_id, strategy=o.strategy, venue=o.venue,
                                  symbol=o.symbol, side=o.side, order_qty=o.qty, fill=f,
                                  status=OrderStatus.FILLED if terminal else OrderStatus.PARTIALLY_FILLED))


def cancel_report(eng: RiskEngine, o: Order) -> None:
    eng.on_report(ExecutionReport(client_order_id=o.client_order_id, strategy=o.strategy, venue=o.venue,
                                  symbol=o.symbol, side=o.side, order_qty=o.qty, status=OrderStatus.CANCELED))


def refused(eng: RiskEngine, i: OrderIntent, reason: RejectReason, now: int = NOW):
    before = (len(eng.reservations), dict(eng.open_counts))
    d = eng.check(i, now)
    assert not d.approved and d.reason is reason, d
    assert (len(eng.reservations), dict(eng.open_counts)) == before, "a refusal must not reserve anything"
    return d


# -- trading state --------------------------------------------------------------------------------------------
def test_halted_scope_refuses_everything_and_reducing_allows_only_shrinking_orders():
    eng = engine()
    long = send(eng, intent(qty=2))
    fill(eng, long)
    eng.set_trading_state("strategy:s1", TradingStatus(state=TradingState.HALTED, reason="desk says stop"))
    d = refused(eng, intent(side=Side.SELL, qty=1, price=100), RejectReason.TRADING_HALTED)
    assert "desk says stop" in d.detail and "strategy:s1" in d.detail
    assert eng.check(intent(strategy="s2"), NOW).approved  # other strategies unaffected

    eng.set_trading_state("strategy:s1", TradingStatus(state=TradingState.REDUCING, reason="r"))
    refused(eng, intent(qty=1), RejectReason.REDUCE_ONLY)  # would grow the long
    refused(eng, intent(side=Side.SELL, qty=3, price=100), RejectReason.REDUCE_ONLY)  # would flip it
    assert eng.check(intent(side=Side.SELL, qty=2, price=100), NOW).approved
    eng.set_trading_state("strategy:s1", None)
    assert eng.check(intent(qty=1), NOW).approved


def test_reducing_counts_working_orders_on_the_same_side():
    eng = engine()
    fill(eng, send(eng, intent(qty=2)))
    send(eng, intent(side=Side.SELL, qty=1.5, price=101))
    eng.set_trading_state("global", TradingStatus(state=TradingState.REDUCING, reason="r"))
    refused(eng, intent(side=Side.SELL, qty=1, price=101.5), RejectReason.REDUCE_ONLY)  # 1.5 + 1 > 2
    assert eng.check(intent(side=Side.SELL, qty=0.5, price=101.5), NOW).approved


# -- order size and venue filters -----------------------------------------------------------------------------
def test_min_notional_and_lot_step_are_checked_before_the_gateway():
    eng = engine(min_order_notional=50)
    d = refused(eng, intent(qty=0.4), RejectReason.MIN_NOTIONAL)
    assert d.values["notional"] == pytest.approx(40) and d.values["min_order_notional"] == 50
    d = refused(eng, intent(qty=1.0005), RejectReason.LOT_SIZE)
    assert d.values["lot_size"] == 0.001
    assert eng.check(intent(qty=0.501), NOW).approved


def test_tightest_scope_wins_and_is_named():
    section = RiskSection(defaults=RiskLimits(max_order_qty=10), symbols={"BTCUSDT": RiskLimits(max_order_qty=2)},
                          strategies={"s1": RiskLimits(max_order_qty=5)}, max_drawdown_pct=None)
    eng = engine(section)
    d = refused(eng, intent(qty=3), RejectReason.MAX_ORDER_QTY)
    assert "symbol:BTCUSDT" in d.detail
    assert eng.check(intent(qty=3, symbol="ETHUSDT", price=10), NOW).approved


# -- price collar and market orders ---------------------------------------------------------------------------
def test_price_collar_refuses_a_limit_far_from_mid():
    eng = engine(price_collar_bps=100)
    d = refused(eng, intent(price=102), RejectReason.PRICE_COLLAR)
    assert d.values["off_mid_bps"] == pytest.approx(200) and d.values["price_collar_bps"] == 100
    assert eng.check(intent(price=100.9), NOW).approved
    eng.marks.clear()  # no fresh mid: the collar cannot be checked, fail closed
    refused(eng, intent(price=100), RejectReason.NO_REFERENCE_PRICE)


def test_market_order_needs_slippage_and_leaves_as_protected_limit_ioc():
    eng = engine()
    d = refused(eng, intent(order_type=OrderType.MARKET, price=None), RejectReason.PRICE_COLLAR)
    assert "max_slippage_bps" in d.detail
    eng = engine(max_slippage_bps=50)
    eng.marks["BTCUSDT"] = (100.0, NOW - 60 * S)  # a minute old
    refused(eng, intent(order_type=OrderType.MARKET, price=None), RejectReason.NO_REFERENCE_PRICE)
    eng.set_mark("BTCUSDT", 100.0, NOW)
    buy = send(eng, intent(order_type=OrderType.MARKET, price=None, qty=1))
    assert buy.order_type is OrderType.LIMIT and buy.tif is TimeInForce.IOC and buy.price == pytest.approx(100.5)
    sell = send(eng, intent(order_type=OrderType.MARKET, price=None, side=Side.SELL, qty=1, strategy="s2"))
    assert sell.price == pytest.approx(99.5)


# -- positions and exposure -----------------------------------------------------------------------------------
def test_position_notional_counts_working_orders():
    eng = engine(max_position_notional=250)
    send(eng, intent(qty=2))
    d = refused(eng, intent(qty=1, strategy="s2"), RejectReason.POSITION_NOTIONAL_LIMIT)
    assert d.values["worst_case_notional"] == pytest.approx(300)


def test_gross_exposure_across_symbols_and_strategies():
    eng = engine(max_gross_exposure=500)
    fill(eng, send(eng, intent(qty=3)))  # 300 long BTC
    send(eng, intent(side=Side.SELL, qty=15, price=10, symbol="ETHUSDT", strategy="s2"))  # 150 short ETH working
    d = refused(eng, intent(side=Side.SELL, qty=6, price=10, symbol="ETHUSDT", strategy="s3"),
                RejectReason.GROSS_EXPOSURE)
    assert d.values["gross_exposure"] == pytest.approx(510)
    assert eng.check(intent(side=Side.SELL, qty=5, price=10, symbol="ETHUSDT", strategy="s3"), NOW).approved
    assert eng.check(intent(side=Side.SELL, qty=2, price=100), NOW).approved  # shrinks BTC: gross does not grow


def test_net_exposure_limits_directional_risk_but_allows_hedges():
    eng = engine(max_net_exposure=350)
    fill(eng, send(eng, intent(qty=3)))
    d = refused(eng, intent(qty=6, price=10, symbol="ETHUSDT", strategy="s2"), RejectReason.NET_EXPOSURE)
    assert d.values["net_exposure"] == pytest.approx(360)
    assert eng.check(intent(side=Side.SELL, qty=30, price=10, symbol="ETHUSDT", strategy="s2"), NOW).approved


def test_strategy_exposure_limit_binds_only_that_strategy():
    section = RiskSection(defaults=RiskLimits(), strategies={"s1": RiskLimits(max_gross_exposure=150)},
                          max_drawdown_pct=None)
    eng = engine(section)
    send(eng, intent(qty=1))
    refused(eng, intent(qty=6, price=10, symbol="ETHUSDT"), RejectReason.GROSS_EXPOSURE)
    assert eng.check(intent(qty=6, price=10, symbol="ETHUSDT", strategy="s2"), NOW).approved


# -- rates, open orders, duplicates, self-trades ---------------------------------------------------------------
def test_default_is_60_orders_per_minute_per_strategy():
    section = RiskSection(max_drawdown_pct=None, stop_loss_atr=None)
    assert section.defaults.max_orders_per_min == 60
    eng = engine(section)
    for k in range(60):
        send(eng, intent(qty=0.001, price=100 + k * 0.01), NOW + k * 5 * 10**7)
    eng.set_mark("BTCUSDT", 100.0, NOW + 6 * S)
    d = refused(eng, intent(qty=0.001, price=99), RejectReason.ORDER_RATE, NOW + 6 * S)
    assert d.values["orders_last_min"] == 60 and "strategy:s1" in d.detail
    assert eng.check(intent(qty=0.001, price=99, strategy="s2"), NOW + 6 * S).approved  # per strategy
    eng.set_mark("BTCUSDT", 100.0, NOW + 61 * S)
    assert eng.check(intent(qty=0.001, price=99), NOW + 61 * S).approved  # the window moved on


def test_orders_per_second_per_venue_and_cancel_rate():
    section = RiskSection(defaults=RiskLimits(max_cancels_per_s=1), venues={"paper": RiskLimits(max_orders_per_s=2)},
                          max_drawdown_pct=None)
    eng = engine(section)
    a = send(eng, intent(strategy="a"))
    b = send(eng, intent(strategy="b", price=99))
    d = refused(eng, intent(strategy="c", price=98), RejectReason.ORDER_RATE)
    assert "venue:paper" in d.detail
    assert eng.check(intent(strategy="c", price=98), NOW + S + 1).approved
    cancel = OrderIntent(strategy="a", venue="paper", symbol="BTCUSDT", action=IntentAction.CANCEL,
                         target_client_order_id=a.client_order_id)
    assert eng.check(cancel, NOW).approved
    again = OrderIntent(strategy="a", venue="paper", symbol="BTCUSDT", action=IntentAction.CANCEL,
                        target_client_order_id=a.client_order_id)
    assert eng.check(again, NOW + 10).reason is RejectReason.CANCEL_RATE
    other = OrderIntent(strategy="b", venue="paper", symbol="BTCUSDT", action=IntentAction.CANCEL,
                        target_client_order_id=b.client_order_id)
    assert eng.check(other, NOW + 10).approved  # per strategy


def test_max_open_orders_until_one_ends():
    eng = engine(max_open_orders=2)
    a = send(eng, intent(price=99))
    send(eng, intent(price=98))
    d = refused(eng, intent(price=97), RejectReason.MAX_OPEN_ORDERS)
    assert d.values["open_orders"] == 2
    cancel_report(eng, a)
    assert eng.open_counts["strategy:s1"] == 1
    assert eng.check(intent(price=97), NOW).approved


def test_duplicate_order_within_window():
    eng = engine(duplicate_window_s=1.0)
    send(eng, intent())
    d = refused(eng, intent(), RejectReason.DUPLICATE_ORDER, NOW + S // 2)
    assert d.values["age_s"] == pytest.approx(0.5)
    assert eng.check(intent(price=100.1), NOW + S // 2).approved  # another price
    assert eng.check(intent(strategy="s2"), NOW + S // 2).approved  # another strategy
    assert eng.check(intent(), NOW + 2 * S).approved


def test_self_trade_with_the_clusters_own_resting_order():
    eng = engine(RiskSection(defaults=RiskLimits(), max_drawdown_pct=None))
    send(eng, intent(side=Side.SELL, price=101, strategy="mm"))
    d = refused(eng, intent(price=101.5, strategy="obi"), RejectReason.SELF_TRADE)
    assert d.values["own_resting_price"] == 101
    assert eng.check(intent(price=100.9, strategy="obi"), NOW).approved
    resting = send(eng, intent(price=99, strategy="mm"))
    refused(eng, intent(side=Side.SELL, price=98, strategy="obi"), RejectReason.SELF_TRADE)
    cancel_report(eng, resting)
    assert eng.check(intent(side=Side.SELL, price=98, strategy="obi", qty=1), NOW).approved


# -- loss controls ------------------------------------------------------------------------------------------------
def test_drawdown_breaker_switches_to_reducing_and_says_why():
    eng = engine(RiskSection(defaults=RiskLimits(), capital=10_000, max_drawdown_pct=5, stop_loss_atr=None))
    fill(eng, send(eng, intent(qty=10)), price=100.0)
    eng.set_mark("BTCUSDT", 110.0, NOW + S)
    assert not eng.evaluate(NOW + S).trips
    assert eng.losses.peak_equity == pytest.approx(10_100)
    eng.set_mark("BTCUSDT", 104.0, NOW + 2 * S)  # equity 10040: 0.6% down
    assert not eng.evaluate(NOW + 2 * S).trips
    eng.set_mark("BTCUSDT", 50.0, NOW + 3 * S)  # equity 9500: 5.9% below the peak
    events = eng.evaluate(NOW + 3 * S)
    assert [(t.scope, t.state, t.source) for t in events.trips] == [("global", TradingState.REDUCING, "drawdown")]
    assert events.trips[0].values["drawdown_pct"] == pytest.approx(5.94, abs=0.01)
    d = refused(eng, intent(qty=1, price=50), RejectReason.REDUCE_ONLY, NOW + 3 * S)
    assert "drawdown" in d.detail
    assert eng.check(intent(side=Side.SELL, qty=10, price=50), NOW + 3 * S).approved
    assert not eng.evaluate(NOW + 4 * S).trips  # already tripped: said once


def test_daily_loss_limit_per_strategy_halts_it_and_rearms_next_day():
    section = RiskSection(defaults=RiskLimits(), strategies={"s1": RiskLimits(daily_loss_limit=50)},
                          loss_action="halted", max_drawdown_pct=None, stop_loss_atr=None)
    eng = engine(section)
    eng.evaluate(NOW)  # the day starts
    fill(eng, send(eng, intent(qty=10)), price=100.0, fee=1.0)
    eng.set_mark("BTCUSDT", 94.0, NOW + S)  # -60 - 1 fee
    events = eng.evaluate(NOW + S)
    assert [(t.scope, t.state) for t in events.trips] == [("strategy:s1", TradingState.HALTED)]
    assert events.trips[0].values["daily_loss"] == pytest.approx(61)
    refused(eng, intent(side=Side.SELL, qty=1, price=94), RejectReason.TRADING_HALTED, NOW + S)
    assert eng.check(intent(qty=1, price=94, strategy="s2"), NOW + S).approved
    events = eng.evaluate(NOW + 86_400 * S)
    assert events.rearmed == ["strategy:s1"] and "strategy:s1" not in eng.trading_states


def test_stop_loss_at_two_atr_generates_an_exit_in_the_strategys_name():
    section = RiskSection(defaults=RiskLimits(), max_drawdown_pct=None, atr_bar_s=1, atr_period=3)
    eng = engine(section)
    assert section.stop_loss_atr == 2.0
    fill(eng, send(eng, intent(qty=2)), price=100.0)
    for k, px in enumerate([100, 101, 100, 101, 100]):  # bars of range 1: ATR 1
        eng.set_mark("BTCUSDT", px, NOW + k * S)
        eng.set_mark("BTCUSDT", px + 1, NOW + k * S + S // 2)
    atr = eng.losses.atr.atr("BTCUSDT")
    assert atr == pytest.approx(4 / 3)  # true ranges 1, 2, 1 of the last three closed bars
    assert eng.evaluate(NOW + 5 * S).exits == []
    eng.set_mark("BTCUSDT", 96.5, NOW + 6 * S)  # closes a bar (ATR 5/3): below 100 - 2 x ATR = 96.67
    exits = eng.evaluate(NOW + 6 * S).exits
    assert len(exits) == 1
    x = exits[0]
    assert (x.strategy, x.side, x.qty, x.order_type, x.tag) == ("s1", Side.SELL, 2.0, OrderType.MARKET, STOP_TAG)
    assert eng.evaluate(NOW + 6 * S + 1).exits == []  # one exit per cooldown


# -- schedules ------------------------------------------------------------------------------------------------------
def _ns(local: str, zone: str) -> int:
    return int(dt.datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(zone)).timestamp() * S)


def test_trading_window_for_a_venue_refuses_new_risk_outside_market_hours():
    hours = ScheduleWindow(name="nyse", scope="venue:alpaca", kind="trading", timezone="America/New_York",
                           days=["mon", "tue", "wed", "thu", "fri"], start="09:30", end="16:00")
    section = RiskSection(defaults=RiskLimits(), schedules=[hours], max_drawdown_pct=None)
    open_ = _ns("2024-03-12T10:00", "America/New_York")  # Tuesday
    eng = engine(section, now=open_)
    aapl = intent(qty=1, price=200, symbol="AAPL", venue="alpaca")
    held = send(eng, aapl, open_)
    fill(eng, held, price=200)
    evening = _ns("2024-03-12T17:00", "America/New_York")
    eng.set_mark("AAPL", 200.0, evening)
    d = refused(eng, intent(qty=1, price=200.1, symbol="AAPL", venue="alpaca"), RejectReason.OUTSIDE_TRADING_HOURS,
                evening)
    assert "nyse" in d.detail
    assert eng.check(intent(side=Side.SELL, qty=1, price=200, symbol="AAPL", venue="alpaca"), evening).approved
    assert eng.check(intent(qty=1, price=100), evening).approved  # other venues unaffected
    saturday = _ns("2024-03-16T11:00", "America/New_York")
    eng.set_mark("AAPL", 200.0, saturday)
    refused(eng, intent(qty=1, price=200.1, symbol="AAPL", venue="alpaca"), RejectReason.OUTSIDE_TRADING_HOURS,
            saturday)


def test_weekly_pause_from_friday_evening_to_saturday_evening():
    pause = ScheduleWindow(name="shabbat", scope="global", kind="pause", timezone="Asia/Jerusalem",
                           start="fri 16:30", end="sat 17:45")
    section = RiskSection(defaults=RiskLimits(), schedules=[pause], max_drawdown_pct=None)
    friday_night = _ns("2024-03-15T20:00", "Asia/Jerusalem")
    eng = engine(section, now=friday_night)
    d = refused(eng, intent(), RejectReason.TRADING_PAUSED, friday_night)
    assert "shabbat" in d.detail
    sunday = _ns("2024-03-17T09:00", "Asia/Jerusalem")
    eng.set_mark("BTCUSDT", 100.0, sunday)
    assert eng.check(intent(), sunday).approved


def test_schedule_validation_names_the_key():
    bad = RiskSection(schedules=[ScheduleWindow(name="x", start="fri 25:00", end="sat 10:00")])
    with pytest.raises(ConfigError) as exc:
        bad.validate({"BTCUSDT"}, set(), {"paper"})
    assert exc.value.key == "risk.schedules[0]"
    with pytest.raises(ConfigError):
        RiskSection(schedules=[ScheduleWindow(name="x", scope="venue:nope", days=["mon"], start="09:00",
                                              end="10:00")]).validate({"BTCUSDT"}, set(), {"paper"})


# -- limits changed while running -------------------------------------------------------------------------------
def test_overrides_are_validated_and_take_effect():
    section = RiskSection(max_drawdown_pct=None)
    eng = engine(section)
    assert eng.check(intent(qty=3), NOW).approved
    new = apply_overrides(section, {"symbols.BTCUSDT.max_order_qty": 2, "defaults.max_orders_per_min": None})
    new.validate({"BTCUSDT", "ETHUSDT", "AAPL"}, None, {"paper", "alpaca"})
    eng.set_limits(new)
    refused(eng, intent(qty=3), RejectReason.MAX_ORDER_QTY)
    assert new.defaults.max_orders_per_min is None and new.defaults.max_order_notional == 50_000
    for key, value in (("symbols.BTCUSDT.max_order_qty", -1), ("defaults.nope", 1), ("kill_switch", True),
                       ("symbols.BTCUSDT.max_net_exposure", 5), ("loss_action", "panic")):
        with pytest.raises(ConfigError):
            apply_overrides(section, {key: value}).validate({"BTCUSDT"}, None, {"paper"})
    with pytest.raises(ConfigError) as err:  # a bad value names the entry it is in, not `symbols[...]`
        apply_overrides(section, {"symbols.ETHUSDT.max_order_qty": 1, "symbols.BTCUSDT.max_position_qty": "abc"})
    assert str(err.value) == "config error at risk.symbols.BTCUSDT.max_position_qty: Expected `float | null`, got `str`"


def test_default_limits_keep_their_defaults_when_one_is_configured():
    d = DefaultLimits(max_order_notional=5000)
    assert (d.max_orders_per_min, d.max_slippage_bps, d.max_order_notional) == (60, 50, 5000)
