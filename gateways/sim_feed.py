"""The built-in market as a feed: the seeded simulator's Binance-format messages, parsed and synced.

`make run` needs no network, yet the feed actor runs the same parsing and the
same documented order-book sync procedure it runs against Binance: raw bytes
in, `BinanceDepthSync` applying them to an `OrderBook`, `BookUpdate` out.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cluster.config import MarketSection, SymbolSection
from cluster.messages import BookUpdate, Side, Trade
from gateways.binance.depth_sync import BinanceDepthSync, MalformedMessage, SyncState, parse_depth_diff
from gateways.book import OrderBook
from gateways.market_sim import SimulatedMarket


class _Envelope(msgspec.Struct):
    stream: str
    data: msgspec.Raw


class _TradeEvent(msgspec.Struct):
    s: str
    t: int
    p: str
    q: str
    T: int
    m: bool


_envelope = msgspec.json.Decoder(_Envelope)
_trade = msgspec.json.Decoder(_TradeEvent)


class SimulatedFeed:
    """`recorder` (a `gateways.recording.RawRecorder`): the market's raw messages and the snapshots used, as
    a network feed records them, so a built-in run can be replayed on the venue simulator."""

    def __init__(self, venue: str, sym: SymbolSection, market: MarketSection, book_depth: int,
                 recorder: Any = None):
        self.venue = venue
        self.symbol = sym.symbol
        self.depth = book_depth
        self.market = SimulatedMarket(sym.symbol, market.seed, sym.price, sym.tick_size, sym.lot_size,
                                      volatility=sym.volatility, depth=market.depth, spread_ticks=market.spread_ticks,
                                      trade_rate=market.trades_per_update)
        self.book = OrderBook(sym.symbol, venue)
        self.sync = BinanceDepthSync(sym.symbol, self.book)
        self.clock_ms = 0
        self.trades = 0
        self.malformed = 0
        self.recorder = recorder

    @property
    def counters(self) -> dict[str, int]:
        return {**self.sync.counters, "trades": self.trades, "malformed_messages": self.malformed}

    def step(self, dt_s: float, now_ns: int) -> tuple[BookUpdate | None, list[Trade]]:
        self.clock_ms += max(int(dt_s * 1000), 1)
        before = self.sync.counters.get("applied", 0)
        msgs = self.market.step(dt_s, self.clock_ms)
        rec = self.recorder
        if rec is not None:
            for raw in msgs:
                rec.record("ws", raw, now_ns)
        trades = [t for raw in msgs if (t := self.on_message(raw, now_ns))]
        self.trades += len(trades)
        if self.sync.state is not SyncState.SYNCED:
            # As Binance documents: events are buffered first, then the REST snapshot is fetched.
            body = self.market.snapshot()
            if rec is not None:
                rec.record(f"rest:{self.symbol}", body, now_ns)
            self.sync.on_snapshot(body)
        if self.sync.state is not SyncState.SYNCED or self.sync.counters.get("applied", 0) == before:
            return None, trades
        return self.book.to_update(seq=self.sync.last_update_id, depth=self.depth, exchange_ts_ns=self.clock_ms * 1_000_000,
                                   receive_ts_ns=now_ns), trades

    def on_message(self, raw: bytes, now_ns: int) -> Trade | None:
        """Route one combined-stream message; a bad one is counted and skipped, never raised."""
        try:
            env = _envelope.decode(raw)
            if env.stream.endswith("@trade"):
                t = _trade.decode(env.data)
                return Trade(venue=self.venue, symbol=self.symbol, trade_id=str(t.t), price=float(t.p), qty=float(t.q),
                             aggressor=Side.SELL if t.m else Side.BUY, exchange_ts_ns=t.T * 1_000_000,
                             receive_ts_ns=now_ns)
            self.sync.on_diff(parse_depth_diff(env.data))
        except (msgspec.DecodeError, MalformedMessage, ValueError):
            self.malformed += 1
        return None
