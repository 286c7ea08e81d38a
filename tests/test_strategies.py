"""The two paper strategies and the registry, without Ray: synthetic books in, intents out.

Decisions and execution reports are fed back exactly as `StrategyHost` does, so the
strategies' working-order and position bookkeeping is the one the cluster runs.
"""

from __future__ import annotations

import math
import random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.messages import (
    BookUpdate,
    ExecutionReport,
    Fill,
    IntentAction,
    OrderIntent,
    OrderStatus,
    RejectReason,
    RiskDecision,
    Side,
    TimeInForce,
)
from strategies import STRATEGY_TYPES, create_strategy
from strategies.base import StrategyParamError
from strategies.imbalance import OrderBookImbalance, weighted_imbalance
from strategies.market_maker import (
    MarketMaker,
    avellaneda_stoikov_quotes,
    infer_tick,
    realized_vol_bps,
    round_to_tick,
)

SYM = "SOLUSDT"
VENUES = {SYM: "paper"}
DT_NS = 50_000_000  # 20 updates/s


def book(bid: float, ask: float, tick: float = 0.01, bid_qty: list[float] | None = None,
         ask_qty: list[float] | None = None, seq: int = 1, symbol: str = SYM) -> BookUpdate:
    bq = bid_qty or [1.0] * 5
    aq = ask_qty or [1.0] * 5
    return BookUpdate(venue="paper", symbol=symbol, seq=seq,
                      bids=[(round(bid - i * tick, 8), q) for i, q in enumerate(bq)],
                      asks=[(round(ask + i * tick, 8), q) for i, q in enumerate(aq)],
                      exchange_ts_ns=10**18 + seq * DT_NS)


class Host:
    """Plays the host and an always-approving risk actor; counts client order ids."""

    def __init__(self, strategy):
        self.s = strategy
        self.n = 0
        self.sent: list[OrderIntent] = []

    def book(self, update: BookUpdate, approve: bool = True) -> list[OrderIntent]:
        intents = self.s.handle_book(update)
        for i in intents:
            self.decide(i, approve)
        return intents

    def decide(self, intent: OrderIntent, approve: bool = True,
               reason: RejectReason = RejectReason.POSITION_LIMIT) -> str | None:
        self.sent.append(intent)
        coid = None
        if approve and intent.action is IntentAction.NEW:
            self.n += 1
            coid = f"c{self.n}"
        d = RiskDecision(approved=approve, reason=RejectReason.NONE if approve else reason, strategy=intent.strategy,
                         venue=intent.venue, symbol=intent.symbol, action=intent.action, client_order_id=coid)
        self.s.handle_decision(d, intent)
        return coid

    def report(self, coid: str, status: OrderStatus, fill_qty: float = 0.0, price: float | None = None):
        o = self.s.working[coid]
        qty = o.qty if isinstance(o, OrderIntent) else o.order_qty
        done = 0.0 if isinstance(o, OrderIntent) else o.filled_qty
        fill = None
        if fill_qty:
            fill = Fill(client_order_id=coid, trade_id=f"t-{coid}-{done + fill_qty}", strategy=o.strategy,
                        venue=o.venue, symbol=o.symbol, side=o.side, price=price or o.price or 0.0, qty=fill_qty)
        return self.s.handle_report(ExecutionReport(
            client_order_id=coid, strategy=o.strategy, venue=o.venue, symbol=o.symbol, status=status, side=o.side,
            order_qty=qty, filled_qty=done + fill_qty, price=o.price, fill=fill))

    def working(self, side: Side | None = None) -> list[str]:
        return self.s.working_orders(SYM, side)


def news(intents: list[OrderIntent], side: Side | None = None) -> list[OrderIntent]:
    return [i for i in intents if i.action is IntentAction.NEW and (side is None or i.side is side)]


def cancels(intents: list[OrderIntent]) -> list[OrderIntent]:
    return [i for i in intents if i.action is IntentAction.CANCEL]


# -- pure functions ----------------------------------------------------------------------------------


def test_avellaneda_stoikov_hand_computed():
    # r = 100 - 2 * 0.1 * 2^2 * 1 = 99.2 ; d = 0.1 * 4 / 2 + ln(1 + 0.1 / 1.5) / 0.1 = 0.2 + 0.6453852
    bid, ask = avellaneda_stoikov_quotes(100.0, 2.0, 0.1, 2.0, 1.0, 1.5)
    assert bid == pytest.approx(99.2 - 0.8453852, abs=1e-6)
    assert ask == pytest.approx(99.2 + 0.8453852, abs=1e-6)
    # Flat inventory: symmetric around the mid. Short: the reservation price moves up.
    b0, a0 = avellaneda_stoikov_quotes(100.0, 0.0, 0.1, 2.0, 1.0, 1.5)
    assert (b0 + a0) / 2 == pytest.approx(100.0)
    bs, as_ = avellaneda_stoikov_quotes(100.0, -1.0, 0.1, 2.0, 1.0, 1.5)
    assert (bs + as_) / 2 == pytest.approx(100.4)


def test_weighted_imbalance_hand_worked():
    bids = [(99.0, 4.0), (98.0, 2.0), (97.0, 8.0)]
    asks = [(101.0, 1.0), (102.0, 2.0), (103.0, 100.0)]
    # Two levels, decay 0.5: B = 4 + 0.5*2 = 5, A = 1 + 0.5*2 = 2 -> (5 - 2) / 7
    assert weighted_imbalance(bids, asks, 2, 0.5) == pytest.approx(3 / 7)
    # Three levels, decay 0.5: B = 5 + 0.25*8 = 7, A = 2 + 0.25*100 = 27 -> -20 / 34
    assert weighted_imbalance(bids, asks, 3, 0.5) == pytest.approx(-20 / 34)
    assert weighted_imbalance([], [], 5, 0.5) == 0.0
    assert weighted_imbalance(bids, [], 5, 0.5) == 1.0


@given(st.lists(st.tuples(st.floats(1, 1e6), st.floats(0, 1e6)), max_size=8),
       st.lists(st.tuples(st.floats(1, 1e6), st.floats(0, 1e6)), max_size=8),
       st.integers(1, 10), st.floats(0.01, 1.0))
def test_weighted_imbalance_is_bounded(bids, asks, levels, decay):
    assert -1.0 <= weighted_imbalance(bids, asks, levels, decay) <= 1.0


def test_realized_vol_tick_and_rounding():
    # Returns of +1 bp and -1 bp twice over 0.2 s: sqrt(4 / 0.2) bps per sqrt(second).
    mids = [100.0, 100.01, 100.0, 100.01, 100.0]
    times = [i * DT_NS for i in range(1, 6)]
    r = math.log(100.01 / 100.0) * 1e4
    assert realized_vol_bps(mids, times) == pytest.approx(math.sqrt(4 * r * r / 0.2))
    assert realized_vol_bps(mids) == pytest.approx(math.sqrt(4 * r * r / 0.2))  # no timestamps: 20/s
    assert realized_vol_bps([100.0]) == 0.0
    b = book(60000.0, 60000.2, tick=0.1)
    assert infer_tick(b.bids, b.asks) == 0.1
    assert round_to_tick(60000.149, 0.1, up=False) == 60000.1
    assert round_to_tick(60000.101, 0.1, up=True) == 60000.2
    assert round_to_tick(59999.9 + 1e-9, 0.1, up=True) == 59999.9  # float noise stays on the grid point


# -- market maker ------------------------------------------------------------------------------------


def mm(**params) -> MarketMaker:
    base = {"order_qty": 1.0, "max_position": 2.0, "requote_bps": 1.0, "reject_backoff_updates": 0}
    return MarketMaker("mm", [SYM], VENUES, {**base, **params})


def wiggle(host: Host, n: int = 10, start: int = 1, approve: bool = True) -> list[OrderIntent]:
    """n updates of a 4-tick book whose mid alternates between 100.00 and 100.01."""
    out = []
    for k in range(start, start + n):
        m = 100.0 if k % 2 else 100.01
        out = host.book(book(round(m - 0.02, 2), round(m + 0.02, 2), seq=k), approve=approve)
    return out


def test_mm_quotes_both_sides_around_reservation_price():
    s = mm()
    h = Host(s)
    assert h.book(book(99.98, 100.02, seq=1)) == []  # one mid: no volatility yet
    intents = h.book(book(99.98, 100.02, seq=2))
    bid, ask = news(intents, Side.BUY), news(intents, Side.SELL)
    assert len(bid) == 1 and len(ask) == 1
    # Flat, zero vol: A-S half spread ln(1.1)/0.1 = 0.953 bp = 0.0095 inside a 2 bp touch half spread.
    assert bid[0].price == 99.99 and ask[0].price == 100.01
    assert bid[0].qty == ask[0].qty == 1.0 and bid[0].tif is TimeInForce.GTC


def test_mm_joins_the_touch_when_the_model_spread_is_wider():
    # kappa small -> the A-S half spread is ~10 bp, wider than the market's: the quotes join the touch.
    s = mm(kappa=0.01)
    h = Host(s)
    h.book(book(99.98, 100.02, seq=1))
    intents = h.book(book(99.98, 100.02, seq=2))
    assert [i.price for i in news(intents)] == [99.98, 100.02]
    # A min spread wider than the market's wins over the touch.
    s = mm(kappa=0.01, min_spread_bps=10.0)
    h = Host(s)
    h.book(book(99.98, 100.02, seq=1))
    assert [i.price for i in news(h.book(book(99.98, 100.02, seq=2)))] == [99.95, 100.05]


def test_mm_quotes_never_cross_and_stay_on_grid():
    s = mm(order_qty=1.0, max_position=100.0, gamma=1.0, horizon_s=100.0)
    h = Host(s)
    wiggle(h, 10, approve=False)
    # Long a lot with a strong skew: the ask is pulled to one tick above the best bid, never through it.
    s.positions[SYM] = 3.0
    intents = news(s.handle_book(book(99.99, 100.01, seq=50)))
    prices = {i.side: i.price for i in intents}
    assert prices[Side.SELL] == 100.0
    assert prices[Side.BUY] < 99.99
    for p in prices.values():
        assert abs(p * 100 - round(p * 100)) < 1e-6


def test_mm_skews_with_inventory_and_centres_on_reservation():
    flat, longp = mm(max_position=10.0, gamma=0.01), mm(max_position=10.0, gamma=0.01)
    hf, hl = Host(flat), Host(longp)
    wiggle(hf, 20, approve=False)
    wiggle(hl, 20, approve=False)
    # Get the long one long 2 lots through a real decision + fill report.
    intent = longp.limit(SYM, Side.BUY, 2.0, 100.0)
    coid = hl.decide(intent)
    hl.report(coid, OrderStatus.FILLED, 2.0, 100.0)
    assert longp.positions[SYM] == 2.0
    u = book(99.98, 100.02, seq=21)
    qf = {i.side: i.price for i in news(hf.book(u))}
    ql = {i.side: i.price for i in news(hl.book(u))}
    assert ql[Side.BUY] < qf[Side.BUY] and ql[Side.SELL] <= qf[Side.SELL]
    # Centred on r = mid - q * gamma * sigma^2 * T (in bps of mid), to within the one-tick rounding:
    # sigma^2 = 1 bp^2 / 0.05 s = 20, so r = 100 * (1 - 2 * 0.01 * 20 * 5 / 1e4) = 99.98.
    sigma = realized_vol_bps(list(longp.mids[SYM]), list(longp.times[SYM]))
    assert sigma**2 == pytest.approx(20.0, rel=0.01)
    r = 100.0 * (1 - 2.0 * 0.01 * sigma**2 * 5.0 / 1e4)
    assert ql[Side.BUY] < r < ql[Side.SELL]
    assert abs((ql[Side.BUY] + ql[Side.SELL]) / 2 - r) <= 0.01
    assert (ql[Side.BUY], ql[Side.SELL]) == (99.96, 100.0)


def test_mm_no_buy_quote_when_long_at_max_and_cancels_the_working_one():
    s = mm(max_position=2.0)
    h = Host(s)
    intents = h.book(book(99.98, 100.02, seq=1)) + h.book(book(99.98, 100.02, seq=2))
    assert len(news(intents)) == 2
    buy = h.working(Side.BUY)[0]
    h.report(buy, OrderStatus.NEW)
    h.report(buy, OrderStatus.PARTIALLY_FILLED, 0.5)
    # Long 0.5 with 0.5 still working: worst case 1.0 <= 2, keep it.
    assert news(h.book(book(99.98, 100.02, seq=3)), Side.BUY) == []
    assert h.working(Side.BUY) == [buy]
    h.report(buy, OrderStatus.FILLED, 0.5)
    other = h.s.limit(SYM, Side.BUY, 1.0, 99.9)
    h.report(h.decide(other), OrderStatus.FILLED, 1.0)
    assert s.positions[SYM] == 2.0  # at max long
    for seq in range(4, 10):
        intents = h.book(book(99.98, 100.02, seq=seq))
        assert news(intents, Side.BUY) == []
    assert h.working(Side.BUY) == []
    assert len(h.working(Side.SELL)) == 1  # the reducing side is still quoted
    # A working buy left over when the position reaches the max is cancelled.
    s2 = mm(max_position=2.0)
    h2 = Host(s2)
    h2.book(book(99.98, 100.02, seq=1))
    h2.book(book(99.98, 100.02, seq=2))
    extra = h2.decide(s2.limit(SYM, Side.BUY, 2.0, 99.9))
    h2.report(extra, OrderStatus.FILLED, 2.0)
    intents = h2.book(book(99.98, 100.02, seq=3))
    assert [c.side for c in cancels(intents)] == [Side.BUY] and news(intents, Side.BUY) == []


def test_mm_requotes_only_beyond_requote_bps_and_waits_for_the_cancel():
    s = mm(requote_bps=3.0)
    h = Host(s)
    h.book(book(99.98, 100.02, seq=1))
    first = h.book(book(99.98, 100.02, seq=2))
    assert len(news(first)) == 2
    bid0, ask0 = h.working(Side.BUY)[0], h.working(Side.SELL)[0]
    # Mid up 1 tick (1 bp): desired quotes move ~1 bp < 3 bp -> nothing sent.
    assert h.book(book(99.99, 100.03, seq=3)) == []
    # Mid up 5 ticks from the quotes: both cancelled, nothing new until the cancels land.
    moved = h.book(book(100.03, 100.07, seq=4))
    assert sorted(c.target_client_order_id for c in cancels(moved)) == sorted([bid0, ask0])
    assert news(moved) == []
    assert h.book(book(100.03, 100.07, seq=5)) == []  # cancels in flight: no duplicate cancel, no new quote
    h.report(bid0, OrderStatus.CANCELED)
    # The 4 bp jump raised sigma, so the model spread is wider than the market's: join the touch.
    replaced = h.book(book(100.03, 100.07, seq=6))
    assert [(i.side, i.price) for i in news(replaced)] == [(Side.BUY, 100.03)]
    h.report(ask0, OrderStatus.CANCELED)
    replaced = h.book(book(100.03, 100.07, seq=7))
    assert [(i.side, i.price) for i in news(replaced)] == [(Side.SELL, 100.07)]


def test_mm_never_more_than_one_working_order_per_side():
    rng = random.Random(3)
    s = mm(requote_bps=0.5, max_position=3.0)
    h = Host(s)
    mid = 100.0
    for seq in range(1, 400):
        mid = round(mid + rng.choice([-0.01, 0.0, 0.01]), 2)
        spread = rng.choice([1, 2, 3]) * 0.01
        h.book(book(round(mid - spread, 2), round(mid + spread, 2), seq=seq), approve=rng.random() > 0.1)
        for coid in list(s.working):
            o = s.working[coid]
            if coid in s.canceling and rng.random() < 0.7:
                h.report(coid, OrderStatus.CANCELED)
            elif rng.random() < 0.1:
                h.report(coid, OrderStatus.FILLED, o.qty if isinstance(o, OrderIntent) else o.order_qty - o.filled_qty)
        assert len(h.working(Side.BUY)) <= 1 and len(h.working(Side.SELL)) <= 1
        assert abs(s.positions[SYM]) <= 3.0 + 1e-9
    sent = news(h.sent)
    assert sent and all(abs(i.qty - 1.0) < 1e-12 for i in sent)


def test_mm_pulls_quotes_on_a_stale_book():
    s = mm()
    h = Host(s)
    h.book(book(99.98, 100.02, seq=1))
    h.book(book(99.98, 100.02, seq=2))
    assert len(s.working) == 2
    stale = msgspec.structs.replace(book(99.98, 100.02, seq=3), stale=True)
    pulled = h.book(stale)
    assert len(cancels(pulled)) == 2 and news(pulled) == []
    assert h.book(stale) == []  # cancels already in flight


def test_mm_backs_off_after_a_rejection():
    s = mm(reject_backoff_updates=5)
    h = Host(s)
    h.book(book(99.98, 100.02, seq=1))
    assert len(news(h.book(book(99.98, 100.02, seq=2), approve=False))) == 2
    for seq in range(3, 7):
        assert h.book(book(99.98, 100.02, seq=seq)) == []
    assert len(news(h.book(book(99.98, 100.02, seq=7)))) == 2


def test_mm_notional_sizing_fits_any_price():
    s = MarketMaker("mm", ["BTCUSDT"], {"BTCUSDT": "paper"},
                    {"order_qty_notional": 1000.0, "max_position_notional": 5000.0})
    h = Host(s)
    h.book(book(59999.9, 60000.1, tick=0.1, seq=1, symbol="BTCUSDT"))
    intents = h.book(book(59999.9, 60000.1, tick=0.1, seq=2, symbol="BTCUSDT"))
    assert [i.qty for i in intents] == [pytest.approx(1000 / 60000.0)] * 2
    assert [i.price for i in intents] == [59999.9, 60000.1]  # 2-tick market: the quotes join the touch


# -- order-book imbalance ----------------------------------------------------------------------------


def obi(**params) -> OrderBookImbalance:
    base = {"order_qty": 1.0, "max_position": 2.0, "threshold": 0.3, "persistence": 3, "levels": 3, "decay": 0.5}
    return OrderBookImbalance("obi", [SYM], VENUES, {**base, **params})


BID_HEAVY = {"bid_qty": [5.0, 5.0, 5.0], "ask_qty": [1.0, 1.0, 1.0]}  # imbalance 2/3
ASK_HEAVY = {"bid_qty": [1.0, 1.0, 1.0], "ask_qty": [5.0, 5.0, 5.0]}
BALANCED = {"bid_qty": [1.0, 1.0, 1.0], "ask_qty": [1.0, 1.0, 1.0]}


def rising(h: Host, n: int, start: int = 1, step: float = 0.01, **qty) -> list[list[OrderIntent]]:
    out = []
    for k in range(n):
        b = round(100.0 + (start + k) * step, 2)
        out.append(h.book(book(b, round(b + 0.02, 2), seq=start + k, **qty)))
    return out


def test_imbalance_waits_for_persistence_then_buys_at_the_ask():
    s = obi()
    h = Host(s)
    steps = rising(h, 3, **BID_HEAVY)
    assert steps[0] == [] and steps[1] == []
    (entry,) = steps[2]
    assert entry.side is Side.BUY and entry.tif is TimeInForce.IOC
    assert entry.price == 100.05 and entry.qty == 1.0  # best ask of the third update


def test_imbalance_persistence_resets_on_a_break():
    s = obi()
    h = Host(s)
    assert rising(h, 2, **BID_HEAVY) == [[], []]
    assert rising(h, 1, start=3, **BALANCED) == [[]]
    assert rising(h, 2, start=4, **BID_HEAVY) == [[], []]
    assert len(rising(h, 1, start=6, **BID_HEAVY)[0]) == 1


def test_imbalance_needs_momentum_not_against_it():
    s = obi()
    h = Host(s)
    assert rising(h, 4, step=-0.01, **BID_HEAVY) == [[], [], [], []]  # falling mid vetoes a buy
    flat = obi()
    hf = Host(flat)
    out = [hf.book(book(100.0, 100.02, seq=k, **BID_HEAVY)) for k in range(1, 4)]
    assert len(out[2]) == 1  # a flat mid is tolerated by default
    strict = obi(allow_flat_momentum=False)
    hs = Host(strict)
    assert all(hs.book(book(100.0, 100.02, seq=k, **BID_HEAVY)) == [] for k in range(1, 6))


def test_imbalance_sells_on_ask_pressure_with_down_momentum():
    s = obi()
    h = Host(s)
    (entry,) = rising(h, 3, step=-0.01, **ASK_HEAVY)[2]
    assert entry.side is Side.SELL and entry.price == 99.97  # best bid


def test_imbalance_nothing_when_spread_too_wide():
    s = obi(max_spread_bps=3.0)
    h = Host(s)
    for k in range(1, 8):
        b = round(100.0 + k * 0.01, 2)
        assert h.book(book(b, round(b + 0.05, 2), seq=k, **BID_HEAVY)) == []  # 5 bp spread


def test_imbalance_nothing_when_too_volatile():
    s = obi(max_vol_bps=5.0)
    h = Host(s)
    for k in range(1, 8):
        b = 100.0 + k * 0.05  # 5 bp per 50 ms: ~22 bp per sqrt(s)
        assert h.book(book(round(b, 2), round(b + 0.02, 2), seq=k, **BID_HEAVY)) == []


def test_imbalance_size_shrinks_with_volatility():
    calm, wild = obi(vol_ref_bps=5.0), obi(vol_ref_bps=5.0)
    (c,) = rising(Host(calm), 3, step=0.001, **BID_HEAVY)[2]  # ~0.4 bp per sqrt(s)
    (w,) = rising(Host(wild), 3, step=0.05, **BID_HEAVY)[2]  # ~22 bp per sqrt(s)
    assert c.qty == 1.0
    vol = realized_vol_bps(list(wild.mids[SYM]), list(wild.times[SYM]))
    assert w.qty == pytest.approx(5.0 / vol, rel=1e-6) and w.qty < c.qty


def test_imbalance_respects_max_position():
    s = obi(order_qty=5.0, max_position=2.0)
    (entry,) = rising(Host(s), 3, **BID_HEAVY)[2]
    assert entry.qty == 2.0


def test_imbalance_holds_then_exits_with_ioc():
    s = obi(hold_updates=4)
    h = Host(s)
    (entry,) = rising(h, 3, **BID_HEAVY)[2]
    coid = s.working_orders(SYM)[0]
    assert rising(h, 1, start=4, **BID_HEAVY) == [[]]  # IOC in flight: nothing else
    h.report(coid, OrderStatus.FILLED, 1.0, 100.05)
    assert s.positions[SYM] == 1.0
    held = rising(h, 3, start=5, **BID_HEAVY)
    assert held == [[], [], []]
    (exit_,) = rising(h, 1, start=8, **BID_HEAVY)[0]
    assert exit_.side is Side.SELL and exit_.qty == 1.0 and exit_.tif is TimeInForce.IOC
    assert exit_.price == 100.08  # best bid
    h.report(s.working_orders(SYM)[0], OrderStatus.FILLED, 1.0, 100.08)
    assert s.positions[SYM] == 0.0
    # A re-entry needs a fresh persistent signal.
    again = rising(h, 3, start=9, **BID_HEAVY)
    assert again[0] == [] and again[1] == [] and len(again[2]) == 1


def test_imbalance_exits_when_the_signal_flips():
    s = obi(hold_updates=100)
    h = Host(s)
    rising(h, 3, **BID_HEAVY)
    coid = s.working_orders(SYM)[0]
    h.report(coid, OrderStatus.PARTIALLY_FILLED, 0.4, 100.05)
    h.report(coid, OrderStatus.EXPIRED)  # IOC remainder
    assert s.positions[SYM] == pytest.approx(0.4)
    assert rising(h, 1, start=4, **BALANCED) == [[]]
    (exit_,) = rising(h, 1, start=5, **ASK_HEAVY)[0]
    assert exit_.side is Side.SELL and exit_.qty == pytest.approx(0.4)


def test_imbalance_backs_off_after_rejection():
    s = obi(reject_backoff_updates=10)
    h = Host(s)
    out = [h.book(book(100.0, 100.02, seq=k, **BID_HEAVY), approve=False) for k in range(1, 4)]
    assert len(out[2]) == 1
    assert all(h.book(book(100.0, 100.02, seq=k, **BID_HEAVY)) == [] for k in range(4, 13))
    assert len(h.book(book(100.0, 100.02, seq=13, **BID_HEAVY))) == 1


# -- registry and params -----------------------------------------------------------------------------


def test_registry_and_create_strategy():
    assert STRATEGY_TYPES["market_maker"] is MarketMaker and STRATEGY_TYPES["imbalance"] is OrderBookImbalance
    assert sorted(STRATEGY_TYPES) == ["ema_grid", "imbalance", "latency_probe", "market_maker", "pairs"]
    s = create_strategy("imbalance", "obi", [SYM], VENUES, {"threshold": 0.5})
    assert isinstance(s, OrderBookImbalance) and s.params["threshold"] == 0.5
    with pytest.raises(ValueError, match=r"'nope'.*imbalance.*market_maker"):
        create_strategy("nope", "x", [SYM], VENUES, {})


@pytest.mark.parametrize("cls", [MarketMaker, OrderBookImbalance])
def test_unknown_or_bad_params_are_rejected(cls):
    with pytest.raises(StrategyParamError, match="bogus"):
        cls("s", [SYM], VENUES, {"bogus": 1})
    with pytest.raises(StrategyParamError, match="order_qty"):
        cls("s", [SYM], VENUES, {"order_qty": "1"})
    with pytest.raises(StrategyParamError, match="order_qty"):
        cls("s", [SYM], VENUES, {"order_qty": 0.0})


def test_param_relations_validated():
    with pytest.raises(StrategyParamError, match="gamma"):
        MarketMaker("s", [SYM], VENUES, {"gamma": 0.0})
    with pytest.raises(StrategyParamError, match="sigma_window"):
        MarketMaker("s", [SYM], VENUES, {"sigma_window": 1})
    with pytest.raises(StrategyParamError, match="decay"):
        OrderBookImbalance("s", [SYM], VENUES, {"decay": 1.5})
    with pytest.raises(StrategyParamError, match="persistence"):
        OrderBookImbalance("s", [SYM], VENUES, {"persistence": 2.5})
    # Live changes are validated the same way and leave working state usable.
    s = MarketMaker("s", [SYM], VENUES)
    s.handle_book(book(99.98, 100.02, seq=1))
    s.set_params({"sigma_window": 10})
    assert s.mids[SYM].maxlen == 10


def test_a_refused_live_change_leaves_every_parameter_as_it_was():
    s = OrderBookImbalance("s", [SYM], VENUES, {"threshold": 0.3})
    with pytest.raises(StrategyParamError, match="decay"):
        s.set_params({"threshold": 0.5, "decay": 2.0})
    assert s.params["threshold"] == 0.3 and s.params["decay"] == 0.5


def test_imbalance_persistence_is_at_least_three_updates():
    with pytest.raises(StrategyParamError, match="persistence"):
        OrderBookImbalance("s", [SYM], VENUES, {"persistence": 2})
    assert OrderBookImbalance("s", [SYM], VENUES, {"persistence": 3}).params["persistence"] == 3


def test_quantities_are_rounded_down_onto_the_lot():
    s = OrderBookImbalance("s", [SYM], VENUES, {"order_qty_notional": 500.0, "max_position_notional": 5000.0})
    s.set_instruments({SYM: 0.01})
    assert s.round_qty(SYM, 3.3399999) == 3.33 and s.round_qty(SYM, 3.34) == 3.34
    assert s.limit(SYM, Side.BUY, 3.338, 150.0).qty == 3.33
    # Unknown lot: inferred from the first book's quantities (most decimals seen), whole numbers say nothing.
    t = OrderBookImbalance("t", [SYM], VENUES)
    t.handle_book(book(100.0, 100.02, bid_qty=[1.25, 0.5, 2.0], ask_qty=[1.0, 3.125, 1.0], seq=1))
    assert t.lot_size(SYM) == 0.001 and t.round_qty(SYM, 0.12345) == 0.123
    u = OrderBookImbalance("u", [SYM], VENUES)
    u.handle_book(book(100.0, 100.02, seq=1))
    assert u.lot_size(SYM) == 0.0 and u.round_qty(SYM, 0.12345) == 0.12345
    # Entries are sized on the lot: 500 / 150.015 = 3.3330 -> 3.33.
    h = Host(s)
    (entry,) = [h.book(book(150.0 + k * 0.01, 150.03 + k * 0.01, seq=k, **BID_HEAVY)) for k in range(1, 4)][2]
    assert entry.qty == 3.33
