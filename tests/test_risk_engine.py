"""The first risk rule set, pure logic: kill switch, order size, position limits with reservations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.config import RiskLimits, RiskSection, SymbolSection
from cluster.messages import (
    ExecutionReport,
    Fill,
    IntentAction,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    Position,
    RejectReason,
    Side,
)
from risk.engine import GLOBAL, RiskEngine, kill_scope_strategy, kill_scope_venue

NOW = 10**18
SYMS = [SymbolSection(symbol="BTCUSDT", venue="paper", price=100.0), SymbolSection(symbol="ETHUSDT", venue="paper")]


def engine(**limits) -> RiskEngine:
    section = RiskSection(defaults=RiskLimits(**limits))
    eng = RiskEngine(section, SYMS, ["paper"])
    eng.set_mark("BTCUSDT", 100.0, NOW)
    eng.set_mark("ETHUSDT", 10.0, NOW)
    return eng


def intent(side=Side.BUY, qty=1.0, price=100.0, strategy="s1", symbol="BTCUSDT", order_type=OrderType.LIMIT):
    return OrderIntent(strategy=strategy, venue="paper", symbol=symbol, side=side, qty=qty, price=price,
                       order_type=order_type)


def approve(eng: RiskEngine, i: OrderIntent, coid: str) -> Order:
    d = eng.check(i, NOW)
    assert d.approved, d
    o = Order(client_order_id=coid, strategy=i.strategy, venue=i.venue, symbol=i.symbol, side=i.side, qty=i.qty,
              order_type=i.order_type, price=i.price)
    eng.reserve(o, NOW)
    return o


def filled(o: Order, qty: float, trade_id: str, terminal: bool) -> ExecutionReport:
    f = Fill(client_order_id=o.client_order_id, trade_id=trade_id, strategy=o.strategy, venue=o.venue,
             symbol=o.symbol, side=o.side, price=o.price or 100.0, qty=qty)
    status = OrderStatus.FILLED if terminal else OrderStatus.PARTIALLY_FILLED
    return ExecutionReport(client_order_id=o.client_order_id, strategy=o.strategy, venue=o.venue, symbol=o.symbol,
                           status=status, side=o.side, order_qty=o.qty, fill=f)


def test_approves_within_limits_with_numbers():
    d = engine(max_order_notional=1000).check(intent(qty=2), NOW)
    assert d.approved and d.reason is RejectReason.NONE
    assert d.values["notional"] == 200.0 and d.values["max_order_notional"] == 1000


def test_kill_switch_scopes():
    eng = engine()
    for scope in (GLOBAL, kill_scope_venue("paper"), kill_scope_strategy("s1")):
        eng.set_kill_switch(scope, True)
        d = eng.check(intent(), NOW)
        assert not d.approved and d.reason is RejectReason.KILL_SWITCH and scope in d.detail
        eng.set_kill_switch(scope, False)
    eng.set_kill_switch(kill_scope_strategy("other"), True)
    assert eng.check(intent(), NOW).approved


def test_max_order_notional_and_qty():
    d = engine(max_order_notional=150).check(intent(qty=2), NOW)
    assert d.reason is RejectReason.MAX_ORDER_NOTIONAL and d.values["notional"] == 200
    d = engine(max_order_qty=1.5).check(intent(qty=2), NOW)
    assert d.reason is RejectReason.MAX_ORDER_QTY


def test_buy_priced_at_worse_of_limit_and_mark():
    eng = engine(max_order_notional=250)
    eng.set_mark("BTCUSDT", 130.0, NOW)
    d = eng.check(intent(qty=2, price=100), NOW)  # below the mark: valued at the mark
    assert d.reason is RejectReason.MAX_ORDER_NOTIONAL and d.values["notional"] == 260


def test_position_limit_counts_working_orders():
    eng = engine(max_position_qty=3)
    approve(eng, intent(qty=2), "a")
    d = eng.check(intent(qty=2), NOW)  # 2 working + 2 = 4 > 3
    assert d.reason is RejectReason.POSITION_LIMIT and d.values["worst_case"] == 4
    assert eng.check(intent(qty=1), NOW).approved
    # Sells are checked on their own side (priced above the resting buy: not a self-trade).
    assert eng.check(intent(side=Side.SELL, qty=3, price=101), NOW).approved


def test_reducing_order_allowed_over_limit():
    eng = engine(max_position_qty=1)
    eng.load([Position(strategy="s1", venue="paper", symbol="BTCUSDT", qty=5.0)], [])
    assert eng.check(intent(qty=1), NOW).reason is RejectReason.POSITION_LIMIT
    assert eng.check(intent(side=Side.SELL, qty=2), NOW).approved


def test_fill_moves_reservation_into_position_and_terminal_releases():
    eng = engine(max_position_qty=3)
    o = approve(eng, intent(qty=2), "a")
    eng.on_report(filled(o, 1.0, "t1", terminal=False))
    assert eng.net["BTCUSDT"] == 1.0 and eng.reservations["a"].remaining == 1.0
    eng.on_report(filled(o, 1.0, "t1", terminal=False))  # a duplicate fill is ignored
    assert eng.net["BTCUSDT"] == 1.0
    eng.on_report(filled(o, 1.0, "t2", terminal=True))
    assert eng.net["BTCUSDT"] == 2.0 and "a" not in eng.reservations


def test_limits_are_cluster_wide_across_strategies():
    eng = engine(max_position_qty=3)
    approve(eng, intent(qty=2, strategy="s1"), "a")
    assert eng.check(intent(qty=2, strategy="s2"), NOW).reason is RejectReason.POSITION_LIMIT


def test_per_strategy_limit_only_binds_that_strategy():
    section = RiskSection(defaults=RiskLimits(), strategies={"s1": RiskLimits(max_position_qty=1)})
    eng = RiskEngine(section, SYMS, ["paper"])
    eng.set_mark("BTCUSDT", 100.0, NOW)
    assert eng.check(intent(qty=2, strategy="s1"), NOW).reason is RejectReason.POSITION_LIMIT
    assert eng.check(intent(qty=2, strategy="s2"), NOW).approved


def test_market_order_needs_fresh_reference_price():
    eng = engine()
    eng.marks.clear()
    d = eng.check(intent(order_type=OrderType.MARKET, price=None), NOW)
    assert d.reason is RejectReason.NO_REFERENCE_PRICE
    eng.set_mark("BTCUSDT", 100.0, NOW - 60 * 10**9)  # a minute old
    assert eng.check(intent(order_type=OrderType.MARKET, price=None), NOW).reason is RejectReason.NO_REFERENCE_PRICE


def test_bad_quantities_and_unknown_symbol():
    eng = engine()
    assert eng.check(intent(qty=0), NOW).reason is RejectReason.INVALID_ORDER
    assert eng.check(intent(qty=float("nan")), NOW).reason is RejectReason.INVALID_ORDER
    assert eng.check(intent(price=-1), NOW).reason is RejectReason.INVALID_ORDER
    assert eng.check(intent(symbol="XRPUSDT"), NOW).reason is RejectReason.UNKNOWN_SYMBOL


def test_cancel_only_for_own_working_order():
    eng = engine()
    approve(eng, intent(), "a")
    cancel = OrderIntent(strategy="s1", venue="paper", symbol="BTCUSDT", action=IntentAction.CANCEL,
                         target_client_order_id="a")
    eng.set_kill_switch(GLOBAL, True)  # cancels pass even with the kill switch on
    assert eng.check(cancel, NOW).approved
    other = OrderIntent(strategy="s2", venue="paper", symbol="BTCUSDT", action=IntentAction.CANCEL,
                        target_client_order_id="a")
    assert eng.check(other, NOW).reason is RejectReason.UNKNOWN_ORDER


def test_load_rebuilds_positions_and_reservations():
    eng = engine(max_position_qty=3)
    o = Order(client_order_id="a", strategy="s1", venue="paper", symbol="BTCUSDT", side=Side.BUY, qty=2,
              order_type=OrderType.LIMIT, price=100.0, status=OrderStatus.NEW)
    eng.load([Position(strategy="s1", venue="paper", symbol="BTCUSDT", qty=1.0)], [o], {"paper:t9"})
    assert eng.net["BTCUSDT"] == 1.0 and eng.reservations["a"].remaining == 2
    assert eng.check(intent(qty=1), NOW).reason is RejectReason.POSITION_LIMIT


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["s1", "s2", "s3"]), st.sampled_from([Side.BUY, Side.SELL]),
                          st.integers(min_value=1, max_value=4), st.sampled_from(["fill", "partial", "cancel", "none"])),
                max_size=60))
def test_no_sequence_of_orders_and_fills_exceeds_the_limit(ops):
    """Whatever strategies send and however orders end, the worst-case position stays within the limit."""
    limit = 5.0
    eng = engine(max_position_qty=limit)
    n = 0
    for strategy, side, qty, outcome in ops:
        i = intent(side=side, qty=float(qty), strategy=strategy)
        if not eng.check(i, NOW).approved:
            continue
        n += 1
        o = approve(eng, i, f"o{n}")
        if outcome == "fill":
            eng.on_report(filled(o, o.qty, f"t{n}", terminal=True))
        elif outcome == "partial":
            eng.on_report(filled(o, 1.0, f"t{n}", terminal=o.qty == 1.0))
        elif outcome == "cancel":
            eng.on_report(ExecutionReport(client_order_id=o.client_order_id, strategy=strategy, venue="paper",
                                          symbol="BTCUSDT", status=OrderStatus.CANCELED, side=side, order_qty=o.qty))
        buys, sells = eng.open_exposure("BTCUSDT")
        pos = eng.net.get("BTCUSDT", 0.0)
        assert pos + buys <= limit + 1e-9
        assert pos - sells >= -limit - 1e-9


def test_a_strategy_scope_gives_more_room_than_the_defaults():
    """`defaults` is a fallback: a strategy's own rate limit replaces it, another strategy keeps it."""
    from cluster.config import parse_config

    data = {"symbols": [{"symbol": "BTCUSDT", "price": 100.0}],
            "strategies": [{"name": "mm", "type": "market_maker", "symbols": ["BTCUSDT"]},
                           {"name": "slow", "type": "market_maker", "symbols": ["BTCUSDT"]}],
            "risk": {"defaults": {"max_orders_per_min": 60, "max_order_notional": 1000.0},
                     "strategies": {"mm": {"max_orders_per_min": 1200}}}}
    cfg = parse_config(data)
    from risk.engine import Resolved

    mm = Resolved(cfg.risk, "mm", "paper", "BTCUSDT", cfg.symbol_map["BTCUSDT"])
    slow = Resolved(cfg.risk, "slow", "paper", "BTCUSDT", cfg.symbol_map["BTCUSDT"])
    assert mm.st_orders_m == 1200 and mm.where["strategy_max_orders_per_min"] == "strategy:mm"
    assert slow.st_orders_m == 60 and slow.where["strategy_max_orders_per_min"] == "defaults"
    assert mm.order_notional == slow.order_notional == 1000.0
