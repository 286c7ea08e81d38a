"""The imbalance strategy's fast paths give exactly what the plain code gives.

`imbalance_function` (the unrolled imbalance) against `weighted_imbalance`, bit for bit; the fused
`handle_book` against the base class's bookkeeping; the signed run against the spec's streak rules.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.messages import BookUpdate, IntentAction, OrderIntent, RejectReason, RiskDecision, Side
from strategies.base import Strategy
from strategies.imbalance import (
    MAX_UNROLLED_LEVELS,
    OrderBookImbalance,
    imbalance_function,
    weighted_imbalance,
)

SYM = "SOLUSDT"
VENUES = {SYM: "paper"}
DT_NS = 50_000_000

quantity = st.one_of(st.floats(0, 1e6), st.sampled_from([0.0, -0.0, 1e-300, 5e-324]), st.integers(0, 10**6))
side = st.lists(st.tuples(st.floats(1, 1e6), quantity), max_size=12)


def same(x: float, y: float) -> bool:
    """Equal as floats, including the sign of zero and NaN, and of the same type."""
    return type(x) is type(y) and (x == y or (math.isnan(x) and math.isnan(y))) and math.copysign(1, x) == math.copysign(1, y)


@given(side, side, st.integers(1, 12), st.sampled_from([0.5, 0.3, 0.77, 1.0, 0.01]))
def test_unrolled_imbalance_is_the_loop_bit_for_bit(bids, asks, levels, decay):
    assert same(imbalance_function(levels, decay)(bids, asks), weighted_imbalance(bids, asks, levels, decay))


def test_deep_and_shallow_books_fall_back_to_the_loop():
    bids = [(100.0 - i, float(i + 1)) for i in range(40)]
    asks = [(101.0 + i, float(2 * i + 1)) for i in range(40)]
    deep = imbalance_function(MAX_UNROLLED_LEVELS + 3, 0.9)
    assert deep(bids, asks) == weighted_imbalance(bids, asks, MAX_UNROLLED_LEVELS + 3, 0.9)
    five = imbalance_function(5, 0.5)
    assert five(bids[:2], asks) == weighted_imbalance(bids[:2], asks, 5, 0.5)
    assert five([], []) == 0.0 and five(bids[:1], []) == 1.0


def book(bid: float, ask: float, bid_qty: list[float], ask_qty: list[float], seq: int, **flags) -> BookUpdate:
    return BookUpdate(venue="paper", symbol=SYM, seq=seq,
                      bids=[(round(bid - i * 0.01, 2), q) for i, q in enumerate(bid_qty)],
                      asks=[(round(ask + i * 0.01, 2), q) for i, q in enumerate(ask_qty)],
                      exchange_ts_ns=10**18 + seq * DT_NS, **flags)


BID = ([5.0, 5.0, 5.0], [1.0, 1.0, 1.0])
ASK = ([1.0, 1.0, 1.0], [5.0, 5.0, 5.0])
FLAT = ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])


def obi(**params) -> OrderBookImbalance:
    base = {"order_qty": 1.0, "max_position": 2.0, "threshold": 0.3, "persistence": 3, "levels": 3, "decay": 0.5}
    return OrderBookImbalance("obi", [SYM], VENUES, {**base, **params})


def feed(s: OrderBookImbalance, pattern: list[tuple[list[float], list[float]]], start: int = 1) -> list[list[OrderIntent]]:
    """Books with a flat mid (so momentum never refuses), one per pattern entry; every intent is rejected,
    which leaves the strategy flat and (with no backoff) free to signal again."""
    out = []
    for k, (bq, aq) in enumerate(pattern, start=start):
        intents = s.handle_book(book(100.0, 100.02, bq, aq, seq=k))
        for i in intents:
            s.handle_decision(RiskDecision(approved=False, reason=RejectReason.POSITION_LIMIT, strategy=i.strategy,
                                           venue=i.venue, symbol=i.symbol, action=i.action), i)
        out.append(intents)
    return out


def test_fused_handle_book_keeps_the_base_bookkeeping():
    s = obi()
    crossed = book(100.02, 100.0, [5.25, 5.0, 5.0], [1.0, 1.0, 1.0], seq=1, crossed=True)
    assert s.handle_book(crossed) == [] and s.books[SYM] is crossed
    assert s.lot_size(SYM) == 0.01  # inferred from the first book seen, tradeable or not
    assert SYM not in s.state  # a book that is not tradeable never reaches the signal
    assert s.handle_book(book(100.0, 100.02, *BID, seq=2, stale=True)) == [] and SYM not in s.state
    empty = BookUpdate(venue="paper", symbol=SYM, seq=3, bids=[], asks=[(100.02, 1.0)], exchange_ts_ns=10**18)
    assert s.handle_book(empty) == [] and s.books[SYM] is empty and SYM not in s.state
    assert s.handle_book(book(100.0, 100.02, *BID, seq=4)) == [] and s.state[SYM].updates == 1
    assert OrderBookImbalance.on_book is OrderBookImbalance.handle_book
    assert OrderBookImbalance.handle_book is not Strategy.handle_book


def test_a_direction_change_restarts_the_streak():
    s = obi(reject_backoff_updates=0)
    out = feed(s, [BID, BID, ASK, ASK, ASK])
    assert out[:4] == [[], [], [], []]
    (sell,) = out[4]
    assert sell.side is Side.SELL and sell.action is IntentAction.NEW
    assert s.state[SYM].run == 0  # an entry resets the streak


def test_after_an_entry_the_same_direction_needs_a_fresh_streak():
    s = obi(reject_backoff_updates=0)
    out = feed(s, [BID, BID, BID, BID, BID, BID, FLAT, BID, BID, BID])
    assert [len(o) for o in out] == [0, 0, 1, 0, 0, 1, 0, 0, 0, 1]
    assert all(i.side is Side.BUY for o in out for i in o)


@pytest.mark.parametrize("persistence", [3, 4, 7])
def test_persistence_counts_consecutive_updates_either_way(persistence):
    s = obi(reject_backoff_updates=0, persistence=persistence)
    out = feed(s, [ASK] * (persistence - 1) + [FLAT] + [ASK] * persistence)
    entries = [k for k, o in enumerate(out) if o]
    assert entries == [2 * persistence - 1] and out[-1][0].side is Side.SELL
    assert s.state[SYM].run == 0


def test_a_live_change_of_windows_and_thresholds_applies_to_the_fast_path():
    s = obi(reject_backoff_updates=0)
    feed(s, [BID, BID])
    s.set_params({"threshold": 0.9, "vol_window": 10})  # 2/3 imbalance is no longer a signal
    assert s.mids[SYM].maxlen == 10 and s.times[SYM].maxlen == 10 and list(s.mids[SYM]) == [pytest.approx(100.01)] * 2
    assert feed(s, [BID, BID, BID], start=3) == [[], [], []]
    assert s.last_imbalance[SYM] == pytest.approx(2 / 3)
