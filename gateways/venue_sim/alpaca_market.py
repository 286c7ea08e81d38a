"""Alpaca market data (v2 WebSocket) on the simulator, driven by the same seeded markets.

`/v2/{feed}` (stocks: trades, quotes, bars) and `/v1beta3/crypto/{loc}` (crypto: trades, quotes,
orderbooks). Handshake and errors as Alpaca documents them: `[{"T":"success","msg":"connected"}]`,
auth with `{"action":"auth","key","secret"}` (any non-empty pair is accepted; an empty one gets
`402 auth failed`), `401 not authenticated` for a subscribe before auth, `403 already
authenticated`, `400 invalid syntax`, `404 auth timeout`, `410 invalid subscribe action for this
feed` (order books on a stock feed). A subscription to order books starts with the full book
(`"r": true`); then each depth change is sent as the changed levels.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from dataclasses import dataclass, field

import msgspec
from aiohttp import WSMsgType, web

from gateways.venue_sim.exchange import SimExchange
from gateways.venue_sim.replay import ALPACA_STREAM
from gateways.venue_sim.stream import FaultyStream

AUTH_TIMEOUT_S = 10.0
BAR_INTERVAL_S = 60.0


class _Envelope(msgspec.Struct):
    stream: str
    data: msgspec.Raw


class _Trade(msgspec.Struct):
    s: str
    t: int
    p: str
    q: str
    T: int
    m: bool


class _Depth(msgspec.Struct):
    E: int
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]


class _Snap(msgspec.Struct):
    lastUpdateId: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


class _Kind(msgspec.Struct):
    T: str = ""


# Alpaca message type -> the subscription channel that carries it.
_CHANNELS = {"t": "trades", "q": "quotes", "b": "bars", "d": "bars", "u": "bars", "o": "orderbooks"}

_alpaca_kind = msgspec.json.Decoder(_Kind)
_envelope = msgspec.json.Decoder(_Envelope)
_trade = msgspec.json.Decoder(_Trade)
_depth = msgspec.json.Decoder(_Depth)
_snap = msgspec.json.Decoder(_Snap)
_encode = msgspec.json.Encoder().encode


def rfc3339(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _err(code: int, msg: str) -> bytes:
    return _encode([{"T": "error", "code": code, "msg": msg}])


@dataclass(eq=False)
class _Conn:
    stream: FaultyStream
    crypto: bool
    authed: bool = False
    subs: dict[str, set[str]] = field(default_factory=lambda: {"trades": set(), "quotes": set(), "bars": set(),
                                                                "orderbooks": set()})

    def wants(self, channel: str, symbol: str) -> bool:
        s = self.subs[channel]
        return symbol in s or "*" in s

    def subscription(self) -> bytes:
        msg = {"T": "subscription", **{k: sorted(v) for k, v in self.subs.items() if self.crypto or k != "orderbooks"}}
        return _encode([msg])


@dataclass
class _Bar:
    start_ms: int
    o: float
    h: float
    l: float  # noqa: E741
    c: float
    v: float
    n: int


class AlpacaMarketSim:
    def __init__(self, exchange: SimExchange) -> None:
        self.exchange = exchange
        self.conns: set[_Conn] = set()
        self.bars: dict[str, _Bar] = {}
        # symbol -> its replayed book's (snapshot loads, skipped diffs) when order-book subscribers last had it whole
        self.book_marks: dict[str, tuple[int, int]] = {}
        self.bar_interval_s = BAR_INTERVAL_S
        self.auth_timeout_s = AUTH_TIMEOUT_S
        exchange.add_listener(self.on_tick)

    def subscribers(self) -> int:
        """Authenticated connections with at least one subscription (a replay starts with the first)."""
        return sum(1 for c in self.conns if c.authed and any(c.subs.values()))

    def backlog(self) -> int:
        """The longest outgoing queue (a full-speed replay waits while it is long)."""
        return max((c.stream.queue.qsize() for c in self.conns), default=0)

    # ------------------------------------------------------------------ fan-out

    def on_tick(self, symbol: str, msgs: list[bytes]) -> None:
        if not self.conns:
            return
        now = self.exchange.clock_ms
        trades_stock, trades_crypto, book_msgs, quote = [], [], [], None
        recorded: list[tuple[str, bytes]] = []  # Alpaca frames of a replayed recording: (channel, item)
        for raw in msgs:
            env = _envelope.decode(raw)
            if env.stream == ALPACA_STREAM:
                kind = _alpaca_kind.decode(env.data).T
                channel = _CHANNELS.get(kind)
                if channel is not None:
                    recorded.append((channel, bytes(env.data)))
            elif env.stream.endswith("@trade"):
                t = _trade.decode(env.data)
                p, q = float(t.p), float(t.q)
                ts = rfc3339(t.T)
                trades_stock.append({"T": "t", "S": symbol, "i": t.t, "x": "V", "p": p, "s": q, "c": ["@"],
                                     "z": "C", "t": ts})
                trades_crypto.append({"T": "t", "S": symbol, "p": p, "s": q, "t": ts, "i": t.t,
                                      "tks": "S" if t.m else "B"})
                self._bar_trade(symbol, p, q, t.T)
            elif "@depth" in env.stream:
                # Every diff, in order: a replay at full speed hands over many per tick, and a client that
                # missed one would keep a level the venue no longer has.
                d = _depth.decode(env.data)
                book_msgs.append({"T": "o", "S": symbol, "t": rfc3339(d.E),
                                  "b": [{"p": float(p), "s": float(s)} for p, s in d.b],
                                  "a": [{"p": float(p), "s": float(s)} for p, s in d.a]})
        # A replayed book reloaded from a snapshot (to bridge a gap in the recording), or one that skipped a stale
        # recorded diff, is not what the diffs say: order-book subscribers get it whole instead, as Alpaca resets
        # a book ("r": true).
        mark = self._book_mark(symbol)
        if mark != self.book_marks.setdefault(symbol, mark):
            self.book_marks[symbol] = mark
            book_msgs = [self._book(symbol, reset=True)]
        if book_msgs:
            quote = self._quote(symbol, now)
        bar = self._bar_close(symbol, now)
        for conn in list(self.conns):
            if not conn.authed:
                continue
            out = []
            if conn.wants("trades", symbol):
                out.extend(trades_crypto if conn.crypto else trades_stock)
            if quote is not None and conn.wants("quotes", symbol):
                out.append(quote if conn.crypto else {**quote, "bx": "V", "ax": "V", "c": ["R"], "z": "C"})
            if book_msgs and conn.crypto and conn.wants("orderbooks", symbol):
                out.extend(book_msgs)
            if bar is not None and conn.wants("bars", symbol):
                out.append(bar)
            items = [item for channel, item in recorded
                     if conn.wants(channel, symbol) and (conn.crypto or channel != "orderbooks")]
            if out or items:
                frame = _encode(out)
                if items:  # recorded items verbatim, after the derived ones
                    frame = b"[" + b",".join([*([frame[1:-1]] if out else []), *items]) + b"]"
                conn.stream.offer(frame)

    def _quote(self, symbol: str, now_ms: int) -> dict | None:
        snap = _snap.decode(self.exchange.markets[symbol].snapshot(limit=1))
        if not snap.bids or not snap.asks:
            return None
        return {"T": "q", "S": symbol, "bp": float(snap.bids[0][0]), "bs": float(snap.bids[0][1]),
                "ap": float(snap.asks[0][0]), "as": float(snap.asks[0][1]), "t": rfc3339(now_ms)}

    def _bar_trade(self, symbol: str, p: float, q: float, ts_ms: int) -> None:
        b = self.bars.get(symbol)
        if b is None:
            start = int(ts_ms // (self.bar_interval_s * 1000) * self.bar_interval_s * 1000)
            self.bars[symbol] = _Bar(start, p, p, p, p, q, 1)
            return
        b.h, b.l, b.c, b.v, b.n = max(b.h, p), min(b.l, p), p, b.v + q, b.n + 1

    def _bar_close(self, symbol: str, now_ms: int) -> dict | None:
        b = self.bars.get(symbol)
        if b is None or now_ms < b.start_ms + self.bar_interval_s * 1000:
            return None
        del self.bars[symbol]
        return {"T": "b", "S": symbol, "o": b.o, "h": b.h, "l": b.l, "c": b.c, "v": b.v, "n": b.n,
                "vw": b.c, "t": rfc3339(b.start_ms)}

    def full_book(self, symbol: str) -> bytes:
        self.book_marks[symbol] = self._book_mark(symbol)
        return _encode([self._book(symbol, reset=True)])

    def _book_mark(self, symbol: str) -> tuple[int, int]:
        counters = getattr(self.exchange.markets.get(symbol), "counters", None)  # a replayed market's
        return (counters["snapshots"], counters["skipped"]) if counters is not None else (0, 0)

    def _book(self, symbol: str, reset: bool) -> dict:
        snap = _snap.decode(self.exchange.markets[symbol].snapshot(limit=1000))
        return {"T": "o", "S": symbol, "t": rfc3339(self.exchange.now_ms()),
                "b": [{"p": float(p), "s": float(s)} for p, s in snap.bids],
                "a": [{"p": float(p), "s": float(s)} for p, s in snap.asks], "r": reset}

    # ------------------------------------------------------------------ WebSocket

    async def ws_stocks(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve(request, crypto=False)

    async def ws_crypto(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve(request, crypto=True)

    async def _serve(self, request: web.Request, crypto: bool) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=self.exchange.ping_interval_s)
        await ws.prepare(request)
        conn = _Conn(FaultyStream(ws, self.exchange.faults), crypto)
        await conn.stream.send_now(_encode([{"T": "success", "msg": "connected"}]))
        self.conns.add(conn)
        conn.stream.start()
        loop = asyncio.get_running_loop()

        async def auth_timeout() -> None:
            await asyncio.sleep(self.auth_timeout_s)
            if not conn.authed:
                with contextlib.suppress(Exception):
                    await conn.stream.send_now(_err(404, "auth timeout"))
                    await ws.close()

        timer = loop.create_task(auth_timeout())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                        break
                    continue
                for reply in self._control(conn, msg.data):
                    await conn.stream.send_now(reply)
        finally:
            timer.cancel()
            self.conns.discard(conn)
            await conn.stream.stop()
            with contextlib.suppress(Exception):
                await ws.close()
        return ws

    def _control(self, conn: _Conn, text: str) -> list[bytes]:
        try:
            req = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return [_err(400, "invalid syntax")]
        if not isinstance(req, dict):
            return [_err(400, "invalid syntax")]
        action = req.get("action")
        if action == "auth":
            if conn.authed:
                return [_err(403, "already authenticated")]
            if not req.get("key") or not req.get("secret"):
                return [_err(402, "auth failed")]
            conn.authed = True
            return [_encode([{"T": "success", "msg": "authenticated"}])]
        if action in ("subscribe", "unsubscribe"):
            if not conn.authed:
                return [_err(401, "not authenticated")]
            channels = [k for k in ("trades", "quotes", "bars", "dailyBars", "updatedBars", "orderbooks") if k in req]
            if "orderbooks" in channels and not conn.crypto:
                return [_err(410, "invalid subscribe action for this feed")]
            for ch in channels:
                syms = req[ch]
                if not isinstance(syms, list) or not all(isinstance(s, str) for s in syms):
                    return [_err(400, "invalid syntax")]
                if ch not in conn.subs:
                    continue  # dailyBars / updatedBars: accepted, never sent by the simulator
                if action == "subscribe":
                    new = [s for s in syms if s not in conn.subs[ch]]
                    conn.subs[ch].update(syms)
                    if ch == "orderbooks":
                        # Through the data queue, so every later change arrives after the full book.
                        for s in new:
                            if s in self.exchange.markets:
                                conn.stream.offer(self.full_book(s))
                else:
                    conn.subs[ch].difference_update(syms)
            return [conn.subscription()]
        return [_err(400, "invalid syntax")]


SIM_KEY = web.AppKey("alpaca_market", AlpacaMarketSim)


def register(app: web.Application, exchange: SimExchange) -> None:
    sim = AlpacaMarketSim(exchange)
    app[SIM_KEY] = sim
    app.router.add_get("/v2/{feed}", sim.ws_stocks)
    app.router.add_get("/v1beta3/crypto/{loc}", sim.ws_crypto)
