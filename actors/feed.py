"""`feed:<venue>:<symbol>`: owns the feed handlers and L2 books of one symbol (or a small group).

Market messages are parsed and applied inside this actor (no actor hop per
message). Subscribers get conflated deliveries, at most one in flight each;
book updates travel through the object store (one `ray.put`, the reference
fanned out to every subscriber of the symbol).

Where the messages come from is `market.source`: the venue simulator (serving its seeded market,
or a recording for `replay`) or the real venue over real sockets (the Binance or Alpaca feed
handler, `endpoints` says which and where), or the built-in seeded market stepped in-process
(`builtin`, no sockets).

`feeds.record` makes the actor record what it receives (`gateways.recording.FeedRecording`): raw
messages with receive timestamps (gzip JSONL, replayable by the simulator) and normalized books and
trades (Parquet). With recording off nothing is added to the message path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import ray

from actors.compiled_fanout import CompiledFanout
from cluster.config import FeedSection, MarketSection, RecordSection, SymbolSection
from cluster.conflation import SubscriberChannel
from cluster.messages import BookUpdate, MarkPrice, Trade
from dashboards.metrics import FeedMetrics
from gateways.sim_feed import SimulatedFeed

log = logging.getLogger(__name__)


def feed_endpoints(cfg: Any, venue: str, simulator_url: str = "") -> dict[str, str] | None:
    """How the feeds of `venue` connect: None for the in-process market, else protocol and URLs.

    `simulator`: the simulator's URLs (`simulator_url` is its http://host:port) in the protocol of the
    venue's type (paper venues speak Binance, like the built-in market); `venue`: the venue's
    configured URLs (`venues.<v>.rest_url`, `ws_url`, `data_url`; real venues by default).
    """
    source = cfg.market.source
    if source == "builtin":
        return None
    vcfg = cfg.venues[venue]
    protocol = "alpaca" if vcfg.type == "alpaca" else "binance"
    if cfg.market.on_simulator:
        if not simulator_url:
            raise ValueError(f"market.source is {source!r} but no simulator is running")
        sim = vcfg.on_simulator(simulator_url)
        # The simulator accepts any non-empty Alpaca key pair; these are not secrets.
        return {"protocol": protocol, "rest_url": sim.rest_url, "ws_url": sim.ws_url, "data_url": sim.data_url,
                "key": "simulator", "secret": "simulator"}
    if protocol == "alpaca":
        return {"protocol": protocol, "rest_url": vcfg.url("rest_url"), "data_url": vcfg.url("data_url"),
                "secrets_file": vcfg.secrets_file}
    from gateways.venue_config import DEFAULT_URLS

    binance = DEFAULT_URLS["binance"]  # a paper venue trades on Binance's public market data
    return {"protocol": protocol, "rest_url": vcfg.rest_url or binance["rest_url"],
            "ws_url": vcfg.ws_url or binance["ws_url"]}


def with_record_dir(feeds: FeedSection, run_dir: Any) -> FeedSection:
    """`feeds` with `record.dir` defaulted to `<run_dir>/market` (what the launcher hands the feed actors)."""
    import msgspec

    rec = feeds.record
    if rec.dir or not (rec.raw or rec.normalized) or run_dir is None:
        return feeds
    from pathlib import Path

    return msgspec.structs.replace(feeds, record=msgspec.structs.replace(rec, dir=str(Path(run_dir) / "market")))


def _recording(name: str, rec: RecordSection, book_depth: int) -> Any:
    """The actor's `FeedRecording`, or None when `feeds.record` is off."""
    if not (rec.raw or rec.normalized):
        return None
    from gateways.recording import FeedRecording

    return FeedRecording(rec.dir or "runs/market", name, raw=rec.raw, normalized=rec.normalized,
                         depth=rec.depth or book_depth, flush_rows=rec.flush_rows)


def _network_feed(venue: str, symbols: list[SymbolSection], market: MarketSection, feeds: FeedSection,
                  endpoints: dict[str, str], on_update: Any, recorder: Any = None) -> tuple[Any, Any]:
    """(handler, client) for the endpoints' protocol; `recorder` records the raw messages."""
    names = [s.symbol for s in symbols]
    if endpoints["protocol"] == "alpaca":
        from gateways.alpaca.feed import AlpacaFeed, AlpacaMarketHandler

        handler = AlpacaMarketHandler(venue, names, book_depth=feeds.book_depth, stale_after_s=market.stale_after_s)
        key, secret = endpoints.get("key", ""), endpoints.get("secret", "")
        if not key:  # the real venue: keys from the environment or the secrets file, loaded here, never passed
            from gateways.secrets import load_credentials

            creds = load_credentials("alpaca", endpoints.get("secrets_file", ""))
            key, secret = creds.api_key, creds.api_secret
        return handler, AlpacaFeed(handler, endpoints["data_url"], on_update=on_update, key=key, secret=secret,
                                   recorder=recorder)
    from gateways.binance.feed import BinanceFeed
    from gateways.binance.market_handler import BinanceMarketHandler

    handler = BinanceMarketHandler(venue, names, book_depth=feeds.book_depth, stale_after_s=market.stale_after_s)
    return handler, BinanceFeed(handler, endpoints["rest_url"], endpoints["ws_url"], on_update=on_update,
                                recorder=recorder)


class FeedService:
    """The feed actor's logic without Ray: step (built-in) or pump (network) the feeds, fill subscriber channels."""

    def __init__(self, venue: str, symbols: list[SymbolSection], market: MarketSection, feeds: FeedSection,
                 endpoints: dict[str, str] | None = None, on_update: Any = None, name: str = ""):
        self.venue = venue
        self.symbols = [s.symbol for s in symbols]
        self.feeds: dict[str, SimulatedFeed] = {}
        self.handler: Any = None
        self.client: Any = None
        self.recording = _recording(name or f"feed:{venue}:{self.symbols[0]}", feeds.record, feeds.book_depth)
        raw = self.recording.raw if self.recording is not None else None
        if endpoints is None:
            self.feeds = {s.symbol: SimulatedFeed(venue, s, market, feeds.book_depth, recorder=raw) for s in symbols}
        else:
            self.handler, self.client = _network_feed(venue, symbols, market, feeds, endpoints, on_update, raw)
        if self.recording is not None and self.recording.normalized is not None:
            self.publish = self._publish_recorded  # type: ignore[method-assign]  # off: no cost at all
        self.channels: dict[str, SubscriberChannel] = {}
        self.by_symbol: dict[str, list[SubscriberChannel]] = {s: [] for s in self.symbols}
        self.latest: dict[str, BookUpdate] = {}

    @property
    def networked(self) -> bool:
        return self.client is not None

    def subscribe(self, name: str, handle: Any, symbols: list[str]) -> None:
        unknown = [s for s in symbols if s not in self.by_symbol]
        if unknown:
            raise ValueError(f"feed has no symbols {unknown}; it serves {sorted(self.by_symbol)}")
        ch = self.channels.get(name)
        if ch is None:
            ch = self.channels[name] = SubscriberChannel(name=name, handle=handle)
        ch.handle = handle
        for s in symbols:
            if ch not in self.by_symbol[s]:
                self.by_symbol[s].append(ch)

    def step(self, dt_s: float, now_ns: int | None = None) -> None:
        """Built-in market: advance every symbol by `dt_s` and publish.

        Each symbol's messages are stamped as received when its own step starts (`now_ns` stamps all
        of them alike), so one symbol's latency does not include simulating the symbols before it.
        """
        for symbol, feed in self.feeds.items():
            book, trades = feed.step(dt_s, time.time_ns() if now_ns is None else now_ns)
            self.publish({symbol: book} if book is not None else {}, trades)

    def pump(self, now_ns: int) -> None:
        """Network feeds: raise stale alarms, then publish what the handler received since the last pump."""
        self.handler.check_stale(now_ns)
        books, trades = self.handler.drain(now_ns)
        self.publish(books, trades)

    def _publish_recorded(self, books: dict[str, BookUpdate], trades: list[Trade]) -> None:
        if self.recording is not None:
            self.recording.add(books, trades)
        FeedService.publish(self, books, trades)

    def close_recording(self) -> list[str]:
        """Write out and close the recording; the files written (none when recording is off)."""
        rec, self.recording = self.recording, None
        return [str(p) for p in rec.close()] if rec is not None else []

    def publish(self, books: dict[str, BookUpdate], trades: list[Trade]) -> None:
        for symbol, book in books.items():
            self.latest[symbol] = book
            for ch in self.by_symbol.get(symbol, ()):
                ch.offer_book(book)
        for t in trades:
            for ch in self.by_symbol.get(t.symbol, ()):
                ch.offer_trade(t)

    def marks(self, now_ns: int) -> list[MarkPrice]:
        return [MarkPrice(venue=self.venue, symbol=s, mid=b.mid, ts_ns=now_ns)
                for s, b in self.latest.items() if b.tradeable and b.mid is not None]

    def stats(self) -> dict[str, dict[str, int]]:
        """Per symbol counters; `applied` is the number of depth events applied to the book."""
        if self.handler is None:
            return {s: dict(f.counters) for s, f in self.feeds.items()}
        conn = {f"conn:{k}": v for k, v in self.client.counters.items()}
        return {s: {**st, **conn} for s, st in self.handler.stats().items()}


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class FeedActor:
    def __init__(self, name: str, venue: str, symbols: list[SymbolSection], market: MarketSection,
                 feeds: FeedSection, transport: str = "object_store", endpoints: dict[str, str] | None = None):
        self.name = name
        self.wakeup = asyncio.Event()
        self.service = FeedService(venue, symbols, market, feeds, endpoints, on_update=self.wakeup.set, name=name)
        self.client_task: asyncio.Task | None = None
        self.interval_s = 1.0 / market.updates_per_second
        self.mark_interval_s = feeds.mark_interval_ms / 1000.0
        self.transport = transport
        self.min_interval_s = feeds.min_delivery_interval_ms / 1000.0
        self.risk: Any = None
        self.mark_task: asyncio.Task | None = None
        self.running = False
        self.loop_task: asyncio.Task | None = None
        self.delivery_errors = 0
        self.inline_channels: set[str] = set()
        self.fanout = CompiledFanout(name) if transport == "compiled" else None
        self.redispatch: asyncio.TimerHandle | None = None
        self.metrics = FeedMetrics(name, venue)

    async def start(self, risk: Any = None) -> str:
        self.risk = risk
        if self.fanout is not None:
            self.fanout.ensure()  # compiled before market data flows; on failure members get actor calls
        if not self.running:
            self.running = True
            self.loop_task = asyncio.get_running_loop().create_task(self._run())
        return ray.get_runtime_context().get_node_id()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def is_running(self) -> bool:
        """False until `start`: also what a feed actor Ray restarted after a crash answers (it has no subscribers)."""
        return self.running

    def subscribe(self, name: str, handle: Any, symbols: list[str], inline: bool = False,
                  compiled: bool = False) -> None:
        """`inline`: books travel in the call itself (the paper gateway's matching), not through the object store.

        `compiled`: with `feeds.transport: compiled`, the subscriber joins this actor's compiled graph.
        An actor takes part in one graph at a time, so the launcher names one feed actor per strategy;
        the strategy's other feed actors deliver to it by actor calls (`object_store`).
        """
        self.service.subscribe(name, handle, symbols)
        if inline:
            self.inline_channels.add(name)
        else:
            self.inline_channels.discard(name)
        if self.fanout is not None:
            if compiled and not inline:
                self.fanout.set_member(name, handle)
            else:
                self.fanout.discard(name)

    async def stop(self) -> dict[str, dict[str, int]]:
        self.running = False
        self.wakeup.set()
        if self.fanout is not None:
            self.fanout.close()
        if self.service.networked:
            await self.service.client.stop()
        tasks = [t for t in (self.loop_task, self.client_task) if t is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        files = self.service.close_recording()
        if files:
            log.info("%s: recorded %s", self.name, files)
        return self.service.stats()

    def stats(self) -> dict[str, dict[str, int]]:
        return self.service.stats()

    def transport_state(self) -> dict[str, Any]:
        """How each subscriber is served: `compiled` members, or actor calls (`inline` / `object_store`)."""
        fan = self.fanout
        compiled = sorted(fan.members) if fan is not None and fan.active else []
        return {"transport": self.transport, "compiled_members": compiled,
                "compiled_failures": fan.failures if fan is not None else 0,
                "compiled_error": fan.last_error if fan is not None else "",
                "channels": {n: ("compiled" if n in compiled else "inline" if n in self.inline_channels
                                 else "object_store" if self.transport != "inline" else "inline")
                             for n in self.service.channels}}

    def book(self, symbol: str) -> BookUpdate | None:
        return self.service.latest.get(symbol)

    async def _run(self) -> None:
        if self.service.networked:
            await self._run_network()
            return
        next_tick = time.monotonic()
        next_mark = next_tick
        while self.running:
            try:
                self.service.step(self.interval_s)
                next_mark = self._publish(next_mark)
            except Exception:  # a feed fault must never stop the feed
                log.exception("%s: step failed", self.name)
            next_tick += self.interval_s
            delay = next_tick - time.monotonic()
            if delay < -1.0:  # far behind (overloaded machine): skip ahead rather than burst
                next_tick = time.monotonic()
                delay = 0
            await asyncio.sleep(max(delay, 0))

    async def _run_network(self) -> None:
        """Publish whenever the feed handler changed something (conflated), checking staleness and marks."""
        self.client_task = asyncio.get_running_loop().create_task(self.service.client.run())
        next_mark = time.monotonic()
        while self.running:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout=max(self.min_interval_s, 0.001))
            self.wakeup.clear()
            try:
                self.service.pump(time.time_ns())
                next_mark = self._publish(next_mark)
            except Exception:  # a feed fault must never stop the feed
                log.exception("%s: pump failed", self.name)
            if self.client_task.done() and self.running:
                exc = None if self.client_task.cancelled() else self.client_task.exception()
                log.error("%s: feed client ended (%r); restarting it", self.name, exc)
                self.client_task = asyncio.get_running_loop().create_task(self.service.client.run())

    def _publish(self, next_mark: float) -> float:
        """Deliver to free subscribers, record metrics, send marks when due; returns the next mark time."""
        self._dispatch()
        self.metrics.update(self.service)
        now = time.monotonic()
        if self.service.recording is not None:
            self.service.recording.tick(now)
        if self.risk is not None and now >= next_mark:
            self._send_marks()
            return now + self.mark_interval_s
        return next_mark

    def _dispatch(self) -> None:
        """One `ray.put` per distinct batch of conflated books, whatever its size: a put costs ~0.8 ms
        on a small machine whether it holds one book or ten, so books are never put one by one.
        The reference goes as a top-level argument, so Ray hands the subscriber the books themselves."""
        refs: dict[tuple[tuple[str, int], ...], Any] = {}
        compiled = self._dispatch_compiled()
        for ch in self.service.channels.values():
            if ch.in_flight is not None or not ch.has_pending or ch.handle is None or ch.name in compiled:
                continue
            now = time.monotonic()
            wait = ch.last_sent + self.min_interval_s - now
            if wait > 0:  # throttled: deliver the conflated latest as soon as the interval is up
                if self.redispatch is None:
                    self.redispatch = asyncio.get_running_loop().call_later(wait, self._redispatch)
                continue
            ch.last_sent = now
            d = ch.take()
            self.metrics.conflation(ch.name, d.skipped)
            books: Any = d.books
            if self.transport == "object_store" and d.books and ch.name not in self.inline_channels:
                key = tuple((b.symbol, b.seq) for b in d.books)
                books = refs.get(key)
                if books is None:
                    books = refs[key] = ray.put(d.books)
            ch.in_flight = asyncio.get_running_loop().create_task(self._deliver(ch, books, d.trades, d.skipped))

    def _dispatch_compiled(self) -> frozenset[str]:
        """Everything pending for the compiled graph's members, in one execution; the members it served.

        No throttle and no in-flight limit here: an execution costs a fraction of a millisecond and
        returns as soon as each member has queued the payload, and members conflate on their side.
        """
        fan = self.fanout
        if fan is None or not fan.members or not fan.ensure():
            return frozenset()
        channels = self.service.channels
        payload: dict[str, tuple[list[BookUpdate], list[Trade], int]] = {}
        for name in fan.members:
            ch = channels[name]
            if ch.has_pending:
                d = ch.take()
                self.metrics.conflation(name, d.skipped)
                payload[name] = (d.books, d.trades, d.skipped)
        if payload and not fan.send(payload):
            # Not delivered: give the members their data back; this very dispatch serves them by actor calls.
            for name, (books, trades, skipped) in payload.items():
                ch = channels[name]
                for b in books:
                    ch.books.setdefault(b.symbol, b)
                ch.trades.extendleft(reversed(trades))
                ch.skipped += skipped
            return frozenset()
        return frozenset(fan.members)

    def _redispatch(self) -> None:
        self.redispatch = None
        if self.running:
            self._dispatch()

    async def _deliver(self, ch: SubscriberChannel, books: Any, trades: list[Trade], skipped: int) -> None:
        try:
            await ch.handle.on_market.remote(books, trades, skipped)
        except Exception as exc:  # subscriber died or restarting: keep feeding the others
            self.delivery_errors += 1
            self.metrics.delivery_error(ch.name)
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
