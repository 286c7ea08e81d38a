"""OrderBook against a naive reference book (dicts, sorted on every read) over random update streams.

The fast book keeps sorted price lists next to its dicts; this checks that every read (top-N, best
bid/ask, mid, spread, microprice, imbalance, depth within N bps, crossed) gives exactly what the
definitions give, after any mix of single updates, batched events (some with a bad level, which
must change nothing), snapshots and clears.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from gateways.book import OrderBook

Level = tuple[float, float]


class NaiveBook:
    """The definitions, written as plainly as possible: no incremental state besides price -> qty."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def set(self, is_bid: bool, price: float, qty: float) -> None:
        side = self.bids if is_bid else self.asks
        if qty:
            side[price] = qty
        else:
            side.pop(price, None)

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        bids = sorted(self.bids.items(), key=lambda kv: -kv[0])
        asks = sorted(self.asks.items())
        return (bids[:max(n, 0)], asks[:max(n, 0)])

    def reads(self) -> dict[str, object]:
        bids, asks = self.top(10**9)
        both = bool(bids) and bool(asks)
        out: dict[str, object] = {
            "len": len(bids) + len(asks),
            "best_bid": bids[0] if bids else None,
            "best_ask": asks[0] if asks else None,
            "mid": (bids[0][0] + asks[0][0]) / 2.0 if both else None,
            "spread": asks[0][0] - bids[0][0] if both else None,
            "microprice": ((bids[0][0] * asks[0][1] + asks[0][0] * bids[0][1]) / (bids[0][1] + asks[0][1])
                           if both else None),
            "crossed": both and bids[0][0] >= asks[0][0],
        }
        for n in (0, 1, 3, 1000):
            out[f"top{n}"] = self.top(n)
        for levels in (1, 2, 5):
            b = sum(q for _, q in bids[:levels])
            a = sum(q for _, q in asks[:levels])
            out[f"imbalance{levels}"] = 0.0 if b + a <= 0.0 else (b - a) / (b + a)
        for bps in (0.0, 10.0, 250.0, 5000.0):
            if both:
                mid = out["mid"]
                width = mid * bps / 10_000.0  # type: ignore[operator]
                out[f"depth{bps}"] = (sum(q for p, q in bids if p >= mid - width),  # type: ignore[operator]
                                      sum(q for p, q in asks if p <= mid + width))  # type: ignore[operator]
            else:
                out[f"depth{bps}"] = (0.0, 0.0)
        return out


def fast_reads(book: OrderBook) -> dict[str, object]:
    out: dict[str, object] = {
        "len": len(book), "best_bid": book.best_bid(), "best_ask": book.best_ask(), "mid": book.mid(),
        "spread": book.spread(), "microprice": book.microprice(), "crossed": book.is_crossed(),
    }
    for n in (0, 1, 3, 1000):
        out[f"top{n}"] = book.top(n)
    for levels in (1, 2, 5):
        out[f"imbalance{levels}"] = book.imbalance(levels)
    for bps in (0.0, 10.0, 250.0, 5000.0):
        out[f"depth{bps}"] = book.depth_within_bps(bps)
    upd = book.to_update(seq=1, depth=3)
    assert (upd.bids, upd.asks) == book.top(3)
    assert upd.crossed == book.is_crossed()
    return out


# Prices on a coarse grid so levels collide, get resized and removed; bids and asks overlap so books cross.
prices = st.integers(1, 40).map(lambda t: t * 0.25)
qtys = st.one_of(st.just(0.0), st.integers(1, 50).map(lambda q: q / 8))
bad_values = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0])
levels = st.lists(st.tuples(prices, qtys), max_size=6)

ops = st.one_of(
    st.tuples(st.just("apply"), st.booleans(), prices, qtys),
    st.tuples(st.just("levels"), levels, levels),
    st.tuples(st.just("bad_levels"), levels, levels, st.booleans(), bad_values, st.booleans()),
    st.tuples(st.just("snapshot"), st.lists(st.tuples(prices, qtys), max_size=12),
              st.lists(st.tuples(prices, qtys), max_size=12)),
    st.tuples(st.just("clear")),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(ops, max_size=40))
def test_fast_book_equals_naive_book(stream: list[tuple]) -> None:
    book = OrderBook("X")
    ref = NaiveBook()
    for op in stream:
        kind = op[0]
        if kind == "apply":
            _, is_bid, p, q = op
            book.apply(is_bid, p, q)
            ref.set(is_bid, p, q)
        elif kind == "levels":
            _, bids, asks = op
            book.apply_levels(bids, asks)
            for p, q in bids:
                ref.set(True, p, q)
            for p, q in asks:
                ref.set(False, p, q)
        elif kind == "bad_levels":
            _, bids, asks, on_bids, bad, bad_price = op
            level = (bad, 1.0) if bad_price else (1.0, bad)
            if not bad_price and bad == 0.0:
                level = (-1.0, 1.0)  # a zero quantity is valid: use a bad price instead
            target = bids if on_bids else asks
            target = [*target, level]
            try:
                book.apply_levels(target if on_bids else bids, asks if on_bids else target)
            except ValueError:
                pass
            else:
                raise AssertionError(f"bad level {level} was accepted")
        elif kind == "snapshot":
            _, bids, asks = op
            book.load_snapshot(bids, asks)
            ref = NaiveBook()  # a snapshot has no removals: its zero levels are skipped
            ref.bids = {p: q for p, q in bids if q}
            ref.asks = {p: q for p, q in asks if q}
        else:
            book.clear()
            ref = NaiveBook()
        assert fast_reads(book) == ref.reads(), op


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), prices, qtys), max_size=200))
def test_single_updates_equal_batched_updates(updates: list[tuple[bool, float, float]]) -> None:
    """`apply` one level at a time and `apply_levels` of the same event in order build the same book."""
    one, batched = OrderBook("X"), OrderBook("X")
    for is_bid, p, q in updates:
        one.apply(is_bid, p, q)
    batched.apply_levels([(p, q) for b, p, q in updates if b], [(p, q) for b, p, q in updates if not b])
    assert fast_reads(one) == fast_reads(batched)
