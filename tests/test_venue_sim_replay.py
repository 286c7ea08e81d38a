"""The venue simulator replaying recordings: over real sockets into the real feed handlers, REST depth
consistent with the replayed diffs, the real venue samples, pacing, Alpaca, the CLI, config and launcher."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from cluster.config import ConfigError, MarketSection, SymbolSection, parse_config
from gateways.alpaca.feed import AlpacaFeed, AlpacaMarketHandler
from gateways.binance.depth_sync import SyncState
from gateways.binance.feed import Backoff, BinanceFeed
from gateways.binance.market_handler import BinanceMarketHandler
from gateways.recording import RawRecorder, read_raw, replay_raw
from gateways.venue_sim.exchange import FaultPlan, SimExchange
from gateways.venue_sim.replay import ReplayDriver, ReplayError, load_recording
from tests.test_venue_sim_support import SYMBOLS, caught_up, running_sim, wait_until

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "binance"
NAMES = [s.symbol for s in SYMBOLS]


def _record(path: Path) -> None:
    """Record a live session with a lossy link (so the file holds gaps and the recorder's resync snapshots),
    ending with a synced book."""

    async def go():
        async with running_sim(FaultPlan(drop=0.03, seed=5), updates_per_second=50) as (ex, http, ws):
            handler = BinanceMarketHandler("paper", NAMES)
            with RawRecorder(path) as rec:
                feed = BinanceFeed(handler, http, ws, recorder=rec,
                                   backoff=Backoff(base_s=0.02, cap_s=0.1, rng=random.Random(2)))
                task = asyncio.get_running_loop().create_task(feed.run())
                await wait_until(lambda: all(handler.symbols[s].stats()["applied"] > 30 for s in NAMES), 40, "data")
                ex.faults.drop = 0.0  # end on a synced book: later events reveal any last loss
                await wait_until(lambda: caught_up(handler, ex, NAMES), 40, "the recorder to be synced")
                await feed.stop()
                await asyncio.wait_for(task, 5)
            assert sum(handler.symbols[s].stats()["resyncs"] for s in NAMES) > 0  # the file has gaps

    asyncio.run(go())


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "session.jsonl.gz"
    _record(path)
    return path


def _direct_books(path: Path) -> BinanceMarketHandler:
    """The books built directly from the file: the recording through the same handler, no sockets."""
    direct = BinanceMarketHandler("paper", NAMES)
    asyncio.run(replay_raw(path, direct))
    return direct


def test_replayed_recording_over_real_sockets_gives_the_book_built_from_the_file(recording):
    direct = _direct_books(recording)
    assert all(direct.symbols[s].sync.state is SyncState.SYNCED for s in NAMES)

    async def go():
        async with running_sim(replay=[str(recording)], replay_speed=0) as (ex, http, ws):
            driver = ex.replay
            handler = BinanceMarketHandler("paper", NAMES)
            feed = BinanceFeed(handler, http, ws, backoff=Backoff(base_s=0.02, cap_s=0.1, rng=random.Random(3)))
            task = asyncio.get_running_loop().create_task(feed.run())
            await wait_until(lambda: driver.finished, 20, "the end of the replay")
            await wait_until(lambda: caught_up(handler, ex, NAMES), 30, "the feed to catch up with the replay")
            await feed.stop()
            await asyncio.wait_for(task, 5)
            return ex, driver, handler, feed

    ex, driver, handler, feed = asyncio.run(go())
    for s in NAMES:
        assert handler.symbols[s].sync.last_update_id == direct.symbols[s].sync.last_update_id, s
        assert handler.symbols[s].book.top(10_000) == direct.symbols[s].book.top(10_000), s
        assert ex.markets[s].book_levels() == handler.symbols[s].book.top(10_000), s
        assert ex.markets[s].counters["jumps"] > 0  # the recording's own gaps were bridged by its snapshots
        assert handler.symbols[s].stats()["trades"] == direct.symbols[s].stats()["trades"]
    assert feed.counters["connects"] == 1 and driver.position == driver.records


def _write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _ev(U: int, u: int, b: list | None = None, a: list | None = None, s: str = "BTCUSDT") -> dict:  # noqa: N803
    return {"e": "depthUpdate", "E": 1_700_000_000_000 + u, "s": s, "U": U, "u": u, "b": b or [], "a": a or []}


def test_rest_depth_follows_the_replayed_diffs_and_bridges_gaps_with_the_next_snapshot(tmp_path):
    s1 = {"lastUpdateId": 100, "bids": [["10.00", "1.0"], ["9.80", "2.0"]], "asks": [["11.00", "2.0"]]}
    s2 = {"lastUpdateId": 109, "bids": [["9.90", "4.0"]], "asks": [["11.00", "3.5"]]}
    s3 = {"lastUpdateId": 125, "bids": [["9.90", "4.0"], ["9.70", "1"]], "asks": [["11.00", "3.5"]]}
    path = _write_lines(tmp_path / "events.jsonl", [
        s1,  # a bare REST body: its symbol is the file's only symbol
        _ev(95, 99, b=[["9.00", "5"]]),  # older than the snapshot
        _ev(100, 102, b=[["10.00", "0"]], a=[["11.00", "3.5"]]),  # straddles lastUpdateId + 1
        _ev(110, 111, b=[["9.50", "1"]]),  # the recording lost 103..109
        s2,  # the recorder's resync
        {"stream": "btcusdt@depth@100ms", "data": _ev(112, 112, a=[["11.50", "1"]])},
        "not json at all",
        _ev(120, 121, b=[["9.90", "7"]]),  # another loss; this event is older than the next snapshot
        s3,
        _ev(126, 126, a=[["11.50", "2"]]),
        _ev(130, 130, a=[["12.00", "1"]]),  # a loss with no snapshot after it
    ])
    rec = load_recording(str(path))
    assert rec.symbols == ["BTCUSDT"] and rec.skipped == {"malformed": 1}
    ex = SimExchange([SYMBOLS[0]], MarketSection())
    driver = ReplayDriver(ex, rec, speed=0)
    market = ex.markets["BTCUSDT"]
    assert json.loads(market.snapshot()) == s1  # the book starts from the recording's first snapshot
    driver.advance(2)  # the snapshot record and the old event
    assert json.loads(market.snapshot(limit=1)) == {"lastUpdateId": 100, "bids": [["10.00", "1.0"]],
                                                    "asks": [["11.00", "2.0"]]}
    driver.advance(3)
    assert json.loads(market.snapshot()) == {"lastUpdateId": 102, "bids": [["9.80", "2.0"]],
                                             "asks": [["11.00", "3.5"]]}
    driver.advance(4)  # the gap: the book jumps to the next recorded snapshot, then applies the event
    assert json.loads(market.snapshot()) == {"lastUpdateId": 111, "bids": [["9.90", "4.0"], ["9.50", "1"]],
                                             "asks": [["11.00", "3.5"]]}
    driver.advance(6)
    assert json.loads(market.snapshot())["lastUpdateId"] == 112
    assert market.book_levels() == ([(9.9, 4.0), (9.5, 1.0)], [(11.0, 3.5), (11.5, 1.0)])
    driver.advance(7)  # covered by the next snapshot: the book is that snapshot, the event is not applied
    assert json.loads(market.snapshot()) == s3
    driver.advance(driver.records)  # the last loss has no snapshot after it: the diffs go on regardless
    assert json.loads(market.snapshot()) == {"lastUpdateId": 130, "bids": s3["bids"],
                                             "asks": [["11.00", "3.5"], ["11.50", "2"], ["12.00", "1"]]}
    assert market.counters == {"applied": 5, "skipped": 2, "gaps": 3, "jumps": 2, "unrecoverable_gaps": 1,
                               "snapshots": 3}

    # A recording of diffs alone: the book is what the diffs make it, starting just before the first one.
    only = load_recording(str(_write_lines(tmp_path / "diffs.jsonl", [_ev(5, 6, b=[["1.0", "2"]]),
                                                                      _ev(7, 7, a=[["2.0", "3"]])])))
    ex2 = SimExchange([SYMBOLS[0]], MarketSection())
    d2 = ReplayDriver(ex2, only, speed=0)
    assert json.loads(ex2.markets["BTCUSDT"].snapshot()) == {"lastUpdateId": 4, "bids": [], "asks": []}
    d2.advance(2)
    assert json.loads(ex2.markets["BTCUSDT"].snapshot()) == {"lastUpdateId": 7, "bids": [["1.0", "2"]],
                                                             "asks": [["2.0", "3"]]}


def test_a_bare_snapshot_without_a_symbol_is_refused_with_the_fix(tmp_path):
    snap = tmp_path / "snap.json"
    snap.write_text(json.dumps({"lastUpdateId": 1, "bids": [], "asks": []}))
    with pytest.raises(ReplayError, match="SYMBOL="):
        load_recording(str(snap))
    assert load_recording(f"ETHUSDT={snap}").records[0].symbol == "ETHUSDT"
    with pytest.raises(ReplayError, match="no such file"):
        load_recording(str(tmp_path / "missing.jsonl.gz"))


def test_the_real_binance_samples_are_served_as_the_venue_sent_them():
    sample_snap = json.loads((SHARED / "rest_spot_depth_snapshot.json").read_text())
    sample_agg = json.loads((SHARED / "ws_spot_agg_trade.json").read_text())

    async def go():
        async with running_sim(replay=[f"BTCUSDT={SHARED}"], replay_speed=0) as (ex, http, ws), \
                aiohttp.ClientSession() as s:
            async with s.get(f"{http}/api/v3/depth", params={"symbol": "BTCUSDT", "limit": "5000"}) as r:
                full = json.loads(await r.read())
            async with s.get(f"{http}/api/v3/depth", params={"symbol": "BTCUSDT", "limit": "3"}) as r:
                top3 = json.loads(await r.read())
            got = {}
            async with s.ws_connect(f"{ws}/stream?streams=ethusdt@aggTrade/ethusdt@trade") as conn:
                while len(got) < 2:
                    msg = json.loads((await conn.receive(timeout=5)).data)
                    got[msg["stream"]] = msg["data"]
            return ex.replay, full, top3, got

    driver, full, top3, got = asyncio.run(go())
    assert full == sample_snap  # exact decimal strings and lastUpdateId
    assert top3 == {"lastUpdateId": sample_snap["lastUpdateId"], "bids": sample_snap["bids"][:3],
                    "asks": sample_snap["asks"][:3]}
    assert got["ethusdt@aggTrade"] == sample_agg["data"]
    trade = got["ethusdt@trade"]  # derived: the recording has aggregate trades only
    assert (trade["e"], trade["t"], trade["p"], trade["q"], trade["m"]) == ("trade", 228423, "1632.46000000",
                                                                            "0.34305000", False)
    assert driver.recording.skipped == {"exchange_info": 1, "not_market_data:executionReport": 1}


def _trade_msg(i: int) -> str:
    return json.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1, "s": "BTCUSDT", "t": i,
                                                           "p": "100.0", "q": "1.0", "T": 1, "m": False}})


@pytest.mark.parametrize("speed", [1.0, 0.0])
def test_paced_at_the_receive_timestamps_or_at_full_speed(tmp_path, speed):
    path = tmp_path / "paced.jsonl.gz"
    with RawRecorder(path) as rec:
        for i in range(4):
            rec.record("ws", _trade_msg(i + 1), 5_000_000_000 + i * 150_000_000)  # 0.45 s of recording

    async def go():
        async with running_sim(replay=[str(path)], replay_speed=speed) as (_, _h, ws), aiohttp.ClientSession() as s:
            times, ids = [], []
            async with s.ws_connect(f"{ws}/stream?streams=btcusdt@trade") as conn:
                while len(ids) < 4:
                    msg = json.loads((await conn.receive(timeout=5)).data)
                    times.append(time.monotonic())
                    ids.append(msg["data"]["t"])
            return times, ids

    times, ids = asyncio.run(go())
    assert ids == [1, 2, 3, 4]
    if speed:
        assert times[-1] - times[0] >= 0.4  # the recorded 0.45 s, never compressed


def test_alpaca_clients_get_the_replayed_market(recording):
    """A Binance recording on the Alpaca stock WebSocket (quotes = the replayed book's top, trades)."""

    async def go():
        async with running_sim(replay=[str(recording)], replay_speed=0) as (ex, _h, ws):
            handler = AlpacaMarketHandler("alpaca", ["BTCUSDT"])
            feed = AlpacaFeed(handler, ws, key="k", secret="s")
            task = asyncio.get_running_loop().create_task(feed.run())
            await wait_until(lambda: ex.replay.finished, 20, "the end of the replay")
            bids, asks = ex.markets["BTCUSDT"].book_levels()
            await wait_until(lambda: handler.symbols["BTCUSDT"].book.top(1) == (bids[:1], asks[:1]), 30, "quote")
            await feed.stop()
            await asyncio.wait_for(task, 5)
            return handler

    handler = asyncio.run(go())
    trades = [r for r in read_raw(recording) if '"btcusdt@trade"' in r.raw]
    assert handler.symbols["BTCUSDT"].counters["trades"] == len(trades) > 0


def test_a_recorded_binance_symbol_is_served_to_alpaca_crypto_clients_under_its_mapped_name(recording):
    """`replay_symbols` {BTCUSDT: BTC/USD}: Alpaca crypto clients that ask for BTC/USD get the recorded BTCUSDT
    market (its order book and its trades), and the simulator keeps that book, and matches orders on it, as
    BTC/USD."""
    rec = load_recording([str(recording)], rename={"BTCUSDT": "BTC/USD"})
    assert set(rec.symbols) == {"BTC/USD", "ETHUSDT"} and {r.symbol for r in rec.records} == {"BTC/USD", "ETHUSDT"}
    direct = _direct_books(recording)

    async def go():
        symbols = [SymbolSection(symbol="BTC/USD", venue="alpaca", price=60000.0, tick_size=0.1, lot_size=0.0001),
                   SYMBOLS[1]]
        async with running_sim(symbols=symbols, replay=rec, replay_speed=0) as (ex, _h, ws):
            handler = AlpacaMarketHandler("alpaca", ["BTC/USD"])
            feed = AlpacaFeed(handler, ws, key="k", secret="s")
            task = asyncio.get_running_loop().create_task(feed.run())
            await wait_until(lambda: ex.replay.finished, 30, "the end of the replay")
            venue = ex.markets["BTC/USD"].book_levels()
            await wait_until(lambda: handler.symbols["BTC/USD"].book.top(5) == (venue[0][:5], venue[1][:5]), 30,
                             "the order book")
            await feed.stop()
            await asyncio.wait_for(task, 5)
            return ex, handler, venue

    ex, handler, venue = asyncio.run(go())
    assert "BTCUSDT" not in ex.markets
    assert venue == direct.symbols["BTCUSDT"].book.top(10_000)  # the recorded market, under its new name
    trades = [r for r in read_raw(recording) if '"btcusdt@trade"' in r.raw]
    assert handler.symbols["BTC/USD"].counters["trades"] == len(trades) > 0


def test_replay_symbol_mapping_refuses_what_it_cannot_serve(recording, tmp_path):
    with pytest.raises(ReplayError, match=r"has no \['XRPUSDT'\]"):
        load_recording([str(recording)], rename={"XRPUSDT": "XRP/USD"})
    with pytest.raises(ReplayError, match=r"\['ETHUSDT'\] would be served twice"):
        load_recording([str(recording)], rename={"BTCUSDT": "ETHUSDT"})
    base = {"venues": {"alpaca": {"type": "alpaca"}}, "symbols": [{"symbol": "BTC/USD", "venue": "alpaca"}],
            "market": {"source": "replay", "replay_path": str(recording)}}
    with pytest.raises(ConfigError, match=r"market\.replay_symbols\.BTCUSDT: 'BTC/USDT' is not a configured symbol"):
        parse_config({**base, "market": {**base["market"], "replay_symbols": {"BTCUSDT": "BTC/USDT"}}})
    cfg = parse_config({**base, "market": {**base["market"], "replay_symbols": {"BTCUSDT": "BTC/USD"}}})
    assert cfg.market.replay_symbols == {"BTCUSDT": "BTC/USD"}
    # The simulator process takes the mapping from the config or from --replay-symbol, and refuses a bad one.
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(f"venues: {{paper: {{}}, alpaca: {{type: alpaca}}}}\n"
                        f"symbols:\n  - {{symbol: BTC/USD, venue: alpaca}}\n  - {{symbol: ETHUSDT}}\n"
                        f"market: {{source: replay, replay_path: '{recording}', replay_speed: 0,"
                        f" replay_symbols: {{BTCUSDT: BTC/USD}}}}\n")
    cmd = [sys.executable, "-m", "gateways.venue_sim", "--config", str(cfg_file), "--port", "0"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(10)
    assert set(info["replay"]["symbols"]) == {"BTC/USD", "ETHUSDT"}
    bad = subprocess.run([*cmd, "--replay-symbol", "BTCUSDT"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "expected RECORDED=SERVED" in bad.stderr


def test_an_alpaca_recording_replays_on_the_alpaca_websocket(tmp_path):
    path = tmp_path / "alpaca.jsonl.gz"
    frames = [
        [{"T": "success", "msg": "connected"}],
        [{"T": "o", "S": "BTC/USD", "t": "2024-01-01T00:00:00Z", "b": [{"p": 100.0, "s": 1.0}, {"p": 99.0, "s": 2.0}],
          "a": [{"p": 101.0, "s": 1.5}], "r": True}],
        [{"T": "o", "S": "BTC/USD", "t": "2024-01-01T00:00:01Z", "b": [{"p": 100.0, "s": 0}],
          "a": [{"p": 102.0, "s": 3.0}]},
         {"T": "t", "S": "BTC/USD", "p": 100.5, "s": 0.1, "t": "2024-01-01T00:00:01Z", "i": 7, "tks": "B"}],
        [{"T": "o", "S": "BTC/USD", "t": "2024-01-01T00:00:02Z", "b": [{"p": 99.5, "s": 4.0}], "a": []}],
    ]
    with RawRecorder(path) as rec:
        for i, f in enumerate(frames):
            rec.record("ws", json.dumps(f), 1_000_000_000 + i * 1_000_000)

    async def go():
        sym = SymbolSection(symbol="BTC/USD", venue="alpaca", price=100.0)
        async with running_sim(symbols=[sym], replay=[str(path)], replay_speed=0) as (ex, _h, ws):
            handler = AlpacaMarketHandler("alpaca", ["BTC/USD"])
            feed = AlpacaFeed(handler, ws, key="k", secret="s")
            task = asyncio.get_running_loop().create_task(feed.run())
            await wait_until(lambda: ex.replay.finished and handler.symbols["BTC/USD"].counters["trades"] == 1, 10,
                             "the replay")
            await wait_until(lambda: handler.symbols["BTC/USD"].book.top(10) == ex.markets["BTC/USD"].book_levels(),
                             5, "the book")
            await feed.stop()
            await asyncio.wait_for(task, 5)
            return handler

    handler = asyncio.run(go())
    assert handler.symbols["BTC/USD"].book.top(10) == ([(99.5, 4.0), (99.0, 2.0)], [(101.0, 1.5), (102.0, 3.0)])


def test_cli_flag_serves_a_recording_and_refuses_a_missing_one(recording, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("symbols:\n  - {symbol: BTCUSDT}\n  - {symbol: ETHUSDT}\n")
    cmd = [sys.executable, "-m", "gateways.venue_sim", "--config", str(cfg), "--port", "0"]
    proc = subprocess.Popen([*cmd, "--replay", str(recording), "--speed", "0"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(10)
    assert info["event"] == "listening" and info["replay"]["speed"] == 0
    assert info["replay"]["records"] == sum(1 for _ in read_raw(recording))
    assert set(info["replay"]["symbols"]) == set(NAMES)
    bad = subprocess.run([*cmd, "--replay", str(tmp_path / "nope.jsonl.gz")], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_config_keys_and_the_launcher_start_the_replaying_simulator(recording, tmp_path):
    from actors.feed import feed_endpoints
    from cluster.launch import ClusterRun

    base = {"symbols": [{"symbol": "BTCUSDT"}, {"symbol": "ETHUSDT"}]}
    with pytest.raises(ConfigError, match=r"market\.replay_path: no such file"):
        parse_config({**base, "market": {"source": "replay", "replay_path": str(tmp_path / "nope.gz")}})
    with pytest.raises(ConfigError, match=r"market\.replay_path: .*no replay_path"):
        parse_config({**base, "market": {"source": "replay"}})
    with pytest.raises(ConfigError, match=r"market\.replay_speed"):
        parse_config({**base, "market": {"source": "replay", "replay_path": str(recording), "replay_speed": -1}})
    with pytest.raises(ConfigError, match=r"market\.replay_loop"):
        parse_config({**base, "market": {"source": "replay", "replay_path": str(recording), "replay_loop": "yes"}})
    cfg = parse_config({**base, "market": {"source": "replay", "replay_path": str(recording), "replay_speed": 0,
                                           "replay_loop": True}})
    assert feed_endpoints(cfg, "paper", "http://127.0.0.1:7")["ws_url"] == "ws://127.0.0.1:7"

    run = ClusterRun(cfg, run_dir=tmp_path / "run")
    run._start_market()
    try:
        info = run.market_sim.info
        assert info["replay"]["records"] > 0 and set(info["replay"]["symbols"]) == set(NAMES)
        assert info["replay"]["loop"] is True  # the launcher handed the simulator process the config's loop

        async def depth() -> dict:
            async with aiohttp.ClientSession() as s, s.get(f"{run.market_sim.http_url}/api/v3/depth",
                                                           params={"symbol": "BTCUSDT"}) as r:
                return json.loads(await r.read())

        snap = asyncio.run(depth())  # the recording's first snapshot, before any subscriber
        first = next(r for r in read_raw(recording) if r.kind == "rest:BTCUSDT")
        assert snap == json.loads(first.raw)
    finally:
        run.market_sim.stop()


def test_a_looping_replay_starts_again_with_ids_moved_on_and_the_feed_resyncs_at_each_seam(recording):
    """Three passes of the recording through the real feed: one resync per seam, the book equal to the venue's
    at the end, trade ids contiguous over all passes (none repeated, none dropped as a duplicate)."""
    direct = _direct_books(recording)

    async def go():
        # At twice the recorded pace the feed is synced well before each seam (at full speed it could sync once,
        # at the very end, from a snapshot newer than everything it buffered).
        async with running_sim(replay=[str(recording)], replay_speed=2, replay_loop=True) as (ex, http, ws):
            driver = ex.replay
            handler = BinanceMarketHandler("paper", NAMES)
            feed = BinanceFeed(handler, http, ws, backoff=Backoff(base_s=0.02, cap_s=0.1, rng=random.Random(3)))
            task = asyncio.get_running_loop().create_task(feed.run())
            await wait_until(lambda: driver.passes >= 2, 30, "two passes of the looping replay")
            # The third pass is the last one and runs to the recording's end. Stopping the replay mid-pass instead
            # could catch the feed resyncing at a seam, waiting for an event after its snapshot that never comes.
            driver.loop = False
            await wait_until(lambda: driver.finished, 30, "the third pass to end")
            await wait_until(lambda: caught_up(handler, ex, NAMES), 30, "the feed to catch up with the replay")
            await feed.stop()
            await asyncio.wait_for(task, 5)
            return ex, driver, handler

    ex, driver, handler = asyncio.run(go())
    assert driver.passes >= 2 and driver.finished
    for s in NAMES:
        st = handler.symbols[s].stats()
        assert ex.markets[s].book_levels() == handler.symbols[s].book.top(10_000), s
        assert st["resyncs"] >= 2 and st["trade_duplicates"] == 0, st  # a resync at each of the two seams
        assert handler.symbols[s].sync.last_update_id > direct.symbols[s].sync.last_update_id
        ids = [int(t.trade_id) for t in handler.trades if t.symbol == s]
        once = [int(t.trade_id) for t in direct.trades if t.symbol == s]  # the recording's (it lost a few)
        span = max(once) - min(once) + 1
        passes = [i + k * span for k in range(driver.passes + 1) for i in once]
        assert len(ids) >= 2 * len(once) and ids == passes[:len(ids)], s
