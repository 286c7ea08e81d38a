"""The venue simulator speaks Binance's REST and WebSocket protocols over real sockets, with injected faults."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import msgspec

from gateways.binance.depth_sync import parse_depth_message, parse_depth_snapshot
from gateways.venue_sim.exchange import FaultPlan
from tests.test_venue_sim_support import running_sim, wait_until

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "binance"


def test_rest_depth_time_ping_and_binance_errors():
    async def go():
        async with running_sim() as (ex, http, _), aiohttp.ClientSession() as s:
            async with s.get(f"{http}/api/v3/depth", params={"symbol": "BTCUSDT", "limit": "5"}) as r:
                assert r.status == 200
                assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) >= 5
                snap = parse_depth_snapshot(await r.read())
            assert len(snap.bids) == 5 and len(snap.asks) == 5
            assert float(snap.bids[0][0]) < float(snap.asks[0][0])
            assert snap.lastUpdateId <= ex.markets["BTCUSDT"].update_id
            async with s.get(f"{http}/api/v3/depth", params={"symbol": "DOGEUSDT"}) as r:
                assert r.status == 400 and await r.json() == {"code": -1121, "msg": "Invalid symbol."}
            async with s.get(f"{http}/api/v3/depth") as r:
                assert r.status == 400 and (await r.json())["code"] == -1102
            async with s.get(f"{http}/api/v3/depth", params={"symbol": "BTCUSDT", "limit": "x"}) as r:
                assert r.status == 400 and (await r.json())["code"] == -1100
            async with s.get(f"{http}/api/v3/ping") as r:
                assert await r.json() == {}
            async with s.get(f"{http}/api/v3/time") as r:
                assert abs((await r.json())["serverTime"] - ex.now_ms()) < 5_000

    asyncio.run(go())


def test_exchange_info_has_binances_shape_and_filters_from_the_config():
    real = json.loads((SHARED / "rest_spot_exchange_info.json").read_text())

    async def go():
        async with running_sim() as (_, http, _), aiohttp.ClientSession() as s:
            async with s.get(f"{http}/api/v3/exchangeInfo") as r:
                info = await r.json()
            async with s.get(f"{http}/api/v3/exchangeInfo", params={"symbol": "NOPE"}) as r:
                assert r.status == 400
            return info

    info = asyncio.run(go())
    assert set(real) <= set(info)
    assert set(real["symbols"][0]) <= set(info["symbols"][0])
    eth = next(s for s in info["symbols"] if s["symbol"] == "ETHUSDT")
    filters = {f["filterType"]: f for f in eth["filters"]}
    assert float(filters["PRICE_FILTER"]["tickSize"]) == 0.01
    assert float(filters["LOT_SIZE"]["stepSize"]) == 0.001
    assert eth["baseAsset"] == "ETH" and eth["quoteAsset"] == "USDT"


def test_combined_and_raw_streams_and_live_subscriptions():
    async def go():
        async with running_sim() as (ex, _, ws_url), aiohttp.ClientSession() as s:
            url = f"{ws_url}/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker/ethusdt@aggTrade"
            seen: set[str] = set()
            async with s.ws_connect(url) as ws:
                while len(seen) < 3:
                    msg = json.loads((await ws.receive(timeout=5)).data)
                    seen.add(msg["stream"])
                    if msg["stream"] == "btcusdt@depth@100ms":
                        ev = parse_depth_message(json.dumps(msg))
                        assert ev.s == "BTCUSDT" and ev.u >= ev.U
                    if msg["stream"] == "btcusdt@bookTicker":
                        assert set(msg["data"]) == {"u", "s", "b", "B", "a", "A"}
                    if msg["stream"] == "ethusdt@aggTrade":
                        assert msg["data"]["e"] == "aggTrade" and msg["data"]["s"] == "ETHUSDT"
            async with s.ws_connect(f"{ws_url}/ws/ethusdt@trade") as ws:
                data = json.loads((await ws.receive(timeout=5)).data)
                assert data["e"] == "trade" and "stream" not in data
            async with s.ws_connect(f"{ws_url}/ws") as ws:
                await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@depth"], "id": 7}))
                await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
                await ws.send_str(json.dumps({"method": "BOGUS", "id": 9}))
                replies, depth = {}, 0
                while len(replies) < 3 or depth == 0:
                    d = json.loads((await ws.receive(timeout=5)).data)
                    if "id" in d:
                        replies[d["id"]] = d
                    elif d.get("e") == "depthUpdate":
                        depth += 1
                assert replies[7] == {"result": None, "id": 7}
                assert replies[8] == {"result": ["btcusdt@depth"], "id": 8}
                assert replies[9]["error"]["code"] == 2

    asyncio.run(go())


def test_depth_stream_is_contiguous_without_faults():
    async def go():
        async with running_sim() as (_, _, ws_url), aiohttp.ClientSession() as s, \
                s.ws_connect(f"{ws_url}/ws/btcusdt@depth@100ms") as ws:
            last = None
            for _ in range(20):
                ev = parse_depth_message((await ws.receive(timeout=5)).data)
                if last is not None:
                    assert ev.U == last + 1  # noqa: SIM300 - `U` is Binance's field, not a constant
                last = ev.u

    asyncio.run(go())


def test_stream_faults_drop_duplicate_reorder_and_disconnect():
    faults = FaultPlan(drop=0.1, duplicate=0.1, reorder=0.1, disconnect_after=60, seed=3)

    async def go():
        async with running_sim(faults, updates_per_second=200) as (ex, _, ws_url), aiohttp.ClientSession() as s:
            ids: list[tuple[int, int]] = []
            async with s.ws_connect(f"{ws_url}/ws/btcusdt@depth@100ms") as ws:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    ev = parse_depth_message(msg.data)
                    ids.append((ev.U, ev.u))
                closed_by_venue = ws.closed
            return ids, closed_by_venue

    ids, closed = asyncio.run(go())
    assert closed and len(ids) >= 60  # the venue closed the socket after 60 messages (plus duplicates)
    assert len(set(ids)) < len(ids), "some message was duplicated"
    assert any(b[0] < a[0] for a, b in zip(ids, ids[1:], strict=False)), "some message was reordered"
    firsts = sorted({U for U, _ in ids})
    lasts = {u for _, u in ids}
    assert any(U - 1 not in lasts for U in firsts[1:]), "some message was dropped"


def test_rest_429_and_5xx_faults():
    async def go():
        async with running_sim(FaultPlan(rest_429=0.3, rest_5xx=0.3, seed=1)) as (_, http, _), \
                aiohttp.ClientSession() as s:
            statuses = []
            for _ in range(40):
                async with s.get(f"{http}/api/v3/depth", params={"symbol": "BTCUSDT"}) as r:
                    statuses.append(r.status)
                    body = await r.json()
                    if r.status == 429:
                        assert body["code"] == -1003 and "Retry-After" in r.headers
            return statuses

    statuses = asyncio.run(go())
    assert {200, 429, 503} <= set(statuses)


def test_server_pings_and_closes_connections_at_the_age_limit():
    async def go():
        async with running_sim(ping_interval_s=0.1, max_connection_age_s=1.0) as (_, _, ws_url), \
                aiohttp.ClientSession() as s:
            pings = 0
            async with s.ws_connect(f"{ws_url}/ws/btcusdt@trade", autoping=False) as ws:
                while pings < 2:
                    msg = await ws.receive(timeout=5)
                    if msg.type == aiohttp.WSMsgType.PING:
                        pings += 1
                        await ws.pong(msg.data)  # a pong with the ping's payload, as Binance asks
            # With automatic pongs the connection lives until the venue's age limit.
            loop = asyncio.get_running_loop()
            start = loop.time()
            async with s.ws_connect(f"{ws_url}/ws/btcusdt@trade") as ws:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
            return loop.time() - start

    lived = asyncio.run(go())
    assert 0.9 <= lived < 5.0


def test_a_slow_subscriber_never_blocks_the_market():
    async def go():
        async with running_sim(updates_per_second=100) as (ex, _, ws_url), aiohttp.ClientSession() as s, \
                s.ws_connect(f"{ws_url}/stream?streams=btcusdt@depth@100ms"):
            before = ex.ticks
            await wait_until(lambda: ex.ticks >= before + 20, 20, "ticks while nobody reads")

    asyncio.run(go())


def test_runs_as_a_process_and_reports_its_port(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "gateways.venue_sim", "--config", str(REPO / "configs" / "paper.yaml"),
                             "--port", "0"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["event"] == "listening" and info["port"] > 0

        async def go():
            async with aiohttp.ClientSession() as s, s.get(f"{info['rest_url']}/api/v3/depth",
                                                           params={"symbol": "SOLUSDT", "limit": "3"}) as r:
                return msgspec.json.decode(await r.read())

        snap = asyncio.run(go())
        assert len(snap["bids"]) == 3
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
