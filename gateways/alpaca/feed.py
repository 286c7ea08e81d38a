"""Alpaca market data (v2 WebSocket): stocks (trades, quotes, bars) and crypto (trades, quotes, order books).

Protocol (https://docs.alpaca.markets/docs/streaming-market-data): every server message is a
JSON array of objects tagged by `T`. On connect the server says
`[{"T":"success","msg":"connected"}]`; the client sends `{"action":"auth","key":..,"secret":..}`
and gets `[{"T":"success","msg":"authenticated"}]` or an error (`402 auth failed`, `404 auth
timeout`, `406 connection limit exceeded`, ...); then `{"action":"subscribe","trades":[..],
"quotes":[..],"bars":[..],"orderbooks":[..]}` is answered with the full subscription
(`{"T":"subscription",...}`). Data: `t` trade, `q` quote, `b` bar, `o` crypto order book
(`r: true` = a full book that replaces the local one; otherwise changed levels, size 0 removes).

Stocks connect to `<data_url>/v2/<feed>` (iex or sip), crypto to `<data_url>/v1beta3/crypto/us`.
Alpaca's order books carry no sequence numbers, so a lost message cannot be detected: on every
(re)connect the book waits for the `r: true` full book that follows the subscription.
A stock "book" is the quote's top of book (one level a side).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
import msgspec

from cluster.messages import BookUpdate, Side, Trade
from gateways.binance.feed import Backoff
from gateways.binance.market_handler import ErrorTally
from gateways.book import OrderBook

log = logging.getLogger(__name__)

_INF = math.inf


class AlpacaMessage(msgspec.Struct, omit_defaults=True):
    """Any data or control message; fields not used by a type stay at their defaults."""

    T: str
    S: str = ""
    msg: str = ""
    code: int = 0
    p: float = 0.0  # trade price
    s: float = 0.0  # trade size
    i: int = -1  # trade id
    t: str = ""  # RFC-3339 timestamp
    tks: str = ""  # crypto taker side: B / S
    bp: float = 0.0
    bs: float = 0.0
    ap: float = 0.0
    as_: float = msgspec.field(default=0.0, name="as")
    b: list[dict[str, float]] | None = None  # order book bids [{"p":..,"s":..}]
    a: list[dict[str, float]] | None = None
    r: bool = False
    o: float = 0.0  # bar open (c is a list for trades, a float for bars: not decoded)
    h: float = 0.0
    l: float = 0.0  # noqa: E741 - Alpaca's field name
    v: float = 0.0


_batch = msgspec.json.Decoder(list[msgspec.Raw])
_message = msgspec.json.Decoder(AlpacaMessage)


def parse_timestamp_ns(ts: str) -> int:
    """`2021-02-22T15:51:44.208123456Z` -> ns since the epoch (Alpaca sends up to nanoseconds); 0 if absent."""
    if not ts:
        return 0
    head, _, frac = ts.rstrip("Z").partition(".")
    digits = "".join(ch for ch in frac if ch.isdigit())
    tz = frac[len(digits):]
    base = dt.datetime.fromisoformat(head + (tz or "+00:00"))
    return int(base.timestamp()) * 1_000_000_000 + int((digits + "000000000")[:9])


def _check(x: float, what: str, allow_zero: bool) -> None:
    if not (0.0 <= x < _INF) or (x == 0.0 and not allow_zero):
        raise ValueError(f"{what}={x!r}")


def is_crypto(symbol: str) -> bool:
    return "/" in symbol


class _SymbolState:
    __slots__ = ("symbol", "book", "synced", "changed", "stale", "last_msg_ns", "exchange_ns", "counters", "bar",
                 "ever_synced")

    def __init__(self, venue: str, symbol: str) -> None:
        self.symbol = symbol
        self.book = OrderBook(symbol, venue)
        self.synced = False
        self.changed = False
        self.stale = False
        self.last_msg_ns = 0
        self.exchange_ns = 0
        self.counters = dict.fromkeys(("applied", "trades", "quotes", "bars", "book_resets", "crossed",
                                       "stale_alarms", "malformed"), 0)
        self.bar: tuple[float, float, float, float, float] | None = None
        self.ever_synced = False


class AlpacaMarketHandler:
    """Alpaca messages to books and trades, without I/O (same surface as `BinanceMarketHandler`)."""

    def __init__(self, venue: str, symbols: Iterable[str], book_depth: int = 10, stale_after_s: float = 2.0) -> None:
        self.venue = venue
        self.depth = book_depth
        self.stale_after_ns = int(stale_after_s * 1e9)
        self.symbols = {s: _SymbolState(venue, s) for s in symbols}
        self.errors = ErrorTally(f"alpaca feed {venue}")
        self.trades: list[Trade] = []
        self.control: list[AlpacaMessage] = []  # success / subscription / error messages, for the client

    def subscription(self, crypto: bool) -> dict[str, Any]:
        syms = [s for s in self.symbols if is_crypto(s) == crypto]
        msg: dict[str, Any] = {"action": "subscribe", "trades": syms, "quotes": syms}
        if crypto:
            msg["orderbooks"] = syms
        else:
            msg["bars"] = syms
        return msg

    def on_message(self, raw: bytes | str, recv_ns: int = 0) -> None:
        """One WebSocket frame (a JSON array); bad elements are counted and skipped, never raised."""
        items = self.errors.decode(_batch, raw)
        if items is None:
            return
        for item in items:
            try:
                m = _message.decode(item)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                self.errors.add("schema", bytes(item), str(exc))
                continue
            if m.T in ("success", "subscription", "error"):
                self.control.append(m)
                if m.T == "error":
                    self.errors.add(f"venue_error_{m.code}", bytes(item), m.msg)
                continue
            st = self.symbols.get(m.S)
            if st is None:
                self.errors.add("unknown_symbol", bytes(item), f"symbol {m.S!r}")
                continue
            st.last_msg_ns = recv_ns
            if st.stale:
                st.stale = False
                st.changed = True
            try:
                self._on_data(st, m, recv_ns)
            except ValueError as exc:
                st.counters["malformed"] += 1
                self.errors.add("bad_value", bytes(item), str(exc))

    def _on_data(self, st: _SymbolState, m: AlpacaMessage, recv_ns: int) -> None:
        if m.T == "t":
            _check(m.p, "p", False)
            _check(m.s, "s", False)
            taker = Side.SELL if m.tks == "S" else Side.BUY
            self.trades.append(Trade(venue=self.venue, symbol=st.symbol, trade_id=str(m.i), price=m.p, qty=m.s,
                                     aggressor=taker, exchange_ts_ns=parse_timestamp_ns(m.t), receive_ts_ns=recv_ns))
            st.counters["trades"] += 1
        elif m.T == "q":
            _check(m.bp, "bp", False)
            _check(m.ap, "ap", False)
            _check(m.bs, "bs", True)
            _check(m.as_, "as", True)
            st.counters["quotes"] += 1
            if not is_crypto(st.symbol):  # a stock's book is its quote
                st.book.load_snapshot([(m.bp, m.bs)], [(m.ap, m.as_)])
                st.synced = True
                st.changed = True
                st.counters["applied"] += 1
                st.exchange_ns = parse_timestamp_ns(m.t)
        elif m.T == "o":
            bids = [(float(lv["p"]), float(lv["s"])) for lv in m.b or []]
            asks = [(float(lv["p"]), float(lv["s"])) for lv in m.a or []]
            if m.r:
                st.book.load_snapshot(bids, asks)
                st.synced = True
                st.counters["book_resets"] += 1
            elif st.synced:
                st.book.apply_levels(bids, asks)  # validates everything before changing anything
            else:
                return  # no full book yet: an increment alone means nothing
            st.changed = True
            st.counters["applied"] += 1
            st.exchange_ns = parse_timestamp_ns(m.t)
        elif m.T == "b":
            for name in ("o", "h", "l", "v"):
                _check(getattr(m, name), name, name == "v")
            st.bar = (m.o, m.h, m.l, m.v, parse_timestamp_ns(m.t))
            st.counters["bars"] += 1
        else:
            raise ValueError(f"unknown message type {m.T!r}")

    def reset(self) -> None:
        """A new connection: the books wait for a fresh full book (crypto) or quote (stocks)."""
        for st in self.symbols.values():
            st.book.clear()
            st.synced = False
            st.changed = True

    def check_stale(self, now_ns: int) -> list[str]:
        out = []
        for sym, st in self.symbols.items():
            if not st.stale and st.last_msg_ns and now_ns - st.last_msg_ns > self.stale_after_ns:
                st.stale = True
                st.changed = True
                st.counters["stale_alarms"] += 1
                out.append(sym)
                log.warning("alpaca feed %s: %s is stale", self.venue, sym)
        return out

    def drain(self, now_ns: int = 0) -> tuple[dict[str, BookUpdate], list[Trade]]:
        books: dict[str, BookUpdate] = {}
        for sym, st in self.symbols.items():
            if not st.changed:
                continue
            st.changed = False
            if not st.synced and not st.ever_synced:
                continue  # no book yet: nothing to publish, not even an invalid one
            st.ever_synced = True
            update = st.book.to_update(seq=st.counters["applied"], depth=self.depth, exchange_ts_ns=st.exchange_ns,
                                       receive_ts_ns=now_ns, stale=st.stale or not st.synced)
            if update.crossed:
                st.counters["crossed"] += 1
            books[sym] = update
        trades, self.trades = self.trades, []
        return books, trades

    def stats(self) -> dict[str, dict[str, int]]:
        shared = {f"conn_error:{k}": n for k, n in self.errors.counts.items()}
        return {s: {**st.counters, "synced": int(st.synced), **shared} for s, st in self.symbols.items()}

    def error_counts(self) -> dict[str, int]:
        return dict(self.errors.counts)


class AlpacaAuthError(RuntimeError):
    pass


class AlpacaFeed:
    """One WebSocket per asset class (stocks, crypto), authenticated and subscribed; reconnects with jittered backoff."""

    def __init__(self, handler: AlpacaMarketHandler, data_url: str, on_update: Callable[[], None] | None = None, *,
                 key: str = "", secret: str = "", stock_feed: str = "iex", crypto_loc: str = "us",
                 idle_timeout_s: float = 30.0, backoff: Backoff | None = None, recorder: Any = None) -> None:
        self.handler = handler
        self.data_url = data_url.rstrip("/")
        self.on_update = on_update or (lambda: None)
        self.key = key
        self.secret = secret
        self.stock_feed = stock_feed
        self.crypto_loc = crypto_loc
        self.idle_timeout_s = idle_timeout_s
        self.backoff = backoff or Backoff()
        self.recorder = recorder
        self.counters = dict.fromkeys(("connects", "disconnects", "auth_failures", "idle_reconnects", "messages"), 0)
        self._running = False
        self._ws: list[aiohttp.ClientWebSocketResponse] = []

    def urls(self) -> dict[bool, str]:
        """{is_crypto: URL} for the asset classes among the symbols."""
        out = {}
        if any(not is_crypto(s) for s in self.handler.symbols):
            out[False] = f"{self.data_url}/v2/{self.stock_feed}"
        if any(is_crypto(s) for s in self.handler.symbols):
            out[True] = f"{self.data_url}/v1beta3/crypto/{self.crypto_loc}"
        return out

    async def run(self) -> None:
        self._running = True
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._loop(session, url, crypto) for crypto, url in self.urls().items()))

    async def stop(self) -> None:
        self._running = False
        for ws in list(self._ws):
            await ws.close()

    async def _loop(self, session: aiohttp.ClientSession, url: str, crypto: bool) -> None:
        backoff = Backoff(self.backoff.base_s, self.backoff.cap_s, rng=self.backoff.rng)
        while self._running:
            try:
                await self._connection(session, url, crypto, backoff)
            except asyncio.CancelledError:
                raise
            except AlpacaAuthError as exc:
                self.counters["auth_failures"] += 1
                log.error("alpaca feed: %s", exc)
            except Exception as exc:
                log.warning("alpaca feed: connection to %s failed: %s: %s", url, type(exc).__name__, exc)
            if self._running:
                self.counters["disconnects"] += 1
                await asyncio.sleep(backoff.next_delay())

    async def _control(self, ws: aiohttp.ClientWebSocketResponse, want: str) -> None:
        """Read frames until a control message: `want` (success msg or "subscription") or an error."""
        h = self.handler
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise ConnectionError(f"closed during the handshake ({msg.type.name})")
            h.on_message(msg.data, time.time_ns())
            while h.control:
                c = h.control.pop(0)
                if c.T == "error":
                    raise AlpacaAuthError(f"{c.code} {c.msg}") if c.code in (402, 404, 406, 409) else \
                        ConnectionError(f"{c.code} {c.msg}")
                if (c.T == "success" and c.msg == want) or (c.T == "subscription" and want == "subscription"):
                    return

    async def _connection(self, session: aiohttp.ClientSession, url: str, crypto: bool, backoff: Backoff) -> None:
        h = self.handler
        async with session.ws_connect(url, autoping=True, max_msg_size=16 * 2**20) as ws:
            self._ws.append(ws)
            try:
                await self._control(ws, "connected")
                await ws.send_str(msgspec.json.encode({"action": "auth", "key": self.key,
                                                       "secret": self.secret}).decode())
                await self._control(ws, "authenticated")
                for st in (s for s in h.symbols.values() if is_crypto(s.symbol) == crypto):
                    st.book.clear()
                    st.synced = False
                    st.changed = True
                await ws.send_str(msgspec.json.encode(h.subscription(crypto)).decode())
                self.counters["connects"] += 1
                backoff.reset()
                self.on_update()
                while self._running:
                    try:
                        msg = await ws.receive(timeout=self.idle_timeout_s)
                    except asyncio.TimeoutError:
                        self.counters["idle_reconnects"] += 1
                        return
                    if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        return
                    recv_ns = time.time_ns()
                    if self.recorder is not None:
                        self.recorder.record("ws", msg.data, recv_ns)
                    self.counters["messages"] += 1
                    h.on_message(msg.data, recv_ns)
                    h.control.clear()
                    self.on_update()
            finally:
                self._ws.remove(ws)
