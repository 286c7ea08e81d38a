"""Recording raw messages (gzip JSONL) and normalized data (Parquet); replay through the same handler."""

from __future__ import annotations

import asyncio
import gzip
import json
import time

import polars as pl

from gateways.binance.feed import BinanceFeed
from gateways.binance.market_handler import BinanceMarketHandler
from gateways.recording import NormalizedRecorder, RawRecorder, read_raw, replay_raw
from tests.test_venue_sim_support import SYMBOLS, running_sim, wait_until

NAMES = [s.symbol for s in SYMBOLS]


def record_session(path) -> BinanceMarketHandler:
    async def go():
        async with running_sim(updates_per_second=50) as (ex, http, ws):
            handler = BinanceMarketHandler("paper", NAMES)
            with RawRecorder(path) as rec:
                feed = BinanceFeed(handler, http, ws, recorder=rec)
                task = asyncio.get_running_loop().create_task(feed.run())
                await wait_until(lambda: all(handler.symbols[s].stats()["applied"] > 10 for s in NAMES), 30, "data")
                await feed.stop()
                await asyncio.wait_for(task, 5)
            return handler

    return asyncio.run(go())


def test_replay_at_full_speed_rebuilds_the_same_books(tmp_path):
    path = tmp_path / "rec.jsonl.gz"
    live = record_session(path)
    records = list(read_raw(path))
    assert any(r.kind == "rest:BTCUSDT" for r in records) and any(r.kind == "ws" for r in records)
    assert all(a.ts <= b.ts for a, b in zip(records, records[1:], strict=False))
    replayed = BinanceMarketHandler("paper", NAMES)
    assert asyncio.run(replay_raw(path, replayed)) == len(records)
    for s in NAMES:
        assert replayed.symbols[s].book.top(1000) == live.symbols[s].book.top(1000)
        assert replayed.symbols[s].sync.last_update_id == live.symbols[s].sync.last_update_id
    # Exact bytes: the recorded text is what the venue sent.
    with gzip.open(path) as f:
        line = json.loads(f.readline())
    assert set(line) == {"ts", "kind", "raw"}


def test_replay_at_recorded_pace(tmp_path):
    path = tmp_path / "paced.jsonl.gz"
    with RawRecorder(path) as rec:
        for i in range(3):
            rec.record("ws", "{}", 1_000_000_000 + i * 150_000_000)  # 0.3 s of recording

    class Sink:
        def __init__(self):
            self.n = 0

        def on_message(self, raw, ts):
            self.n += 1

    sink = Sink()
    start = time.monotonic()
    asyncio.run(replay_raw(path, sink, speed=1.0))
    paced = time.monotonic() - start
    start = time.monotonic()
    asyncio.run(replay_raw(path, Sink(), speed=None))
    fast = time.monotonic() - start
    assert sink.n == 3 and paced >= 0.29 and fast < 0.2


def test_torn_last_line_ends_the_recording(tmp_path):
    path = tmp_path / "torn.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'{"ts": 1, "kind": "ws", "raw": "{}"}\n{"ts": 2, "kind": "w')
    assert [r.ts for r in read_raw(path)] == [1]


def test_normalized_books_and_trades_to_parquet(tmp_path):
    live = BinanceMarketHandler("paper", ["BTCUSDT"])
    live.on_snapshot("BTCUSDT", json.dumps({"lastUpdateId": 1, "bids": [["10.0", "1"]], "asks": [["11.0", "2"]]}))
    live.on_message(json.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "s": "BTCUSDT", "t": 5,
                                                                    "p": "10.5", "q": "0.5", "T": 7, "m": True}}))
    books, trades = live.drain(123)
    rec = NormalizedRecorder(tmp_path / "norm", depth=2)
    for b in books.values():
        rec.add_book(b)
    for t in trades:
        rec.add_trade(t)
    bpath, tpath = rec.close()
    bdf = pl.read_parquet(bpath)
    tdf = pl.read_parquet(tpath)
    assert bdf.row(0, named=True)["bid_px_0"] == 10.0 and bdf.row(0, named=True)["ask_qty_0"] == 2.0
    assert bdf.row(0, named=True)["bid_px_1"] is None
    assert tdf.row(0, named=True) == {"ts_ns": 7_000_000, "venue": "paper", "symbol": "BTCUSDT", "trade_id": "5",
                                      "price": 10.5, "qty": 0.5, "aggressor": "sell", "exchange_ts_ns": 7_000_000,
                                      "receive_ts_ns": 0}
    assert bdf.row(0, named=True)["ts_ns"] == 123  # the receive time: what `backtest --data` orders by


def test_normalized_parts_are_what_backtest_data_reads(tmp_path):
    """Written in parts every `flush_rows`; the folder reads back through the backtest's reader."""
    from cluster.messages import BookUpdate
    from strategies.market_data import read_frames

    rec = NormalizedRecorder(tmp_path, depth=2, name="feed_paper_X", flush_rows=3)
    for i in range(7):
        rec.add_book(BookUpdate(venue="paper", symbol="X", seq=i, bids=[(10.0 + i, 1.0)], asks=[(11.0 + i, 2.0)],
                                receive_ts_ns=1000 + i))
    rec.close()
    assert sorted(p.name for p in tmp_path.glob("books*.parquet")) == [
        "books-feed_paper_X-0001.parquet", "books-feed_paper_X-0002.parquet", "books-feed_paper_X.parquet"]
    books, trades = read_frames(tmp_path)
    assert sorted(books["seq"].to_list()) == list(range(7)) and rec.rows == {"books": 7, "trades": 0}
    assert books.sort("seq")["ts_ns"].to_list() == [1000 + i for i in range(7)]
    assert trades is not None and trades.height == 0
