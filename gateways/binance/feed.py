"""Binance spot market data over the network: one combined-stream WebSocket plus REST depth snapshots.

The same code runs against Binance (`wss://stream.binance.com:9443`, `https://api.binance.com`),
its testnet, or the local venue simulator: only the URLs differ. What it does, per Binance's
WebSocket documentation:

- connects to `<ws_url>/stream?streams=...` (depth diffs, trades, bookTicker of every symbol);
- answers the server's pings with pongs (aiohttp does it for every ping frame, payload copied);
- fetches `GET <rest_url>/api/v3/depth` once a symbol's first event is buffered, again when the
  snapshot is older than the first buffered event and after every resync; on 429/418 it waits
  `Retry-After`, on 5xx and network errors it backs off;
- reconnects with exponential backoff and full jitter when the connection drops (every such
  reconnect restarts every book's sync);
- before the venue's 24-hour disconnect, switches connections make-before-break: it opens a second
  connection with the same streams while still reading the first, switches over once the new
  stream covers, for every symbol, where the old one has got to (its first depth event's `U` <=
  the book's update id + 1, its first trade id <= the last trade id + 1) and the two have overlapped
  `handover_overlap_s`, hands the book the new connection's messages it has not seen yet (older
  ones are dropped), then closes the old one: the books stay synced and no message is missed;
- on the venue's `serverShutdown` notice, makes the same make-before-break switch at once;
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
from typing import Any

import aiohttp
import msgspec

from gateways.binance.depth_sync import SyncResult, SyncState
from gateways.binance.market_handler import BinanceMarketHandler

log = logging.getLogger(__name__)

_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


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


class _Envelope(msgspec.Struct):
    stream: str = ""
    data: msgspec.Raw = msgspec.Raw()


class _Ids(msgspec.Struct):
    """The sequence fields of a depth (`U`, `u`), trade (`t`) or aggTrade (`a`) event."""

    e: str = ""
    s: str = ""
    U: int = -1
    u: int = -1
    t: int = -1
    a: Any = None  # aggTrade: its id; depthUpdate: the asks

    @property
    def trade_id(self) -> int:
        return self.t if self.e == "trade" else (self.a if isinstance(self.a, int) else -1)


_envelope = msgspec.json.Decoder(_Envelope)
_ids = msgspec.json.Decoder(_Ids)


class _ShutdownEvent(msgspec.Struct):
    e: str = ""


class _ShutdownNotice(msgspec.Struct):
    e: str = ""
    event: _ShutdownEvent | None = None
    data: _ShutdownEvent | None = None


_shutdown_notice = msgspec.json.Decoder(_ShutdownNotice)


def is_server_shutdown(raw: bytes | str) -> bool:
    """Binance's `serverShutdown` event, bare (`{"e": "serverShutdown", ...}`), as the WebSocket API wraps it
    (`{"event": {...}}`) or in a combined-stream envelope (`{"stream": ..., "data": {...}}`)."""
    if (b"serverShutdown" if isinstance(raw, bytes) else "serverShutdown") not in raw:
        return False  # market data: one substring test, no parse
    try:
        msg = _shutdown_notice.decode(raw)
    except msgspec.DecodeError:
        return False
    return "serverShutdown" in (msg.e, msg.event.e if msg.event else "", msg.data.e if msg.data else "")


def _event_ids(raw: bytes | str) -> _Ids | None:
    """The ids of a combined-stream depth or trade message; None for anything else (or garbage)."""
    try:
        env = _envelope.decode(raw)
        return _ids.decode(env.data) if len(env.data) else None
    except msgspec.DecodeError:
        return None


class BinanceFeed:
    """Keeps a `BinanceMarketHandler` fed from the network until `stop()`; `on_update` is called after changes."""

    def __init__(self, handler: BinanceMarketHandler, rest_url: str, ws_url: str,
                 on_update: Callable[[], None] | None = None, *, snapshot_limit: int = 1000,
                 max_connection_age_s: float = 23.5 * 3600, idle_timeout_s: float = 30.0,
                 backoff: Backoff | None = None, recorder: object | None = None,
                 handover_overlap_s: float = 1.0, handover_timeout_s: float = 30.0) -> None:
        self.handler = handler
        self.rest_url = rest_url.rstrip("/")
        self.ws_url = ws_url.rstrip("/")
        self.on_update = on_update or (lambda: None)
        self.snapshot_limit = snapshot_limit
        self.max_connection_age_s = max_connection_age_s
        self.idle_timeout_s = idle_timeout_s
        self.backoff = backoff or Backoff()
        self.recorder = recorder  # has .record(kind: str, raw: bytes | str, recv_ns: int)
        # Make-before-break at the age limit: the two connections overlap at least this long, and
        # switch at the latest after `handover_timeout_s` (the book procedure still guards the result).
        self.handover_overlap_s = handover_overlap_s
        self.handover_timeout_s = handover_timeout_s
        self.counters = dict.fromkeys(("connects", "disconnects", "age_reconnects", "idle_reconnects",
                                       "snapshot_errors", "rate_limited", "messages", "handovers",
                                       "handover_failures", "handover_overlap_dropped", "shutdown_notices"), 0)
        self.connected = False
        self._running = False
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._standby: aiohttp.ClientWebSocketResponse | None = None  # the new connection during a handover
        # After a switch, until the new stream has passed them: per symbol the last depth update id and
        # trade id the books already have from the old connection (older messages are dropped).
        self._overlap: dict[str, list[int]] | None = None
        self._overlap_until = 0.0
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
        for ws in (self._standby, self._ws):
            if ws is not None:
                await ws.close()

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None
        ws = await self._session.ws_connect(self.url, autoping=True, heartbeat=None, max_msg_size=16 * 2**20,
                                            timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
        self.counters["connects"] += 1
        return ws

    def _on_frame(self, data: bytes | str, recv_ns: int) -> bool:
        """Hand one frame to the handler; True for the venue's shutdown notice (counted, not market data)."""
        if is_server_shutdown(data):
            self.counters["shutdown_notices"] += 1
            return True
        if self.recorder is not None:
            self.recorder.record("ws", data, recv_ns)
        self.counters["messages"] += 1
        self.handler.on_message(data, recv_ns)
        self._request_snapshots()
        self.on_update()
        return False

    async def _connection(self) -> None:
        ws = await self._open()
        try:
            self._ws = ws
            self.connected = True
            self.handler.reset()  # whatever happened while disconnected is unknown: every book resyncs
            self.on_update()
            opened = time.monotonic()
            retry_at = 0.0  # after a failed handover: not before this
            got_message = False
            while self._running:
                age_deadline = max(opened + self.max_connection_age_s, retry_at)
                age_left = age_deadline - time.monotonic()
                if age_left <= 0:
                    # Binance disconnects at the 24-hour mark; move to a new connection first.
                    self.counters["age_reconnects"] += 1
                    log.info("binance feed: switching to a new connection before the venue's 24-hour disconnect")
                    new = await self._handover(ws)
                    if new is None:  # the old connection still works: try again a little later
                        retry_at = time.monotonic() + max(1.0, min(60.0, self.backoff.next_delay()))
                        if ws.closed:
                            return
                        continue
                    ws = new
                    self.backoff.reset()
                    opened = time.monotonic()
                    retry_at = 0.0
                    continue
                try:
                    msg = await ws.receive(timeout=min(self.idle_timeout_s, age_left))
                except asyncio.TimeoutError:
                    if time.monotonic() >= age_deadline:
                        continue
                    self.counters["idle_reconnects"] += 1
                    log.warning("binance feed: no message for %.0f s; reconnecting", self.idle_timeout_s)
                    return
                if msg.type == aiohttp.WSMsgType.TEXT or msg.type == aiohttp.WSMsgType.BINARY:
                    if (self._overlap is None or not self._already_have(msg.data)) and \
                            self._on_frame(msg.data, time.time_ns()):
                        # The venue will drop this connection soon: switch now, make-before-break.
                        log.info("binance feed: the venue announced a server shutdown; switching connections")
                        opened, retry_at = time.monotonic() - self.max_connection_age_s, 0.0
                        continue
                    if not got_message:
                        got_message = True
                        self.backoff.reset()
                elif msg.type in _CLOSED:
                    log.info("binance feed: connection closed by the venue (%s)", msg.type.name)
                    return
        finally:
            self._ws = None
            with contextlib.suppress(Exception):
                await ws.close()

    # ------------------------------------------------------------------ make-before-break

    def _last_seen(self) -> dict[str, tuple[int, int]]:
        """Per symbol: (last depth update id the handler holds or buffers, last trade id); 0 / -1 for none."""
        out = {}
        for sym, feed in self.handler.symbols.items():
            sync = feed.sync
            depth = sync.last_update_id if sync.state is SyncState.SYNCED else sync.last_buffered_update_id
            out[sym] = (depth, feed.last_trade_id)
        return out

    def _covered(self, first: dict[tuple[str, str], int]) -> bool:
        """Does the new connection's stream start at or before where the old one has got to, for every stream
        the new one has sent something on? (Streams it has been silent on are covered by the overlap time.)"""
        for sym, (depth, trade) in self._last_seen().items():
            u0 = first.get((sym, "depth"))
            if u0 is not None and depth > 0 and u0 > depth + 1:
                return False
            t0 = first.get((sym, "trade"))
            if t0 is not None and trade >= 0 and t0 > trade + 1:
                return False
        return True

    def _already_have(self, data: bytes | str) -> bool:
        """After a switch: is this depth or trade message one the books already got from the old connection?"""
        overlap = self._overlap
        assert overlap is not None
        if time.monotonic() > self._overlap_until or not overlap:
            self._overlap = None
            return False
        ids = _event_ids(data)
        if ids is None or ids.s not in overlap:
            return False
        marks = overlap[ids.s]
        if ids.e == "depthUpdate":
            i, seq = 0, ids.u
        elif ids.e in ("trade", "aggTrade"):
            i, seq = 1, ids.trade_id
        else:
            return False
        if marks[i] >= 0 and seq <= marks[i]:
            self.counters["handover_overlap_dropped"] += 1
            return True
        marks[i] = -1  # the new stream has passed the old one here
        if marks[0] < 0 and marks[1] < 0:
            del overlap[ids.s]
        return False

    async def _handover(self, old: aiohttp.ClientWebSocketResponse) -> aiohttp.ClientWebSocketResponse | None:
        """Open a new connection, read both until the new one covers the old, switch, close the old.

        Returns the new connection, or None when it could not be opened or died first (the old one is kept).
        """
        try:
            new = await self._open()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counters["handover_failures"] += 1
            log.warning("binance feed: could not open the new connection (%s: %s); keeping the old one",
                        type(exc).__name__, exc)
            return None
        self._standby = new
        queued: list[bytes | str] = []
        first: dict[tuple[str, str], int] = {}  # (symbol, "depth"|"trade") -> first U / trade id on `new`
        new_closed = asyncio.Event()

        async def read_new() -> None:
            while True:
                msg = await new.receive()
                if msg.type == aiohttp.WSMsgType.TEXT or msg.type == aiohttp.WSMsgType.BINARY:
                    queued.append(msg.data)
                    ids = _event_ids(msg.data)
                    if ids is not None and ids.s:
                        if ids.e == "depthUpdate":
                            first.setdefault((ids.s, "depth"), ids.U)
                        elif ids.e in ("trade", "aggTrade"):
                            first.setdefault((ids.s, "trade"), ids.trade_id)
                elif msg.type in _CLOSED:
                    new_closed.set()
                    return

        reader = asyncio.get_running_loop().create_task(read_new())
        started = time.monotonic()
        old_closed = False
        try:
            while self._running and not new_closed.is_set():
                elapsed = time.monotonic() - started
                if elapsed >= self.handover_timeout_s or (elapsed >= self.handover_overlap_s and self._covered(first)):
                    break
                try:
                    msg = await old.receive(timeout=0.02)
                except asyncio.TimeoutError:
                    continue
                if msg.type == aiohttp.WSMsgType.TEXT or msg.type == aiohttp.WSMsgType.BINARY:
                    self._on_frame(msg.data, time.time_ns())
                elif msg.type in _CLOSED:
                    old_closed = True  # the venue closed it first: the new one takes over right away
                    break
        finally:
            reader.cancel()  # an unread message stays in the connection's queue
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self._standby = None
        if new_closed.is_set() or not self._running:
            with contextlib.suppress(Exception):
                await new.close()
            if self._running:
                self.counters["handover_failures"] += 1
                log.warning("binance feed: the new connection closed during the handover; keeping the old one")
            return None
        # Switch: the old connection's messages are in the books; hand over the new one's that are newer
        # (queued here, or still unread on the new connection: `_already_have` filters both).
        self._ws = new
        self.counters["handovers"] += 1
        self._overlap = {sym: [depth, trade] for sym, (depth, trade) in self._last_seen().items()}
        self._overlap_until = time.monotonic() + max(5.0, 2 * self.handover_overlap_s)
        for data in queued:
            if not self._already_have(data):
                self._on_frame(data, time.time_ns())
        if not old_closed:
            log.info("binance feed: switched to the new connection after %.2f s of overlap",
                     time.monotonic() - started)
        with contextlib.suppress(Exception):
            await old.close()
        return new

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
