"""`feeds.record`: a feed (network or built-in) records raw messages and normalized books/trades that read back."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors.feed import FeedService, with_record_dir
from cluster.config import ConfigError, FeedSection, MarketSection, RecordSection, parse_config
from gateways.binance.market_handler import BinanceMarketHandler
from gateways.recording import read_raw, replay_raw
from strategies.market_data import read_frames
from tests.test_venue_sim_support import SYMBOLS, running_sim, wait_until

NAMES = [s.symbol for s in SYMBOLS]


class _Published:
    """Counts what FeedService.publish hands subscribers (books per symbol, trades)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.books: list = []
        self.trades: list = []
        original = FeedService.publish

        def publish(svc, books, trades):
            self.books.extend(books.values())
            self.trades.extend(trades)
            original(svc, books, trades)

        monkeypatch.setattr(FeedService, "publish", publish)


def test_network_feed_records_raw_and_normalized_files_that_read_back(tmp_path, monkeypatch):
    published = _Published(monkeypatch)
    feeds = FeedSection(book_depth=3, record=RecordSection(raw=True, normalized=True, dir=str(tmp_path),
                                                           flush_rows=40))

    async def go():
        async with running_sim(updates_per_second=50) as (_, http, ws):
            svc = FeedService("paper", SYMBOLS, MarketSection(), feeds, {"protocol": "binance", "rest_url": http,
                                                                         "ws_url": ws}, name="feed:paper:BTCUSDT")
            task = asyncio.get_running_loop().create_task(svc.client.run())
            await wait_until(lambda: (svc.pump(time.time_ns()) or True) and len(published.books) > 100, 40, "books")
            await svc.client.stop()
            await asyncio.wait_for(task, 5)
            svc.pump(time.time_ns())
            return svc, svc.close_recording()

    svc, files = asyncio.run(go())
    raw = [f for f in files if f.endswith(".jsonl.gz")]
    assert len(raw) == 1 and "raw-feed_paper_BTCUSDT-" in raw[0]
    records = list(read_raw(raw[0]))
    assert {r.kind for r in records} == {"ws", "rest:BTCUSDT", "rest:ETHUSDT"}
    # The raw file replays through the same handler to the same books.
    replayed = BinanceMarketHandler("paper", NAMES)
    asyncio.run(replay_raw(raw[0], replayed))
    for s in NAMES:
        assert replayed.symbols[s].book.top(1000) == svc.handler.symbols[s].book.top(1000)
    # Normalized: several parts (flush_rows=40), together every published book and trade, as `backtest --data` reads.
    books, trades = read_frames(tmp_path)
    assert len(list(tmp_path.glob("books-*.parquet"))) >= 3
    assert books.height == len(published.books) and trades is not None and trades.height == len(published.trades)
    last = books.filter(books["symbol"] == "BTCUSDT").sort("seq").row(-1, named=True)
    want = svc.latest["BTCUSDT"]
    assert (last["bid_px_0"], last["ask_qty_2"], last["seq"]) == (want.bids[0][0], want.asks[2][1], want.seq)
    assert svc.close_recording() == []  # closing twice writes nothing more


def test_builtin_feed_records_and_the_recording_replays_to_the_same_book(tmp_path, monkeypatch):
    published = _Published(monkeypatch)
    feeds = FeedSection(book_depth=5, record=RecordSection(raw=True, normalized=True, dir=str(tmp_path)))
    svc = FeedService("paper", SYMBOLS[:1], MarketSection(seed=3), feeds, name="feed:paper:BTCUSDT")
    for i in range(60):
        svc.step(0.05, 1_000_000_000 + i * 50_000_000)
    files = svc.close_recording()
    raw = next(f for f in files if f.endswith(".jsonl.gz"))
    replayed = BinanceMarketHandler("paper", ["BTCUSDT"])
    asyncio.run(replay_raw(raw, replayed))
    feed = svc.feeds["BTCUSDT"]
    assert replayed.symbols["BTCUSDT"].book.top(1000) == feed.book.top(1000)
    assert replayed.symbols["BTCUSDT"].sync.last_update_id == feed.sync.last_update_id
    books, _ = read_frames(tmp_path)
    assert books.height == len(published.books) > 50
    assert books.sort("seq")["seq"].to_list() == [b.seq for b in published.books]
    assert books["bid_px_4"].null_count() < books.height  # depth 5 recorded


def test_recording_is_off_by_default_and_costs_nothing(tmp_path):
    svc = FeedService("paper", SYMBOLS[:1], MarketSection(), FeedSection())
    assert svc.recording is None and "publish" not in vars(svc)
    assert svc.feeds["BTCUSDT"].recorder is None
    net = FeedService("paper", SYMBOLS[:1], MarketSection(), FeedSection(),
                      {"protocol": "binance", "rest_url": "http://127.0.0.1:5", "ws_url": "ws://127.0.0.1:5"})
    assert net.client.recorder is None and net.close_recording() == []


def test_record_config_keys_and_the_default_folder(tmp_path):
    base = {"symbols": [{"symbol": "BTCUSDT"}]}
    cfg = parse_config({**base, "feeds": {"record": {"raw": True}}})
    assert cfg.feeds.record.raw and not cfg.feeds.record.normalized and cfg.feeds.record.dir == ""
    assert with_record_dir(cfg.feeds, tmp_path).record.dir == str(tmp_path / "market")  # the run's folder
    off = parse_config(base).feeds
    assert with_record_dir(off, tmp_path) is off  # off: untouched
    mine = parse_config({**base, "feeds": {"record": {"normalized": True, "dir": "/data/rec"}}}).feeds
    assert with_record_dir(mine, tmp_path).record.dir == "/data/rec"
    with pytest.raises(ConfigError, match=r"feeds\.record\.depth"):
        parse_config({**base, "feeds": {"book_depth": 5, "record": {"depth": 6}}})
    with pytest.raises(ConfigError, match=r"feeds\.record"):
        parse_config({**base, "feeds": {"record": {"raw": True, "compress": True}}})
