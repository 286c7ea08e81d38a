"""The Binance feed handler: over real sockets against the simulator (with faults), and on bad input."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
from aiohttp import web

from gateways.binance.depth_sync import SyncState
from gateways.binance.feed import Backoff, BinanceFeed, is_server_shutdown
from gateways.binance.market_handler import BinanceMarketHandler
from gateways.venue_sim.exchange import FaultPlan
from gateways.venue_sim.server import start_server
from tests.test_venue_sim_support import SYMBOLS, caught_up, running_sim, wait_until

NAMES = [s.symbol for s in SYMBOLS]


async def run_feed_against(faults: FaultPlan | None, seconds: float, **feed_kw):
    """Run the real feed against the simulator, stop the market, wait for the feed to catch up; returns both."""
    async with running_sim(faults, updates_per_second=50, **feed_kw.pop("sim_kw", {})) as (ex, http, ws):
        handler = BinanceMarketHandler("paper", NAMES, book_depth=5)
        feed = BinanceFeed(handler, http, ws, backoff=Backoff(base_s=0.02, cap_s=0.2, rng=random.Random(1)),
                           **feed_kw)
        task = asyncio.get_running_loop().create_task(feed.run())
        await asyncio.sleep(seconds)
        feed.max_connection_age_s = 24 * 3600.0
        ex.stop()  # freeze the market (the tick loop ends), so the books can be compared exactly
        await asyncio.sleep(0.05)
        # A lost last event is only noticed when the next one arrives: send a few more, without faults.
        ex.faults.drop = ex.faults.reorder = ex.faults.duplicate = 0.0
        ex.faults.disconnect_after = 0
        for _ in range(3):
            ex.step(0.02)
            await asyncio.sleep(0.05)
        try:
            await wait_until(lambda: caught_up(handler, ex, NAMES), 30, "the feed to catch up with the market")
        finally:
            await feed.stop()
            await asyncio.wait_for(task, 5)
        return ex, handler, feed


async def synced_feed(ex, http: str, ws: str, **feed_kw):
    """(the simulator's Binance market module, handler, feed, the feed's task) once every book is synced."""
    market = next(fn.__self__ for fn in ex.listeners if type(fn.__self__).__name__ == "BinanceMarketSim")
    handler = BinanceMarketHandler("paper", NAMES, book_depth=5)
    feed = BinanceFeed(handler, http, ws, backoff=Backoff(base_s=0.02, cap_s=0.2, rng=random.Random(1)), **feed_kw)
    task = asyncio.get_running_loop().create_task(feed.run())
    await wait_until(lambda: all(handler.symbols[s].sync.state is SyncState.SYNCED for s in NAMES), 30, "sync")
    return market, handler, feed, task


async def more_data(handler: BinanceMarketHandler, what: str) -> None:
    """Wait until the books have taken a few more depth events."""
    def applied() -> int:
        return sum(handler.symbols[s].stats()["applied"] for s in NAMES)

    before = applied()
    await wait_until(lambda: applied() > before + 5, 5, what)


def assert_books_equal(ex, handler) -> None:
    for s in NAMES:
        venue_bids, venue_asks = ex.markets[s].book_levels()
        bids, asks = handler.symbols[s].book.top(10_000)
        assert bids == venue_bids and asks == venue_asks, s


def test_feed_book_equals_the_venue_book_over_real_sockets():
    ex, handler, feed = asyncio.run(run_feed_against(None, 0.8))
    assert_books_equal(ex, handler)
    stats = handler.stats()
    assert all(stats[s]["applied"] > 10 and stats[s]["resyncs"] == 0 for s in NAMES)
    assert all(stats[s]["trades"] > 0 and stats[s]["tickers"] > 0 for s in NAMES)
    books, trades = handler.drain()
    assert trades and all(t.symbol in NAMES for t in trades)
    assert feed.counters["connects"] == 1


def test_dropped_duplicated_and_reordered_messages_resync_to_the_right_book():
    faults = FaultPlan(drop=0.05, duplicate=0.1, reorder=0.1, seed=7)
    ex, handler, _ = asyncio.run(run_feed_against(faults, 1.0))
    assert_books_equal(ex, handler)
    stats = handler.stats()
    assert sum(stats[s]["gaps"] for s in NAMES) > 0
    assert sum(stats[s]["resyncs"] for s in NAMES) > 0
    assert sum(stats[s]["duplicates"] + stats[s]["out_of_order"] for s in NAMES) > 0


def test_disconnects_reconnect_with_backoff_and_resync():
    ex, handler, feed = asyncio.run(run_feed_against(FaultPlan(disconnect_after=25), 1.0))
    assert feed.counters["connects"] >= 3
    assert_books_equal(ex, handler)


def test_rest_429_and_5xx_are_retried_until_synced():
    faults = FaultPlan(rest_429=0.4, rest_5xx=0.3, seed=2)
    ex, handler, feed = asyncio.run(run_feed_against(faults, 1.0))
    assert feed.counters["rate_limited"] + feed.counters["snapshot_errors"] > 0
    assert_books_equal(ex, handler)


def test_reconnects_make_before_break_before_the_connection_age_limit():
    """At the (shortened) 24-hour limit the feed opens a new connection, switches, then closes the old one:
    no book resyncs (one snapshot per symbol in the whole run) and no trade is missed or counted twice."""
    ex, handler, feed = asyncio.run(run_feed_against(None, 2.0, max_connection_age_s=0.3, handover_overlap_s=0.1))
    assert feed.counters["handovers"] >= 3 and feed.counters["age_reconnects"] >= feed.counters["handovers"]
    assert feed.counters["handover_failures"] == 0 and feed.counters["disconnects"] == 0
    assert feed.counters["handover_overlap_dropped"] > 0  # the two connections did overlap
    market = next(fn.__self__ for fn in ex.listeners if type(fn.__self__).__name__ == "BinanceMarketSim")
    assert market.peak_connections == 2 and market.connections_opened == feed.counters["connects"]
    stats = handler.stats()
    for s in NAMES:
        assert stats[s]["snapshots"] == 1 and stats[s]["resyncs"] == 0 and stats[s]["gaps"] == 0, stats[s]
        # (one event equal to the snapshot's id may be in flight at the first sync; nothing else is old)
        assert stats[s]["out_of_order"] == 0 and stats[s]["duplicates"] <= 1, stats[s]
        assert stats[s]["trade_duplicates"] == 0, stats[s]
        ids = [int(t.trade_id) for t in handler.trades if t.symbol == s]
        assert len(ids) > 10 and ids == list(range(ids[0], ids[0] + len(ids))), s  # contiguous: none missed
    assert_books_equal(ex, handler)


def test_the_old_connection_is_closed_only_after_the_switch():
    """Make-before-break: while the new connection warms up, the old one still delivers and the book stays
    synced; a new connection that cannot be opened leaves the old one in use (tried again later)."""

    async def go():
        async with running_sim(updates_per_second=50) as (ex, http, ws):
            market, handler, feed, task = await synced_feed(ex, http, ws, handover_overlap_s=0.5)
            feed.max_connection_age_s = 0.0  # due now
            await wait_until(lambda: len(market.conns) == 2, 20, "the second connection")
            # Both open: the old one is still the one read, and the books are still synced.
            synced_during = all(handler.symbols[s].sync.state is SyncState.SYNCED for s in NAMES)
            feed.max_connection_age_s = 3600.0
            await wait_until(lambda: feed.counters["handovers"] == 1 and len(market.conns) == 1, 20, "the switch")
            # A new connection that fails: the old one stays in use.
            good_url = feed.ws_url
            feed.ws_url = "ws://127.0.0.1:9"  # nothing listens there
            feed.max_connection_age_s = 0.0
            await wait_until(lambda: feed.counters["handover_failures"] >= 1, 20, "a failed handover")
            feed.ws_url = good_url
            feed.max_connection_age_s = 3600.0
            await more_data(handler, "data on the old connection")
            await feed.stop()
            await asyncio.wait_for(task, 5)
            return synced_during, handler, feed

    synced_during, handler, feed = asyncio.run(go())
    assert synced_during
    assert feed.counters["disconnects"] == 0
    assert all(handler.symbols[s].stats()["resyncs"] == 0 and handler.symbols[s].stats()["snapshots"] == 1
               for s in NAMES)


def test_a_server_shutdown_notice_switches_connections_before_the_venue_closes_the_old_one():
    """Binance sends `serverShutdown` before maintenance: the feed moves to a new connection at once,
    make-before-break, long before its 24-hour limit, and the venue's close then costs nothing."""

    async def go():
        async with running_sim(updates_per_second=50) as (ex, http, ws):
            market, handler, feed, task = await synced_feed(ex, http, ws, handover_overlap_s=0.2)
            assert market.announce_shutdown(close_after_s=2.0) == 1
            await wait_until(lambda: feed.counters["handovers"] == 1 and len(market.conns) == 1, 20, "the switch")
            await asyncio.sleep(2.2)  # past the venue's close of the old connection
            await more_data(handler, "data on the new connection")
            await feed.stop()
            await asyncio.wait_for(task, 5)
            return handler, feed, market

    handler, feed, market = asyncio.run(go())
    assert feed.counters["shutdown_notices"] == 1 and feed.counters["age_reconnects"] == 1
    assert feed.counters["disconnects"] == 0 and feed.counters["connects"] == 2
    assert market.peak_connections == 2
    for s in NAMES:
        st = handler.symbols[s].stats()
        assert st["resyncs"] == 0 and st["snapshots"] == 1 and st["gaps"] == 0, st
    assert not handler.errors.counts  # the notice is not market data: never reported as a bad message


def test_server_shutdown_notices_are_recognised_in_every_documented_shape():
    assert is_server_shutdown(b'{"e": "serverShutdown", "E": 1770123456789}')
    assert is_server_shutdown('{"event": {"e": "serverShutdown", "E": 1770123456789}}')
    assert is_server_shutdown('{"stream": "x", "data": {"e": "serverShutdown", "E": 1}}')
    assert not is_server_shutdown(b'{"stream": "btcusdt@trade", "data": {"e": "trade", "s": "BTCUSDT"}}')
    assert not is_server_shutdown(b'{"e": "trade", "note": "serverShutdown"}')
    assert not is_server_shutdown(b'serverShutdown not json')
    assert not is_server_shutdown(b'["serverShutdown"]')


def test_answers_server_pings():
    ex, handler, feed = asyncio.run(run_feed_against(None, 1.0, sim_kw={"ping_interval_s": 0.1}))
    assert feed.counters["connects"] == 1  # 10 pings, every one answered in time: never dropped
    assert_books_equal(ex, handler)


def test_garbage_on_the_wire_never_crashes_the_feed():
    """A hostile server: bad JSON, wrong shapes, unknown streams, bad numbers, then a good book."""
    good_snapshot = {"lastUpdateId": 100, "bids": [["10.0", "1"]], "asks": [["11.0", "1"]]}
    garbage = [b"\x00\xff not json", "[]", '{"stream": 5}', '{"stream": "dogeusdt@trade", "data": {}}',
               '{"result": null, "id": 1}',
               json.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "s": "BTCUSDT", "t": 1, "p": "NaN",
                                                               "q": "1", "T": 1, "m": True}}),
               json.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "s": "BTCUSDT", "t": 2, "p": "-5",
                                                               "q": "1", "T": 1, "m": True}}),
               json.dumps({"stream": "btcusdt@bookTicker", "data": {"u": 1, "s": "BTCUSDT", "b": "x", "B": "1",
                                                                    "a": "2", "A": "1"}}),
               json.dumps({"stream": "btcusdt@depth@100ms", "data": {"e": "depthUpdate", "E": 1, "s": "ETHUSDT",
                                                                     "U": 1, "u": 2, "b": [], "a": []}}),
               json.dumps({"stream": "btcusdt@depth@100ms", "data": {"e": "depthUpdate", "E": 1, "s": "BTCUSDT",
                                                                     "U": 101, "u": 101, "b": [["abc", "1"]],
                                                                     "a": []}})]
    good = json.dumps({"stream": "btcusdt@depth@100ms", "data": {"e": "depthUpdate", "E": 1, "s": "BTCUSDT",
                                                                 "U": 100, "u": 101, "b": [["10.5", "2"]], "a": []}})

    async def ws_handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for g in garbage:
            await (ws.send_bytes(g) if isinstance(g, bytes) else ws.send_str(g))
        await ws.send_str(good)
        async for _ in ws:  # until the client closes
            pass
        return ws

    async def depth(request):
        return web.json_response(good_snapshot)

    async def go():
        app = web.Application()
        app.router.add_get("/stream", ws_handler)
        app.router.add_get("/api/v3/depth", depth)
        runner, port = await start_server(app)
        try:
            handler = BinanceMarketHandler("binance", ["BTCUSDT"], book_depth=5)
            feed = BinanceFeed(handler, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
            task = asyncio.get_running_loop().create_task(feed.run())
            await wait_until(lambda: handler.symbols["BTCUSDT"].sync.state is SyncState.SYNCED, 20, "sync")
            await feed.stop()
            await asyncio.wait_for(task, 5)
            return handler
        finally:
            await runner.cleanup()

    handler = asyncio.run(go())
    assert handler.symbols["BTCUSDT"].book.top(5) == ([(10.5, 2.0), (10.0, 1.0)], [(11.0, 1.0)])
    errors = handler.error_counts()
    for kind in ("json", "schema_envelope", "unknown_stream", "control", "non_finite", "negative", "non_numeric",
                 "unknown_symbol"):
        assert errors.get(kind, 0) >= 1, (kind, errors)
    stats = handler.stats()["BTCUSDT"]
    assert stats["malformed"] >= 1 and stats["conn_error:json"] == 1


def test_bad_input_is_logged_once_per_kind_with_a_sample(caplog):
    handler = BinanceMarketHandler("binance", ["BTCUSDT"])
    with caplog.at_level("WARNING"):
        for _ in range(5):
            handler.on_message(b"{oops")
    assert handler.error_counts()["json"] == 5
    assert sum("{oops" in r.getMessage() for r in caplog.records) == 1


def test_stale_feed_alarm_flags_the_book():
    handler = BinanceMarketHandler("binance", ["BTCUSDT"], stale_after_s=2.0)
    handler.on_snapshot("BTCUSDT", json.dumps({"lastUpdateId": 5, "bids": [["1.0", "1"]], "asks": [["2.0", "1"]]}))
    handler.on_message(json.dumps({"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 6, "u": 6, "b": [["1.5", "1"]], "a": []}}), recv_ns=10**9)
    books, _ = handler.drain(10**9)
    assert books["BTCUSDT"].tradeable
    assert handler.check_stale(2 * 10**9) == []
    assert handler.check_stale(4 * 10**9) == ["BTCUSDT"]
    assert handler.check_stale(5 * 10**9) == []  # one alarm per episode
    books, _ = handler.drain(4 * 10**9)
    assert books["BTCUSDT"].stale and not books["BTCUSDT"].tradeable
    assert handler.stats()["BTCUSDT"]["stale_alarms"] == 1


def test_an_unsynced_or_crossed_book_is_never_handed_out_as_good():
    handler = BinanceMarketHandler("binance", ["BTCUSDT"])
    handler.on_message(json.dumps({"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": 2, "b": [["1.0", "1"]], "a": []}}))
    assert handler.drain()[0] == {}  # never synced: no book at all (not an empty one)
    handler.on_snapshot("BTCUSDT", json.dumps({"lastUpdateId": 1, "bids": [["1.0", "1"]], "asks": [["2.0", "1"]]}))
    assert handler.drain()[0]["BTCUSDT"].tradeable
    handler.reset()  # a reconnect: the book subscribers hold must be invalidated
    books, _ = handler.drain()
    assert not books["BTCUSDT"].tradeable and not books["BTCUSDT"].bids
    handler.on_message(json.dumps({"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 3, "u": 4, "b": [["3.0", "1"]], "a": []}}))
    handler.on_snapshot("BTCUSDT", json.dumps({"lastUpdateId": 3, "bids": [["1.0", "1"]], "asks": [["2.0", "1"]]}))
    books, _ = handler.drain()
    assert books["BTCUSDT"].crossed and not books["BTCUSDT"].tradeable
    assert handler.stats()["BTCUSDT"]["crossed"] == 1


@pytest.mark.parametrize("attempts", [0, 3, 10, 50])
def test_backoff_is_jittered_and_capped(attempts):
    b = Backoff(base_s=0.5, cap_s=8.0, attempts=attempts, rng=random.Random(attempts))
    delays = [Backoff(base_s=0.5, cap_s=8.0, attempts=attempts, rng=random.Random(i)).next_delay() for i in range(50)]
    ceiling = min(8.0, 0.5 * 2 ** attempts)
    assert all(0.0 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 40  # jittered: reconnecting clients do not stampede together
    b.next_delay()
    b.reset()
    assert b.attempts == 0


def test_combined_stream_url():
    h = BinanceMarketHandler("binance", ["BTCUSDT", "ethusdt"])
    assert h.combined_path() == ("/stream?streams=btcusdt@depth@100ms/btcusdt@trade/btcusdt@bookTicker/"
                                 "ethusdt@depth@100ms/ethusdt@trade/ethusdt@bookTicker")


def test_feed_runs_against_a_url_that_refuses_connections():
    async def go():
        handler = BinanceMarketHandler("binance", ["BTCUSDT"])
        feed = BinanceFeed(handler, "http://127.0.0.1:9", "ws://127.0.0.1:9",
                           backoff=Backoff(base_s=0.01, cap_s=0.05))
        task = asyncio.get_running_loop().create_task(feed.run())
        await wait_until(lambda: feed.counters["disconnects"] >= 3, 20, "retries")
        await feed.stop()
        await asyncio.wait_for(task, 5)
        return feed

    feed = asyncio.run(go())
    assert feed.counters["connects"] == 0



def test_feed_service_publishes_network_books_to_subscribers():
    """The feed actor's logic (no Ray): the real Binance feed handler on the simulator fills subscriber channels."""
    from actors.feed import FeedService, feed_endpoints
    from cluster.config import FeedSection, MarketSection, parse_config

    cfg = parse_config({"symbols": [{"symbol": "BTCUSDT"}]})
    assert feed_endpoints(cfg, "paper", "http://127.0.0.1:5") == {
        "protocol": "binance", "rest_url": "http://127.0.0.1:5", "ws_url": "ws://127.0.0.1:5",
        "data_url": "ws://127.0.0.1:5", "key": "simulator", "secret": "simulator"}
    builtin = parse_config({"symbols": [{"symbol": "BTCUSDT"}], "market": {"source": "builtin"}})
    assert feed_endpoints(builtin, "paper") is None
    real = parse_config({"symbols": [{"symbol": "BTCUSDT"}], "market": {"source": "venue"}})
    assert feed_endpoints(real, "paper")["ws_url"] == "wss://stream.binance.com:9443"

    async def go():
        async with running_sim(updates_per_second=50) as (_, http, ws):
            svc = FeedService("paper", SYMBOLS, MarketSection(), FeedSection(book_depth=3),
                              {"protocol": "binance", "rest_url": http, "ws_url": ws})
            svc.subscribe("strategy:x", object(), NAMES)
            task = asyncio.get_running_loop().create_task(svc.client.run())
            await wait_until(lambda: (svc.pump(time.time_ns()) or True) and len(svc.marks(0)) == 2, 30, "marks")
            await svc.client.stop()
            await asyncio.wait_for(task, 5)
            return svc

    svc = asyncio.run(go())
    ch = svc.channels["strategy:x"]
    assert ch.has_pending
    d = ch.take()
    assert {b.symbol for b in d.books} == set(NAMES) and all(len(b.bids) <= 3 for b in d.books)
    assert all(svc.stats()[s]["synced"] == 1 and svc.stats()[s]["conn:connects"] == 1 for s in NAMES)
