"""Drawdown breaker and daily loss limit per strategy and per venue, each with its own action and reason."""

from __future__ import annotations

import json
import time

import pytest

from actors.risk import RiskService
from cluster.config import RiskLimits, RiskSection, SymbolSection, parse_config
from cluster.config_base import ConfigError
from cluster.messages import ExecutionReport, Fill, OrderIntent, OrderStatus, RejectReason, Side
from cluster.state_store import StateStore
from risk.engine import RiskEngine
from risk.limits import apply_overrides
from risk.trading_state import TradingState

S = 1_000_000_000
NOW = 1_700_000_000 * S
SYMS = [SymbolSection(symbol="BTCUSDT", venue="paper", price=100.0, tick_size=0.1, lot_size=0.001),
        SymbolSection(symbol="AAPL", venue="alpaca", price=100.0, tick_size=0.01, lot_size=1.0)]
_n = [0]


def engine(section: RiskSection) -> RiskEngine:
    eng = RiskEngine(section, SYMS, ["paper", "alpaca"])
    eng.set_mark("BTCUSDT", 100.0, NOW)
    eng.set_mark("AAPL", 100.0, NOW)
    return eng


def buy_filled(eng: RiskEngine, strategy: str, qty: float, symbol: str = "BTCUSDT", venue: str = "paper") -> None:
    """A filled buy at 100 (through check and reserve, like the actor)."""
    i = OrderIntent(strategy=strategy, venue=venue, symbol=symbol, side=Side.BUY, qty=qty, price=100.0)
    d = eng.check(i, NOW)
    assert d.approved, d
    _n[0] += 1
    o = eng.make_order(i, d, f"o{_n[0]}", NOW)
    eng.reserve(o, NOW)
    f = Fill(client_order_id=o.client_order_id, trade_id=f"t{_n[0]}", strategy=strategy, venue=venue, symbol=symbol,
             side=Side.BUY, price=100.0, qty=qty)
    eng.on_report(ExecutionReport(client_order_id=o.client_order_id, strategy=strategy, venue=venue, symbol=symbol,
                                  status=OrderStatus.FILLED, side=Side.BUY, order_qty=qty, fill=f))


def intent(strategy: str, side: Side = Side.BUY, qty: float = 1.0, symbol: str = "BTCUSDT", venue: str = "paper",
           price: float = 90.0) -> OrderIntent:
    return OrderIntent(strategy=strategy, venue=venue, symbol=symbol, side=side, qty=qty, price=price)


def test_strategy_drawdown_breaker_switches_only_that_strategy_and_says_why():
    section = RiskSection(defaults=RiskLimits(), max_drawdown_pct=None, stop_loss_atr=None,
                          strategies={"mm": RiskLimits(max_drawdown_pct=10, capital=1000)})
    eng = engine(section)
    buy_filled(eng, "mm", 5)  # 500 of mm's 1000
    buy_filled(eng, "obi", 5)
    eng.set_mark("BTCUSDT", 110.0, NOW + S)
    assert not eng.evaluate(NOW + S).trips
    assert eng.losses.scope_peaks["strategy:mm"] == pytest.approx(1050)
    eng.set_mark("BTCUSDT", 88.0, NOW + 2 * S)  # mm equity 940: 10.5% below its peak 1050
    events = eng.evaluate(NOW + 2 * S)
    assert [(t.scope, t.state, t.source) for t in events.trips] == [("strategy:mm", TradingState.REDUCING, "drawdown")]
    trip = events.trips[0]
    assert trip.values["drawdown_pct"] == pytest.approx(100 * 110 / 1050) and trip.values["peak_equity"] == 1050
    assert "strategy:mm" in trip.reason and "max_drawdown_pct 10" in trip.reason
    st = eng.trading_states["strategy:mm"]
    assert st.source == "drawdown" and "drawdown" in st.reason
    d = eng.check(intent("mm", price=88.0), NOW + 2 * S)
    assert d.reason is RejectReason.REDUCE_ONLY and "drawdown" in d.detail
    assert eng.check(intent("mm", Side.SELL, 5, price=88.0), NOW + 2 * S).approved  # reducing passes
    assert eng.check(intent("obi", price=88.0), NOW + 2 * S).approved  # obi has no breaker of its own
    drawdowns = eng.losses.drawdowns()
    assert drawdowns["strategy:mm"]["drawdown_pct"] == pytest.approx(100 * 110 / 1050)
    assert not eng.evaluate(NOW + 3 * S).trips  # said once


def test_venue_drawdown_uses_the_cluster_capital_and_its_own_loss_action():
    section = RiskSection(defaults=RiskLimits(), capital=10_000, max_drawdown_pct=50, loss_action="reducing",
                          stop_loss_atr=None, venues={"alpaca": RiskLimits(max_drawdown_pct=2, loss_action="halted")})
    eng = engine(section)
    buy_filled(eng, "eq", 10, symbol="AAPL", venue="alpaca")
    buy_filled(eng, "mm", 10)
    eng.set_mark("AAPL", 79.0, NOW + S)  # alpaca: -210 of 10000 = 2.1%
    events = eng.evaluate(NOW + S)
    assert [(t.scope, t.state) for t in events.trips] == [("venue:alpaca", TradingState.HALTED)]
    d = eng.check(intent("eq", Side.SELL, 1, symbol="AAPL", venue="alpaca", price=79.0), NOW + S)
    assert d.reason is RejectReason.TRADING_HALTED and "venue:alpaca" in d.detail and "drawdown" in d.detail
    assert eng.check(intent("mm", price=99.0), NOW + S).approved  # the paper venue trades on


def test_daily_loss_limit_per_venue_with_the_venues_action_rearms_next_day():
    section = RiskSection(defaults=RiskLimits(), max_drawdown_pct=None, stop_loss_atr=None, loss_action="reducing",
                          venues={"paper": RiskLimits(daily_loss_limit=30, loss_action="halted")},
                          strategies={"mm": RiskLimits(daily_loss_limit=1000)})
    eng = engine(section)
    eng.evaluate(NOW)
    buy_filled(eng, "mm", 10)
    eng.set_mark("BTCUSDT", 96.0, NOW + S)  # -40 on the venue
    events = eng.evaluate(NOW + S)
    assert [(t.scope, t.state, t.source) for t in events.trips] == [("venue:paper", TradingState.HALTED, "daily_loss")]
    assert events.trips[0].values == {"daily_loss": pytest.approx(40), "daily_loss_limit": 30}
    assert eng.check(intent("mm", Side.SELL, 1, price=96.0), NOW + S).reason is RejectReason.TRADING_HALTED
    events = eng.evaluate(NOW + 86_400 * S)
    assert events.rearmed == ["venue:paper"] and "venue:paper" not in eng.trading_states


def test_an_operator_clearing_a_scope_breaker_measures_from_now():
    section = RiskSection(defaults=RiskLimits(), max_drawdown_pct=None, stop_loss_atr=None,
                          strategies={"mm": RiskLimits(max_drawdown_pct=5, capital=1000)})
    eng = engine(section)
    buy_filled(eng, "mm", 5)
    eng.set_mark("BTCUSDT", 80.0, NOW + S)
    assert eng.evaluate(NOW + S).trips
    eng.losses.rearm("strategy:mm", "drawdown")
    eng.set_trading_state("strategy:mm", None)
    assert eng.losses.scope_peaks["strategy:mm"] == pytest.approx(900)
    assert not eng.evaluate(NOW + 2 * S).trips


def test_loss_breaker_config_is_validated_per_scope():
    base = {"symbols": [{"symbol": "BTCUSDT", "venue": "paper"}],
            "strategies": [{"name": "mm", "type": "market_maker", "symbols": ["BTCUSDT"]}]}
    cfg = parse_config({**base, "risk": {"strategies": {"mm": {"max_drawdown_pct": 3, "capital": 5000,
                                                                "loss_action": "halted", "daily_loss_limit": 200}},
                                         "venues": {"paper": {"max_drawdown_pct": 4}}}})
    mm = cfg.risk.strategies["mm"]
    assert (mm.max_drawdown_pct, mm.capital, mm.loss_action) == (3, 5000, "halted")
    for risk, key, words in (
        ({"defaults": {"max_drawdown_pct": 3}}, "risk.defaults.max_drawdown_pct", "top level"),
        ({"symbols": {"BTCUSDT": {"max_drawdown_pct": 3}}}, "risk.symbols.BTCUSDT.max_drawdown_pct", "not a symbol"),
        ({"strategies": {"mm": {"max_drawdown_pct": 150}}}, "risk.strategies.mm.max_drawdown_pct", "between 0 and 100"),
        ({"venues": {"paper": {"capital": -1}}}, "risk.venues.paper.capital", "> 0"),
    ):
        with pytest.raises(ConfigError) as exc:
            parse_config({**base, "risk": risk})
        assert exc.value.key == key and words in str(exc.value), str(exc.value)
    with pytest.raises(ConfigError) as exc:
        parse_config({**base, "risk": {"strategies": {"mm": {"loss_action": "panic"}}}})
    assert "loss_action" in str(exc.value)
    changed = apply_overrides(cfg.risk, {"strategies.mm.max_drawdown_pct": 1.5, "venues.paper.loss_action": "halted"})
    changed.validate({"BTCUSDT"}, {"mm"}, {"paper"})
    assert changed.strategies["mm"].max_drawdown_pct == 1.5 and changed.venues["paper"].loss_action == "halted"


def test_a_scope_trip_is_persisted_audited_shown_in_status_and_its_peak_survives_a_restart(redis_url):
    section = RiskSection(defaults=RiskLimits(), max_drawdown_pct=None, stop_loss_atr=None,
                          strategies={"mm": RiskLimits(max_drawdown_pct=10, capital=1000, loss_action="halted")})
    store = StateStore.from_url(redis_url, "t")
    svc = RiskService(section, SYMS, ["paper", "alpaca"], store)
    eng = svc.engine
    now = time.time_ns()
    eng.set_mark("BTCUSDT", 100.0, now)
    buy_filled(eng, "mm", 5)
    eng.set_mark("BTCUSDT", 120.0, now)
    svc.evaluate(force=True)
    eng.set_mark("BTCUSDT", 97.0, now)  # equity 985 vs peak 1100: 10.45%
    events = svc.evaluate(force=True)
    assert events is not None and [t.scope for t in events.trips] == ["strategy:mm"]
    saved = json.loads(store.trading_states()["strategy:mm"])
    assert saved["state"] == "halted" and saved["source"] == "drawdown" and "drawdown" in saved["reason"]
    audit = [json.loads(e["data"]) for e in store.audit_entries() if e.get("kind") == "trading_state"]
    assert audit[0]["scope"] == "strategy:mm" and audit[0]["values"]["peak_equity"] == pytest.approx(1100)
    snap = svc.snapshot()
    assert snap["trading_states"]["strategy:mm"]["state"] == "halted"
    assert snap["drawdowns"]["strategy:mm"]["peak_equity"] == pytest.approx(1100)
    assert json.loads(store.risk_values()["drawdowns"])["strategy:mm"]["max_drawdown_pct"] == 10

    again = RiskService(section, SYMS, ["paper", "alpaca"], store)  # restarted: the peak is not forgotten
    assert again.engine.losses.scope_peaks["strategy:mm"] == pytest.approx(1100)
    assert again.engine.trading_states["strategy:mm"].state is TradingState.HALTED
