"""OrderBook: hand-worked cases for every method, and rejection of what no venue can send."""

from __future__ import annotations

import math

import pytest

from cluster.messages import BookUpdate
from gateways.book import OrderBook


def make_book() -> OrderBook:
    book = OrderBook("BTCUSDT", "binance")
    book.load_snapshot(bids=[(99.0, 2.0), (100.0, 1.0), (98.0, 3.0)], asks=[(102.0, 4.0), (101.0, 3.0), (103.0, 5.0)])
    return book


def test_empty_book() -> None:
    book = OrderBook("BTCUSDT")
    assert book.venue == ""
    assert len(book) == 0
    assert book.best_bid() is None and book.best_ask() is None
    assert book.mid() is None and book.spread() is None and book.microprice() is None
    assert book.imbalance() == 0.0
    assert book.depth_within_bps(100) == (0.0, 0.0)
    assert book.top(5) == ([], [])
    assert not book.is_crossed()


def test_snapshot_orders_best_first() -> None:
    book = make_book()
    assert len(book) == 6
    assert book.best_bid() == (100.0, 1.0)
    assert book.best_ask() == (101.0, 3.0)
    assert book.top(2) == ([(100.0, 1.0), (99.0, 2.0)], [(101.0, 3.0), (102.0, 4.0)])
    assert book.top(10) == ([(100.0, 1.0), (99.0, 2.0), (98.0, 3.0)], [(101.0, 3.0), (102.0, 4.0), (103.0, 5.0)])
    assert book.top(0) == ([], [])


def test_snapshot_replaces_everything_and_skips_zero_levels() -> None:
    book = make_book()
    book.load_snapshot(bids=[(50.0, 1.0), (49.0, 0.0)], asks=[(51.0, 2.0)])
    assert book.top(10) == ([(50.0, 1.0)], [(51.0, 2.0)])
    assert len(book) == 2


def test_bad_snapshot_leaves_book_unchanged() -> None:
    book = make_book()
    before = book.top(10)
    with pytest.raises(ValueError):
        book.load_snapshot(bids=[(50.0, 1.0)], asks=[(51.0, -2.0)])
    assert book.top(10) == before


def test_apply_insert_update_remove() -> None:
    book = make_book()
    book.apply(True, 100.5, 7.0)  # new best bid
    assert book.best_bid() == (100.5, 7.0)
    book.apply(True, 100.5, 2.0)  # absolute quantity, not a delta
    assert book.best_bid() == (100.5, 2.0)
    book.apply(True, 100.5, 0.0)  # 0 removes
    assert book.best_bid() == (100.0, 1.0)
    book.apply(False, 100.75, 1.5)
    assert book.best_ask() == (100.75, 1.5)
    book.apply(False, 101.0, 0.0)
    assert book.top(10)[1] == [(100.75, 1.5), (102.0, 4.0), (103.0, 5.0)]
    book.apply(False, 555.0, 0.0)  # removing an absent level is normal
    assert len(book) == 6


@pytest.mark.parametrize(
    ("price", "qty"),
    [(-1.0, 1.0), (0.0, 1.0), (math.nan, 1.0), (math.inf, 1.0), (100.0, -1.0), (100.0, math.nan), (100.0, math.inf),
     (-math.inf, 1.0), (100.0, -math.inf)],
)
def test_apply_rejects_bad_input(price: float, qty: float) -> None:
    book = make_book()
    before = book.top(10)
    with pytest.raises(ValueError):
        book.apply(True, price, qty)
    with pytest.raises(ValueError):
        book.apply(False, price, qty)
    with pytest.raises(ValueError):
        book.load_snapshot([(price, qty)], [])
    assert book.top(10) == before


def test_apply_levels_is_all_or_nothing() -> None:
    book = make_book()
    book.apply_levels([(100.0, 0.0), (99.5, 4.0)], [(101.0, 1.0), (104.0, 1.0)])
    assert book.top(10) == ([(99.5, 4.0), (99.0, 2.0), (98.0, 3.0)],
                            [(101.0, 1.0), (102.0, 4.0), (103.0, 5.0), (104.0, 1.0)])
    before = book.top(10)
    with pytest.raises(ValueError):
        book.apply_levels([(99.0, 9.0)], [(101.0, 2.0), (102.0, math.nan)])
    assert book.top(10) == before
    book.apply_levels(iter([(97.0, 1.0)]), iter([]))  # any iterable
    assert book.top(10)[0][-1] == (97.0, 1.0)


def test_mid_spread_microprice() -> None:
    book = make_book()  # bid 100 x 1, ask 101 x 3
    assert book.mid() == 100.5
    assert book.spread() == 1.0
    # (100 * 3 + 101 * 1) / 4: more size on the ask pulls the price toward the bid
    assert book.microprice() == pytest.approx(100.25)
    book.apply(True, 100.0, 3.0)
    book.apply(False, 101.0, 1.0)
    assert book.microprice() == pytest.approx(100.75)
    book.apply(False, 101.0, 0.0)
    book.apply(False, 102.0, 0.0)
    book.apply(False, 103.0, 0.0)
    assert book.mid() is None and book.spread() is None and book.microprice() is None


def test_imbalance() -> None:
    book = make_book()
    # 1 level: bid 1 vs ask 3 -> (1-3)/4
    assert book.imbalance(1) == pytest.approx(-0.5)
    # 2 levels: bids 1+2=3, asks 3+4=7 -> -4/10
    assert book.imbalance(2) == pytest.approx(-0.4)
    # default 5 covers all: bids 6, asks 12 -> -6/18
    assert book.imbalance() == pytest.approx(-1.0 / 3.0)
    only_bids = OrderBook("X")
    only_bids.apply(True, 10.0, 2.0)
    assert only_bids.imbalance() == 1.0
    with pytest.raises(ValueError):
        book.imbalance(0)


def test_depth_within_bps() -> None:
    book = OrderBook("X")
    book.load_snapshot(bids=[(99.9, 1.0), (99.5, 2.0), (98.0, 4.0)], asks=[(100.1, 3.0), (100.4, 5.0), (102.0, 6.0)])
    # mid 100.0; 10 bps = 0.1 -> [99.9, 100.1] inclusive
    assert book.depth_within_bps(10) == (1.0, 3.0)
    # 50 bps = 0.5 -> [99.5, 100.5]
    assert book.depth_within_bps(50) == (3.0, 8.0)
    assert book.depth_within_bps(1000) == (7.0, 14.0)
    assert book.depth_within_bps(0) == (0.0, 0.0)
    with pytest.raises(ValueError):
        book.depth_within_bps(-1)


def test_is_crossed() -> None:
    book = make_book()
    assert not book.is_crossed()
    book.apply(True, 101.0, 1.0)  # locked: bid == ask counts as crossed
    assert book.is_crossed()
    book.apply(True, 101.0, 0.0)
    book.apply(True, 101.5, 1.0)
    assert book.is_crossed()
    assert book.spread() == pytest.approx(-0.5)


def test_len_and_clear() -> None:
    book = make_book()
    assert len(book) == 6
    book.clear()
    assert len(book) == 0
    assert book.best_bid() is None
    book.apply(False, 5.0, 1.0)
    assert len(book) == 1


def test_to_update() -> None:
    book = make_book()
    upd = book.to_update(seq=7, depth=2, exchange_ts_ns=11, receive_ts_ns=12)
    assert isinstance(upd, BookUpdate)
    assert (upd.venue, upd.symbol, upd.seq) == ("binance", "BTCUSDT", 7)
    assert upd.bids == [(100.0, 1.0), (99.0, 2.0)]
    assert upd.asks == [(101.0, 3.0), (102.0, 4.0)]
    assert (upd.exchange_ts_ns, upd.receive_ts_ns) == (11, 12)
    assert not upd.crossed and not upd.stale and upd.tradeable
    book.apply(True, 101.0, 1.0)
    crossed = book.to_update(seq=8, depth=5, stale=True)
    assert crossed.crossed and crossed.stale and not crossed.tradeable
