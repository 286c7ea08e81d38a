from __future__ import annotations

from cluster.conflation import SubscriberChannel
from cluster.messages import BookUpdate, Side, Trade


def book(symbol: str, seq: int) -> BookUpdate:
    return BookUpdate(venue="v", symbol=symbol, seq=seq, bids=[(1.0, 1.0)], asks=[(2.0, 1.0)])


def trade(i: int) -> Trade:
    return Trade(venue="v", symbol="A", trade_id=str(i), price=1.5, qty=1.0, aggressor=Side.BUY)


def test_latest_book_per_symbol_and_skipped_count():
    ch = SubscriberChannel(name="s")
    for seq in range(1, 6):
        ch.offer_book(book("A", seq))
    ch.offer_book(book("B", 1))
    d = ch.take()
    assert [(b.symbol, b.seq) for b in d.books] == [("A", 5), ("B", 1)]
    assert d.skipped == 4
    assert not ch.has_pending and ch.take().skipped == 0


def test_trades_are_kept_but_bounded():
    ch = SubscriberChannel(name="s", max_trades=3)
    for i in range(5):
        ch.offer_trade(trade(i))
    d = ch.take()
    assert [t.trade_id for t in d.trades] == ["2", "3", "4"]
    assert d.trades_dropped == 2
