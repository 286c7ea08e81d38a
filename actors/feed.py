"""`feed:<venue>:<symbol>`: owns the feed handlers and L2 books of one symbol (or a small group).

Market messages are parsed and applied inside this actor (no actor hop per
message). Subscribers get conflated deliveries, at most one in flight each;
book updates travel through the object store (one `ray.put`, the reference
fanned out to every subscriber of the symbol).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from cluster.config import FeedSection, MarketSection, SymbolSection
from cluster.conflation import SubscriberChannel
from cluster.messages import BookUpdate, MarkPrice, Trade
from gateways.sim_feed import SimulatedFeed

log = logging.getLogger(__name__)


class FeedService:
    """The feed actor's logic without Ray: step the feeds, fill subscriber channels."""

    def __init__(self, venue: str, symbols: list[SymbolSection], market: MarketSection, feeds: FeedSection):
        self.venue = venue
        self.feeds = {s.symbol: SimulatedFeed(venue, s, market, feeds.book_depth) for s in symbols}
        self.channels: dict[str, SubscriberChannel] = {}
        self.by_symbol: dict[str, list[SubscriberChannel]] = {s: [] for s in self.feeds}
        self.latest: dict[str, BookUpdate] = {}

    def subscribe(self, name: str, handle: Any, symbols: list[str]) -> None:
        unknown = [s for s in symbols if s not in self.feeds]
        if unknown:
            raise ValueError(f"feed has no symbols {unknown}; it serves {sorted(self.feeds)}")
        ch = self.channels.get(name)
        if ch is None:
            ch = self.channels[name] = SubscriberChannel(name=name, handle=handle)
        ch.handle = handle
        for s in symbols:
            if ch not in self.by_symbol[s]:
                self.by_symbol[s].append(ch)

    def step(self, dt_s: float, now_ns: int) -> None:
        for symbol, feed in self.feeds.items():
            book, trades = feed.step(dt_s, now_ns)
            subs = self.by_symbol[symbol]
            if book is not None:
                self.latest[symbol] = book
                for ch in subs:
                    ch.offer_book(book)
            for t in trades:
                for ch in subs:
                    ch.offer_trade(t)

    def marks(self, now_ns: int) -> list[MarkPrice]:
        return [MarkPrice(venue=self.venue, symbol=s, mid=b.mid, ts_ns=now_ns)
                for s, b in self.latest.items() if b.tradeable and b.mid is not None]

    def stats(self) -> dict[str, dict[str, int]]:
        return {s: dict(f.counters) for s, f in self.feeds.items()}


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class FeedActor:
    def __init__(self, name: str, venue: str, symbols: list[SymbolSection], market: MarketSection,
                 feeds: FeedSection, transport: str = "object_store"):
        self.name = name
        self.service = FeedService(venue, symbols, market, feeds)
        self.interval_s = 1.0 / market.updates_per_second
        self.mark_interval_s = feeds.mark_interval_ms / 1000.0
        self.transport = transport
        self.risk: Any = None
        self.mark_task: asyncio.Task | None = None
        self.running = False
        self.loop_task: asyncio.Task | None = None
        self.delivery_errors = 0

    async def start(self, risk: Any = None) -> str:
        self.risk = risk
        if not self.running:
            self.running = True
            self.loop_task = asyncio.get_running_loop().create_task(self._run())
        return ray.get_runtime_context().get_node_id()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def subscribe(self, name: str, handle: Any, symbols: list[str]) -> None:
        self.service.subscribe(name, handle, symbols)

    async def stop(self) -> dict[str, dict[str, int]]:
        self.running = False
        if self.loop_task is not None:
            await asyncio.wait([self.loop_task], timeout=2.0)
        return self.service.stats()

    def stats(self) -> dict[str, dict[str, int]]:
        return self.service.stats()

    def book(self, symbol: str) -> BookUpdate | None:
        return self.service.latest.get(symbol)

    async def _run(self) -> None:
        next_tick = time.monotonic()
        next_mark = next_tick
        while self.running:
            try:
                self.service.step(self.interval_s, time.time_ns())
                self._dispatch()
                now = time.monotonic()
                if self.risk is not None and now >= next_mark:
                    next_mark = now + self.mark_interval_s
                    self._send_marks()
            except Exception:  # a feed fault must never stop the feed
                log.exception("%s: step failed", self.name)
            next_tick += self.interval_s
            delay = next_tick - time.monotonic()
            if delay < -1.0:  # far behind (overloaded machine): skip ahead rather than burst
                next_tick = time.monotonic()
                delay = 0
            await asyncio.sleep(max(delay, 0))

    def _dispatch(self) -> None:
        refs: dict[tuple[str, int], Any] = {}
        for ch in self.service.channels.values():
            if ch.in_flight is not None or not ch.has_pending or ch.handle is None:
                continue
            d = ch.take()
            if self.transport == "object_store":
                books: list[Any] = []
                for b in d.books:
                    key = (b.symbol, b.seq)
                    if key not in refs:
                        refs[key] = ray.put(b)
                    books.append(refs[key])
            else:
                books = d.books
            ch.in_flight = asyncio.get_running_loop().create_task(self._deliver(ch, books, d.trades, d.skipped))

    async def _deliver(self, ch: SubscriberChannel, books: list[Any], trades: list[Trade], skipped: int) -> None:
        try:
            await ch.handle.on_market.remote(books, trades, skipped)
        except Exception as exc:  # subscriber died or restarting: keep feeding the others
            self.delivery_errors += 1
            if self.delivery_errors <= 3 or self.delivery_errors % 100 == 0:
                log.warning("%s: delivery to %s failed (%s); %d failures so far", self.name, ch.name,
                            type(exc).__name__, self.delivery_errors)
            await asyncio.sleep(0.2)
        finally:
            ch.in_flight = None
        if ch.has_pending and self.running:
            self._dispatch()

    def _send_marks(self) -> None:
        marks = self.service.marks(time.time_ns())
        if not marks or (self.mark_task is not None and not self.mark_task.done()):
            return

        async def send() -> None:
            try:
                await self.risk.on_marks.remote(marks)
            except Exception as exc:
                log.warning("%s: could not send marks to risk: %s", self.name, type(exc).__name__)

        self.mark_task = asyncio.get_running_loop().create_task(send())
