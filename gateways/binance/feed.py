"""Binance spot market data over the network: one combined-stream WebSocket plus REST depth snapshots.

The same code runs against Binance (`wss://stream.binance.com:9443`, `https://api.binance.com`),
its testnet, or the local venue simulator: only the URLs differ. What it does, per Binance's
WebSocket documentation:

- connects to `<ws_url>/stream?streams=...` (depth diffs, trades, bookTicker of every symbol);
- answers the server's pings with pongs (aiohttp does it for every ping frame, payload copied);
- fetches `GET <rest_url>/api/v3/depth` once a symbol's first event is buffered, again when the
  snapshot is older than the first buffered event and after every resync; on 429/418 it waits
  `Retry-After`, on 5xx and network errors it backs off;
- reconnects with exponential backoff and full jitter when the connection drops, and on its own
  before the venue's 24-hour disconnect; every reconnect restarts every book's sync;
- raises a stale-feed alarm (book flagged stale) when a symbol has been silent `stale_after_s`,
  and reconnects when the whole connection has been silent `idle_timeout_s`.

Parsing and the book procedure live in `BinanceMarketHandler` (no I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from gateways.binance.depth_sync import SyncResult
from gateways.binance.market_handler import BinanceMarketHandler

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Exponential backoff with full jitter (delay drawn uniformly in [0, min(cap, base * 2**n)])."""

    base_s: float = 0.25
    cap_s: float = 30.0
    attempts: int = 0
    rng: random.Random | None = None

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return (self.rng or random).uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempts = 0


class BinanceFeed:
    """Keeps a `BinanceMarketHandler` fed from the network until `stop()`; `on_update` is called after changes."""

    def __init__(self, handler: BinanceMarketHandler, rest_url: str, ws_url: str,
                 on_update: Callable[[], None] | None = None, *, snapshot_limit: int = 1000,
                 max_connection_age_s: float = 23.5 * 3600, idle_timeout_s: float = 30.0,
                 backoff: Backoff | None = None, recorder: object | None = None) -> None:
        self.handler = handler
        self.rest_url = rest_url.rstrip("/")
        self.ws_url = ws_url.rstrip("/")
        self.on_update = on_update or (lambda: None)
        self.snapshot_limit = snapshot_limit
        self.max_connection_age_s = max_connection_age_s
        self.idle_timeout_s = idle_timeout_s
        self.backoff = backoff or Backoff()
        self.recorder = recorder  # has .record(kind: str, raw: bytes | str, recv_ns: int)
        self.counters = dict.fromkeys(("connects", "disconnects", "age_reconnects", "idle_reconnects",
                                       "snapshot_errors", "rate_limited", "messages"), 0)
        self.connected = False
        self._running = False
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._snapshot_tasks: dict[str, asyncio.Task] = {}

    @property
    def url(self) -> str:
        return self.ws_url + self.handler.combined_path()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Connect, read, reconnect: returns only after `stop()`."""
        self._running = True
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            while self._running:
                try:
                    await self._connection()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # network errors, handshake refusals: back off and retry
                    log.warning("binance feed: connection to %s failed: %s: %s", self.ws_url, type(exc).__name__, exc)
                finally:
                    self.connected = False
                    await self._cancel_snapshots()
                if self._running:
                    self.counters["disconnects"] += 1
                    await asyncio.sleep(self.backoff.next_delay())
        finally:
            await self._session.close()

    async def stop(self) -> None:
        self._running = False
        if self._ws is not None:
            await self._ws.close()

    async def _connection(self) -> None:
        assert self._session is not None
        handler = self.handler
        async with self._session.ws_connect(self.url, autoping=True, heartbeat=None, max_msg_size=16 * 2**20,
                                            timeout=aiohttp.ClientWSTimeout(ws_close=2.0)) as ws:
            self._ws = ws
            self.connected = True
            self.counters["connects"] += 1
            handler.reset()  # whatever happened while disconnected is unknown: every book resyncs
            self.on_update()
            opened = time.monotonic()
            got_message = False
            while self._running:
                age_left = self.max_connection_age_s - (time.monotonic() - opened)
                if age_left <= 0:
                    # Binance disconnects at the 24-hour mark; leave first, at a moment of our choosing.
                    self.counters["age_reconnects"] += 1
                    log.info("binance feed: reconnecting before the venue's 24-hour disconnect")
                    self.backoff.reset()
                    return
                try:
                    msg = await ws.receive(timeout=min(self.idle_timeout_s, age_left))
                except asyncio.TimeoutError:
                    if time.monotonic() - opened >= self.max_connection_age_s:
                        continue
                    self.counters["idle_reconnects"] += 1
                    log.warning("binance feed: no message for %.0f s; reconnecting", self.idle_timeout_s)
                    return
                if msg.type == aiohttp.WSMsgType.TEXT or msg.type == aiohttp.WSMsgType.BINARY:
                    recv_ns = time.time_ns()
                    if self.recorder is not None:
                        self.recorder.record("ws", msg.data, recv_ns)
                    self.counters["messages"] += 1
                    handler.on_message(msg.data, recv_ns)
                    if not got_message:
                        got_message = True
                        self.backoff.reset()
                    self._request_snapshots()
                    self.on_update()
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                                  aiohttp.WSMsgType.ERROR):
                    log.info("binance feed: connection closed by the venue (%s)", msg.type.name)
                    return
        self._ws = None

    # ------------------------------------------------------------------ snapshots

    def _request_snapshots(self) -> None:
        for sym in self.handler.wanting_snapshot():
            task = self._snapshot_tasks.get(sym)
            if task is None or task.done():
                self._snapshot_tasks[sym] = asyncio.get_running_loop().create_task(self._snapshot(sym))

    async def _cancel_snapshots(self) -> None:
        tasks = list(self._snapshot_tasks.values())
        self._snapshot_tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _snapshot(self, symbol: str) -> None:
        """Fetch snapshots until the symbol is synced (or no longer wants one)."""
        assert self._session is not None
        backoff = Backoff(base_s=self.backoff.base_s, cap_s=self.backoff.cap_s, rng=self.backoff.rng)
        feed = self.handler.symbols[symbol]
        url = f"{self.rest_url}/api/v3/depth"
        while self._running and self.connected and feed.needs_snapshot:
            feed.counters["snapshot_requests"] += 1
            try:
                async with self._session.get(url, params={"symbol": symbol, "limit": str(self.snapshot_limit)}) as r:
                    body = await r.read()
                    if r.status in (418, 429):
                        self.counters["rate_limited"] += 1
                        retry = float(r.headers.get("Retry-After", "1") or 1)
                        log.warning("binance feed: depth snapshot rate limited (%d); retrying in %.1f s",
                                    r.status, retry)
                        await asyncio.sleep(retry)
                        continue
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters["snapshot_errors"] += 1
                delay = backoff.next_delay()
                log.warning("binance feed: depth snapshot of %s failed (%s); retrying in %.2f s", symbol, exc, delay)
                await asyncio.sleep(delay)
                continue
            if self.recorder is not None:
                self.recorder.record(f"rest:{symbol}", body, time.time_ns())
            result = self.handler.on_snapshot(symbol, body)
            self.on_update()
            if result is SyncResult.SYNCED or result is SyncResult.IGNORED:
                return
            if result is SyncResult.NEED_SNAPSHOT or result is SyncResult.MALFORMED:
                await asyncio.sleep(backoff.next_delay())
            # GAP: buffered events did not connect; the loop fetches again right away.
