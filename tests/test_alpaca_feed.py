"""Alpaca market data: the feed handler against the simulator's Alpaca v2 WebSocket over real sockets."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp

from cluster.config import SymbolSection
from gateways.alpaca.feed import AlpacaFeed, AlpacaMarketHandler, parse_timestamp_ns
from gateways.binance.feed import Backoff
from tests.test_venue_sim_support import running_sim, wait_until

SYMBOLS = [SymbolSection(symbol="AAPL", venue="alpaca", price=190.0, tick_size=0.01, lot_size=1.0, volatility=0.3),
           SymbolSection(symbol="BTC/USD", venue="alpaca", price=60000.0, tick_size=0.5, lot_size=0.0001)]


def test_stocks_and_crypto_over_real_sockets():
    async def go():
        async with running_sim(symbols=SYMBOLS, updates_per_second=50) as (ex, _, ws_url):
            handler = AlpacaMarketHandler("alpaca", ["AAPL", "BTC/USD"], book_depth=5)
            feed = AlpacaFeed(handler, ws_url, key="k", secret="s", backoff=Backoff(0.02, 0.2))
            task = asyncio.get_running_loop().create_task(feed.run())
            await wait_until(lambda: all(s.synced for s in handler.symbols.values())
                             and handler.symbols["BTC/USD"].counters["applied"] > 10, 10, "both books")
            ex.stop()
            await asyncio.sleep(0.3)
            await feed.stop()
            await asyncio.wait_for(task, 5)
            return ex, handler, feed

    ex, handler, feed = asyncio.run(go())
    assert feed.counters["connects"] == 2  # one stock connection, one crypto connection
    bids, asks = ex.markets["BTC/USD"].book_levels()
    assert handler.symbols["BTC/USD"].book.top(1000) == (bids, asks)
    aapl = handler.symbols["AAPL"].book.top(5)
    assert len(aapl[0]) == 1 and len(aapl[1]) == 1 and aapl[0][0][0] < aapl[1][0][0]
    books, trades = handler.drain()
    assert books["BTC/USD"].tradeable and books["AAPL"].tradeable
    assert {t.symbol for t in trades} == {"AAPL", "BTC/USD"}
    stats = handler.stats()
    assert stats["AAPL"]["quotes"] > 0 and stats["BTC/USD"]["book_resets"] == 1


def test_control_messages_and_errors():
    async def go():
        async with running_sim(symbols=SYMBOLS) as (ex, _, ws_url), aiohttp.ClientSession() as s:
            replies = []
            async with s.ws_connect(f"{ws_url}/v2/iex") as ws:
                replies.append(json.loads((await ws.receive(timeout=5)).data))
                for req in ({"action": "subscribe", "trades": ["AAPL"]}, "nonsense",
                            {"action": "auth", "key": "", "secret": ""},
                            {"action": "auth", "key": "k", "secret": "s"},
                            {"action": "auth", "key": "k", "secret": "s"},
                            {"action": "subscribe", "orderbooks": ["AAPL"]},
                            {"action": "subscribe", "trades": ["AAPL"], "quotes": ["AAPL"], "bars": ["*"]}):
                    await ws.send_str(req if isinstance(req, str) else json.dumps(req))
                    replies.append(json.loads((await ws.receive(timeout=5)).data))
            return replies

    r = asyncio.run(go())
    assert r[0] == [{"T": "success", "msg": "connected"}]
    assert r[1] == [{"T": "error", "code": 401, "msg": "not authenticated"}]
    assert r[2] == [{"T": "error", "code": 400, "msg": "invalid syntax"}]
    assert r[3] == [{"T": "error", "code": 402, "msg": "auth failed"}]
    assert r[4] == [{"T": "success", "msg": "authenticated"}]
    assert r[5] == [{"T": "error", "code": 403, "msg": "already authenticated"}]
    assert r[6] == [{"T": "error", "code": 410, "msg": "invalid subscribe action for this feed"}]
    assert r[7] == [{"T": "subscription", "trades": ["AAPL"], "quotes": ["AAPL"], "bars": ["*"]}]


def test_auth_timeout_and_bars():
    async def go():
        async with running_sim(symbols=SYMBOLS, updates_per_second=50) as (ex, _, ws_url), \
                aiohttp.ClientSession() as s:
            # The app registered the Alpaca module; shorten its timers for the test.
            sim = next(listener.__self__ for listener in ex.listeners
                       if getattr(listener, "__self__", None).__class__.__name__ == "AlpacaMarketSim")
            sim.auth_timeout_s = 0.2
            sim.bar_interval_s = 0.2
            async with s.ws_connect(f"{ws_url}/v2/iex") as ws:
                await ws.receive(timeout=5)
                timeout_reply = json.loads((await ws.receive(timeout=5)).data)
            bars = []
            async with s.ws_connect(f"{ws_url}/v1beta3/crypto/us") as ws:
                await ws.receive(timeout=5)
                await ws.send_str(json.dumps({"action": "auth", "key": "k", "secret": "s"}))
                await ws.send_str(json.dumps({"action": "subscribe", "bars": ["BTC/USD"]}))
                while not bars:
                    for m in json.loads((await ws.receive(timeout=5)).data):
                        if m["T"] == "b":
                            bars.append(m)
            return timeout_reply, bars

    timeout_reply, bars = asyncio.run(go())
    assert timeout_reply == [{"T": "error", "code": 404, "msg": "auth timeout"}]
    b = bars[0]
    assert b["S"] == "BTC/USD" and b["l"] <= min(b["o"], b["c"]) <= max(b["o"], b["c"]) <= b["h"] and b["v"] > 0


def test_auth_failure_is_counted_and_retried():
    async def go():
        async with running_sim(symbols=SYMBOLS) as (_, _, ws_url):
            handler = AlpacaMarketHandler("alpaca", ["AAPL"])
            feed = AlpacaFeed(handler, ws_url, key="", secret="", backoff=Backoff(0.01, 0.05, rng=random.Random(0)))
            task = asyncio.get_running_loop().create_task(feed.run())
            await wait_until(lambda: feed.counters["auth_failures"] >= 2, 20, "auth failures")
            await feed.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return handler, feed

    handler, feed = asyncio.run(go())
    assert feed.counters["connects"] == 0
    assert handler.error_counts()["venue_error_402"] >= 2


def test_bad_messages_are_counted_and_skipped():
    h = AlpacaMarketHandler("alpaca", ["BTC/USD"])
    h.on_message(b"not json")
    h.on_message('{"T": "t"}')  # not an array
    h.on_message(json.dumps([{"T": "t", "S": "DOGE/USD", "p": 1, "s": 1, "i": 1},
                             {"T": "t", "S": "BTC/USD", "p": -5, "s": 1, "i": 2},
                             {"T": "q", "S": "BTC/USD", "bp": "x"},
                             {"T": "o", "S": "BTC/USD", "b": [{"p": 10, "s": 1}], "a": []},  # before a full book
                             {"T": "zz", "S": "BTC/USD"},
                             {"T": "o", "S": "BTC/USD", "r": True, "b": [{"p": 10, "s": 1}], "a": [{"p": 11, "s": 2}]},
                             {"T": "o", "S": "BTC/USD", "b": [{"p": 10, "s": 0}, {"p": 10.5, "s": 3}], "a": []},
                             {"T": "o", "S": "BTC/USD", "b": [{"p": -1, "s": 3}], "a": []},
                             {"T": "t", "S": "BTC/USD", "p": 10.7, "s": 0.5, "i": 9, "tks": "S",
                              "t": "2024-03-01T12:00:00.123456789Z"}]))
    errors = h.error_counts()
    for kind in ("json", "schema_envelope", "unknown_symbol", "bad_value", "schema"):
        assert errors.get(kind, 0) >= 1, (kind, errors)
    st = h.symbols["BTC/USD"]
    assert st.book.top(5) == ([(10.5, 3.0)], [(11.0, 2.0)])  # the bad increment changed nothing
    books, trades = h.drain()
    assert books["BTC/USD"].tradeable
    assert len(trades) == 1 and trades[0].exchange_ts_ns % 10**9 == 123456789


def test_timestamps():
    assert parse_timestamp_ns("1970-01-01T00:00:01Z") == 10**9
    assert parse_timestamp_ns("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_timestamp_ns("") == 0

