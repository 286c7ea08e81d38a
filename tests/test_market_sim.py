"""SimulatedMarket: deterministic, Binance-shaped, and consistent with the sync procedure that consumes it."""

from __future__ import annotations

import json
import math
import re
import statistics
from itertools import pairwise
from pathlib import Path

import msgspec
import pytest

from gateways.binance.depth_sync import (
    BinanceDepthSync,
    SyncResult,
    SyncState,
    parse_depth_message,
    parse_depth_snapshot,
)
from gateways.book import OrderBook
from gateways.market_sim import SimulatedMarket, derive_seed

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def btc(seed: int = 7, **kw: float) -> SimulatedMarket:
    return SimulatedMarket("BTCUSDT", seed, 60650.0, 0.01, 0.00001, **kw)


def run(market: SimulatedMarket, steps: int, dt_s: float = 0.1, t0_ms: int = 1_700_000_000_000) -> list[bytes]:
    out: list[bytes] = []
    for i in range(steps):
        out += market.step(dt_s, t0_ms + int((i + 1) * dt_s * 1000))
    return out


def split(raw: bytes) -> tuple[str, dict]:
    msg = json.loads(raw)
    assert set(msg) == {"stream", "data"}
    return msg["stream"], msg["data"]


def test_same_seed_same_bytes() -> None:
    a, b = btc(), btc()
    assert a.snapshot() == b.snapshot()
    assert run(a, 300) == run(b, 300)
    assert a.snapshot(50) == b.snapshot(50)
    assert a.step(2.5, 5) == b.step(2.5, 5)


def test_seed_is_stable_and_per_symbol() -> None:
    # BLAKE2b, not the per-process salted `hash`: this value must never change
    assert derive_seed(7, "BTCUSDT") == derive_seed(7, "btcusdt") == 53362490321275900913392671311012505951
    assert derive_seed(7, "ETHUSDT") != derive_seed(7, "BTCUSDT")
    assert derive_seed(8, "BTCUSDT") != derive_seed(7, "BTCUSDT")
    eth = SimulatedMarket("ETHUSDT", 7, 60650.0, 0.01, 0.00001)
    assert [split(m)[1]["b"] for m in run(eth, 20) if b"@depth" in m] != \
        [split(m)[1]["b"] for m in run(btc(), 20) if b"@depth" in m]
    assert run(btc(seed=8), 20) != run(btc(seed=7), 20)


def test_wire_format_matches_binance() -> None:
    market = btc(trade_rate=3.0)
    msgs = run(market, 50)
    depth = [split(m) for m in msgs if b"@depth" in m]
    trades = [split(m) for m in msgs if b"@trade" in m]
    assert depth and trades
    price_re = re.compile(r"^\d+\.\d{2}$")  # tick 0.01
    qty_re = re.compile(r"^\d+\.\d{5}$")  # lot 0.00001
    for stream, data in depth:
        assert stream == "btcusdt@depth@100ms"
        assert list(data) == ["e", "E", "s", "U", "u", "b", "a"]
        assert data["e"] == "depthUpdate" and data["s"] == "BTCUSDT"
        for p, q in data["b"] + data["a"]:
            assert price_re.match(p) and qty_re.match(q)
        assert ["0", "0.00000"] not in data["b"]
    assert any(q == "0.00000" for _, data in depth for _, q in data["b"] + data["a"])  # removals are sent
    for stream, data in trades:
        assert stream == "btcusdt@trade"
        assert {"e", "E", "s", "t", "p", "q", "T", "m"} <= set(data)
        assert data["e"] == "trade" and isinstance(data["m"], bool) and isinstance(data["t"], int)
        assert price_re.match(data["p"]) and qty_re.match(data["q"]) and float(data["q"]) > 0
    ids = [data["t"] for _, data in trades]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    times = [data["T"] for _, data in trades]
    assert times == sorted(times)


def test_snapshot_has_the_rest_shape() -> None:
    market = btc(depth=15)
    body = market.snapshot()
    snap = parse_depth_snapshot(body)
    assert snap.lastUpdateId == market.update_id
    assert len(snap.bids) == len(snap.asks) == 15
    assert all(float(q) > 0 for _, q in snap.bids + snap.asks)
    bids = [float(p) for p, _ in snap.bids]
    asks = [float(p) for p, _ in snap.asks]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
    assert bids[0] < asks[0]
    assert len(parse_depth_snapshot(market.snapshot(limit=5)).bids) == 5
    sample = SHARED_DATA / "binance" / "rest_spot_depth_snapshot.json"
    if sample.exists():
        real = json.loads(sample.read_bytes())
        ours = json.loads(body)
        assert list(ours) == list(real)
        assert all(isinstance(x, str) for lvl in ours["bids"] + ours["asks"] for x in lvl)


def test_other_grids_format_exactly() -> None:
    market = SimulatedMarket("DOGEUSDT", 3, 0.12345, 0.00001, 1.0, depth=5)
    snap = json.loads(market.snapshot())
    assert all(re.match(r"^0\.\d{5}$", p) and re.match(r"^\d+$", q) for p, q in snap["bids"] + snap["asks"])
    coarse = SimulatedMarket("XUSDT", 3, 1000.0, 0.5, 0.25, depth=5)
    snap = json.loads(coarse.snapshot())
    for p, q in snap["bids"] + snap["asks"]:
        assert re.match(r"^\d+\.\d$", p) and float(p) % 0.5 == 0
        assert re.match(r"^\d+\.\d{2}$", q) and float(q) % 0.25 == 0


def test_update_ids_are_contiguous() -> None:
    market = btc()
    prev = market.update_id
    count = 0
    for m in run(market, 300):
        if b"@depth" in m:
            data = split(m)[1]
            assert data["U"] == prev + 1
            assert data["u"] >= data["U"]
            prev = data["u"]
            count += 1
    assert count == 300  # the mid moves every step, so every step has a diff
    assert market.update_id == prev


def test_synced_book_matches_model_never_crossed_realistic_spread_trades_at_touch() -> None:
    market = btc(trade_rate=3.0)
    book = OrderBook("BTCUSDT", "binance")
    sync = BinanceDepthSync("BTCUSDT", book)
    # As the feed does it: events first (buffered), then the REST snapshot.
    for raw in market.step(0.1, 100):
        if b"@depth" in raw:
            assert sync.on_event(parse_depth_message(raw)) is SyncResult.BUFFERED
    assert sync.on_snapshot(market.snapshot()) is SyncResult.SYNCED
    spreads = []
    trade_checks = 0
    for i in range(1, 1500):
        msgs = market.step(0.1, 100 + 100 * i)
        trades = [split(m)[1] for m in msgs if b"@trade" in m]
        for raw in msgs:
            if b"@depth" in raw:
                assert sync.on_event(parse_depth_message(raw)) is SyncResult.APPLIED
        assert sync.state is SyncState.SYNCED
        assert not book.is_crossed()
        assert book.top(1000) == market.book_levels()
        top_bids, top_asks = book.top(1000)
        # `depth` levels per side, less what this step's trades consumed
        assert market.depth - 5 <= len(top_bids) <= market.depth
        assert market.depth - 5 <= len(top_asks) <= market.depth
        bid, ask = book.best_bid()[0], book.best_ask()[0]
        spreads.append(round((ask - bid) / 0.01))
        for t in trades:
            # the trade hit the touch; its size may have removed that level since
            p = float(t["p"])
            assert bid <= p <= ask
            if t["m"]:  # buyer is maker: a seller hit the bid
                assert p - bid < 0.01 * 6 and p < ask
            else:
                assert ask - p < 0.01 * 6 and p > bid
            trade_checks += 1
    assert trade_checks > 1000
    assert min(spreads) >= 1
    assert 1 <= statistics.median(spreads) <= market.spread_ticks + 1
    assert max(spreads) <= 15
    assert sync.counters["gaps"] == 0 and sync.counters["malformed"] == 0


def test_quantities_grow_away_from_touch() -> None:
    market = btc(depth=20, trade_rate=0.0)
    near, far = [], []
    for _ in range(200):
        market.step(0.1, 0)
        bids, asks = market.book_levels()
        near += [q for _, q in bids[:3] + asks[:3]]
        far += [q for _, q in bids[-3:] + asks[-3:]]
    assert statistics.mean(far) > 1.5 * statistics.mean(near)
    assert all(q > 0 for q in near + far)


def test_volatility_scales_the_walk() -> None:
    market = btc(volatility=0.8, trade_rate=0.0)
    dt = 60.0
    mids = [market.mid]
    for i in range(1500):
        market.step(dt, i * 60_000)
        mids.append(market.mid)
    rets = [math.log(b / a) for a, b in pairwise(mids)]
    realized = statistics.pstdev(rets) / math.sqrt(dt / (365 * 24 * 3600))
    assert realized == pytest.approx(0.8, rel=0.1)
    still = btc(volatility=0.0)
    still.step(1.0, 0)
    assert still.mid == 60650.0


def test_bad_parameters_raise() -> None:
    for kw in ({"tick_size": 0.0}, {"lot_size": -1.0}, {"price": math.nan}, {"depth": 0}, {"spread_ticks": 0}):
        args = {"symbol": "X", "seed": 1, "price": 10.0, "tick_size": 0.01, "lot_size": 0.1, **kw}
        with pytest.raises(ValueError):
            SimulatedMarket(**args)
    with pytest.raises(ValueError):
        btc().step(-1.0, 0)
    with pytest.raises(ValueError):
        btc().snapshot(limit=0)


def test_messages_decode_with_msgspec_like_the_feed() -> None:
    class Envelope(msgspec.Struct):
        stream: str
        data: msgspec.Raw

    dec = msgspec.json.Decoder(Envelope)
    for raw in run(btc(trade_rate=5.0), 10):
        env = dec.decode(raw)
        if env.stream.endswith("@depth@100ms"):
            assert parse_depth_message(bytes(env.data)).s == "BTCUSDT"


def test_grid_strings_are_exact_decimals_cached_or_not(monkeypatch):
    """The same string for a tick whether it is made or taken from the cache, also after the cache starts over."""
    import gateways.market_sim as market_sim

    monkeypatch.setattr(market_sim, "_FMT_CACHE", 7)
    for step, expect in ((0.01, {0: "0.00", 1: "0.01", 12345: "123.45", 100: "1.00"}),
                         (0.5, {3: "1.5", 4: "2.0"}), (10.0, {3: "30"}), (1e-05, {123: "0.00123"})):
        grid = market_sim._Grid(step, "tick_size")
        for _ in range(3):  # made, then cached, then made again after the cache was cleared by the loop below
            assert {n: grid.fmt(n) for n in expect} == expect
            for n in range(1000, 1010):
                assert grid.fmt(n) == grid.fmt(n)
            assert len(grid._strings) <= 7
