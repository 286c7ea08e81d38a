"""Property tests: random interleaved order, fill and cancel streams from several strategies never exceed a limit.

The streams model strategies on different nodes: orders of every strategy arrive in any
order, and fills and cancels of any working order interleave with them. After every step
the invariants are recomputed from scratch (positions from fills, open quantity from the
orders still working) and must hold, and must equal what the engine keeps incrementally.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.config import RiskLimits, RiskSection, SymbolSection
from cluster.messages import ExecutionReport, Fill, Order, OrderIntent, OrderStatus, Side
from risk.engine import RiskEngine
from risk.exposure import CLUSTER

S = 1_000_000_000
NOW = 1_700_000_000 * S
PRICES = {"AAA": 100.0, "BBB": 20.0}
SYMS = [SymbolSection(symbol=s, venue="paper", price=p, lot_size=1.0, tick_size=0.01) for s, p in PRICES.items()]
STRATS = ["s1", "s2", "s3"]
POS_QTY = 6.0
STRAT_POS_QTY = 4.0
GROSS = 500.0
NET = 350.0
OPEN_PER_STRATEGY = 3
ORDERS_PER_S = 2
OPEN_LIMITS = {"s2": 1}  # s2 is bound by open orders, the others by the order rate

new_order = st.tuples(st.just("new"), st.sampled_from(STRATS), st.sampled_from(list(PRICES)),
                      st.sampled_from(list(Side)), st.integers(1, 5), st.integers(-3, 3))
op = st.one_of(
    new_order, new_order, new_order,  # orders arrive more often than fills and cancels
    st.tuples(st.just("fill"), st.integers(0, 50), st.integers(1, 5)),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("wait"), st.integers(1, 600)),
)


def make_engine() -> RiskEngine:
    section = RiskSection(
        defaults=RiskLimits(max_position_qty=POS_QTY, max_gross_exposure=GROSS, max_net_exposure=NET,
                            max_open_orders=OPEN_PER_STRATEGY, max_orders_per_s=ORDERS_PER_S),
        strategies={s: RiskLimits(max_position_qty=STRAT_POS_QTY, max_open_orders=OPEN_LIMITS.get(s)) for s in STRATS},
        max_drawdown_pct=None, stop_loss_atr=None, self_trade_prevention=False)
    eng = RiskEngine(section, SYMS, ["paper"])
    for s, p in PRICES.items():
        eng.set_mark(s, p, NOW)
    return eng


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=120))
def test_random_concurrent_streams_never_exceed_any_limit(ops):
    eng = make_engine()
    now = NOW
    working: list[Order] = []
    filled: dict[str, float] = {}
    positions: dict[tuple[str, str], float] = {}
    approvals: list[tuple[int, str]] = []
    for n, o in enumerate(ops):
        if o[0] == "new":
            _, strat, sym, side, qty, ticks = o
            intent = OrderIntent(strategy=strat, venue="paper", symbol=sym, side=side, qty=float(qty),
                                 price=PRICES[sym] + ticks * 0.01)
            for s, p in PRICES.items():  # marks keep arriving, at the same prices
                eng.set_mark(s, p, now)
            d = eng.check(intent, now)
            if d.approved:
                order = eng.make_order(intent, d, f"o{n}", now)
                eng.reserve(order, now)
                working.append(order)
                filled[order.client_order_id] = 0.0
                approvals.append((now, strat))
        elif o[0] == "fill" and working:
            order = working[o[1] % len(working)]
            qty = min(float(o[2]), order.qty - filled[order.client_order_id])
            filled[order.client_order_id] += qty
            done = filled[order.client_order_id] >= order.qty
            f = Fill(client_order_id=order.client_order_id, trade_id=f"t{n}", strategy=order.strategy, venue="paper",
                     symbol=order.symbol, side=order.side, price=order.price or 0.0, qty=qty)
            eng.on_report(ExecutionReport(client_order_id=order.client_order_id, strategy=order.strategy,
                                          venue="paper", symbol=order.symbol, side=order.side, order_qty=order.qty,
                                          fill=f, status=OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED))
            key = (order.strategy, order.symbol)
            positions[key] = positions.get(key, 0.0) + order.side.sign * qty
            if done:
                working.remove(order)
        elif o[0] == "cancel" and working:
            order = working.pop(o[1] % len(working))
            eng.on_report(ExecutionReport(client_order_id=order.client_order_id, strategy=order.strategy,
                                          venue="paper", symbol=order.symbol, side=order.side, order_qty=order.qty,
                                          status=OrderStatus.CANCELED))
        elif o[0] == "wait":
            now += o[1] * 1_000_000
        check_invariants(eng, working, filled, positions, approvals, now)


def check_invariants(eng, working, filled, positions, approvals, now) -> None:
    eps = 1e-6
    open_qty: dict[tuple[str, str, Side], float] = {}
    for o in working:
        for who in ("*", o.strategy):
            k = (who, o.symbol, o.side)
            open_qty[k] = open_qty.get(k, 0.0) + o.qty - filled[o.client_order_id]
    gross = long = short = 0.0
    for sym, price in PRICES.items():
        net = sum(q for (_, s), q in positions.items() if s == sym)
        buys, sells = open_qty.get(("*", sym, Side.BUY), 0.0), open_qty.get(("*", sym, Side.SELL), 0.0)
        # Cluster-wide position limit, counting every working order on each side.
        assert net + buys <= POS_QTY + eps and net - sells >= -POS_QTY - eps
        ob, os_ = eng.open_exposure(sym)
        assert abs(ob - buys) < eps and abs(os_ - sells) < eps
        gross += max(abs(net + buys), abs(net - sells)) * price
        long += (net + buys) * price
        short += (net - sells) * price
        for strat in STRATS:
            pos = positions.get((strat, sym), 0.0)
            b, s = open_qty.get((strat, sym, Side.BUY), 0.0), open_qty.get((strat, sym, Side.SELL), 0.0)
            assert pos + b <= STRAT_POS_QTY + eps and pos - s >= -STRAT_POS_QTY - eps
    assert gross <= GROSS + eps
    assert max(abs(long), abs(short)) <= NET + eps
    bucket = eng.exposure.buckets[CLUSTER]
    assert abs(bucket.gross - gross) < eps and abs(bucket.long - long) < eps and abs(bucket.short - short) < eps
    for strat in STRATS:
        n_open = sum(1 for o in working if o.strategy == strat)
        assert n_open <= OPEN_LIMITS.get(strat, OPEN_PER_STRATEGY) and eng.open_counts.get(f"strategy:{strat}", 0) == n_open
        recent = [t for t, s in approvals if s == strat and t > now - S]
        assert len(recent) <= ORDERS_PER_S
