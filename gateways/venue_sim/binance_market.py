"""Binance spot market data on the simulator: the REST endpoints and WebSocket streams a feed uses.

REST (https://developers.binance.com/docs/binance-spot-api-docs/rest-api):
`GET /api/v3/ping`, `/api/v3/time`, `/api/v3/exchangeInfo`, `/api/v3/depth?symbol=&limit=`,
with Binance's error bodies (`{"code": -1121, "msg": "Invalid symbol."}`) and the
`X-MBX-USED-WEIGHT-1M` header.

WebSocket (https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams):
raw streams at `/ws/<stream>`, combined streams at `/stream?streams=a/b/c` (wrapped as
`{"stream": ..., "data": ...}`), live `SUBSCRIBE` / `UNSUBSCRIBE` / `LIST_SUBSCRIPTIONS`,
server pings (every 20 s on the venue) and the disconnect at the 24-hour mark. Streams:
`<symbol>@depth[@100ms|@1000ms]`, `@trade`, `@aggTrade`, `@bookTicker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import msgspec
from aiohttp import WSMsgType, web

from gateways.venue_sim.exchange import SimExchange
from gateways.venue_sim.stream import FaultyStream

_ERR_INVALID_SYMBOL = {"code": -1121, "msg": "Invalid symbol."}
_WEIGHT_LIMIT_1M = 6000


def _error(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)


def _depth_weight(limit: int) -> int:
    """Request weight of `GET /api/v3/depth` by `limit`, as Binance documents it."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


def _decimal_str(x: float) -> str:
    return f"{x:.8f}"


class _Envelope(msgspec.Struct):
    stream: str
    data: msgspec.Raw


class _TradeData(msgspec.Struct):
    E: int
    s: str
    t: int
    p: str
    q: str
    T: int
    m: bool


class _AggTrade(msgspec.Struct):
    e: str
    E: int
    s: str
    a: int
    p: str
    q: str
    f: int
    l: int  # noqa: E741 - Binance's field name
    T: int
    m: bool
    M: bool = True


class _BookTicker(msgspec.Struct):
    u: int
    s: str
    b: str
    B: str
    a: str
    A: str


class _Snap(msgspec.Struct):
    lastUpdateId: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


_envelope = msgspec.json.Decoder(_Envelope)
_trade = msgspec.json.Decoder(_TradeData)
_snap = msgspec.json.Decoder(_Snap)
_encode = msgspec.json.Encoder().encode

_KINDS = {"depth": "depth", "depth@100ms": "depth", "depth@1000ms": "depth", "trade": "trade",
          "aggTrade": "aggTrade", "bookTicker": "bookTicker"}


def parse_stream(name: str) -> tuple[str, str] | None:
    """`btcusdt@depth@100ms` -> ("BTCUSDT", "depth"); None for a stream this simulator does not serve."""
    sym, sep, kind = name.partition("@")
    if not sep or kind not in _KINDS:
        return None
    return sym.upper(), _KINDS[kind]


@dataclass(eq=False)
class _Conn:
    stream: FaultyStream
    combined: bool
    subs: dict[str, tuple[str, str]] = field(default_factory=dict)  # stream name -> (SYMBOL, kind)


class BinanceMarketSim:
    """Fans each tick's messages out to the WebSocket connections that subscribed to them."""

    def __init__(self, exchange: SimExchange) -> None:
        self.exchange = exchange
        self.conns: set[_Conn] = set()
        self.weight: dict[int, int] = {}  # minute -> used weight
        self.requests = 0
        self.connections_opened = 0
        self.peak_connections = 0  # most connections open at once (a make-before-break reconnect shows 2)
        exchange.add_listener(self.on_tick)

    def subscribers(self) -> int:
        """Open connections with at least one subscription (a replay starts with the first)."""
        return sum(1 for c in self.conns if c.subs)

    def backlog(self) -> int:
        """The longest outgoing queue (a full-speed replay waits while it is long)."""
        return max((c.stream.queue.qsize() for c in self.conns), default=0)

    def announce_shutdown(self, close_after_s: float) -> int:
        """Like Binance before maintenance: send `serverShutdown` on every open connection, close them
        `close_after_s` later (new connections are served as usual). Returns how many were told."""
        loop = asyncio.get_running_loop()
        notice = _encode({"e": "serverShutdown", "E": int(time.time() * 1000)})
        told = list(self.conns)
        for conn in told:
            loop.create_task(conn.stream.send_now(notice))
            loop.call_later(close_after_s, lambda ws=conn.stream.ws: asyncio.ensure_future(ws.close()))
        return len(told)

    # ------------------------------------------------------------------ fan-out

    def on_tick(self, symbol: str, msgs: list[bytes]) -> None:
        if not self.conns:
            return
        wanted = {kind for c in self.conns for s, kind in c.subs.values() if s == symbol}
        if not wanted:
            return
        by_kind: dict[str, list[bytes]] = {"depth": [], "trade": [], "aggTrade": [], "bookTicker": []}
        # A replayed recording may hold aggTrade and bookTicker events itself: then they are sent as
        # recorded, not derived (`ReplayMarket.recorded_kinds`; the seeded market records none).
        recorded = getattr(self.exchange.markets.get(symbol), "recorded_kinds", ())
        for raw in msgs:
            env = _envelope.decode(raw)
            stream = env.stream
            if "@depth" in stream:
                by_kind["depth"].append(bytes(env.data))
            elif stream.endswith("@trade"):
                by_kind["trade"].append(bytes(env.data))
                if "aggTrade" in wanted and "aggTrade" not in recorded:
                    t = _trade.decode(env.data)
                    by_kind["aggTrade"].append(_encode(_AggTrade(e="aggTrade", E=t.E, s=t.s, a=t.t, p=t.p, q=t.q,
                                                                 f=t.t, l=t.t, T=t.T, m=t.m)))
            elif stream.endswith("@aggTrade"):
                by_kind["aggTrade"].append(bytes(env.data))
            elif stream.endswith("@bookTicker"):
                by_kind["bookTicker"].append(bytes(env.data))
        if "bookTicker" in wanted and by_kind["depth"] and "bookTicker" not in recorded:
            ticker = self.book_ticker(symbol)
            if ticker is not None:
                by_kind["bookTicker"].append(ticker)
        for conn in list(self.conns):
            for name, (sym, kind) in conn.subs.items():
                if sym != symbol:
                    continue
                for data in by_kind[kind]:
                    conn.stream.offer(b'{"stream":"' + name.encode() + b'","data":' + data + b"}"
                                      if conn.combined else data)

    def book_ticker(self, symbol: str) -> bytes | None:
        market = self.exchange.markets.get(symbol)
        if market is None:
            return None
        snap = _snap.decode(market.snapshot(limit=1))
        if not snap.bids or not snap.asks:
            return None
        return _encode(_BookTicker(u=snap.lastUpdateId, s=symbol, b=snap.bids[0][0], B=snap.bids[0][1],
                                   a=snap.asks[0][0], A=snap.asks[0][1]))

    # ------------------------------------------------------------------ REST

    def _use_weight(self, weight: int) -> int:
        minute = int(time.time() // 60)
        used = self.weight.get(minute, 0) + weight
        self.weight = {minute: used}
        return used

    def _rest_guard(self, weight: int) -> tuple[web.Response | None, dict[str, str]]:
        """Weight accounting and injected REST faults; (error response or None, headers for the answer)."""
        self.requests += 1
        used = self._use_weight(weight)
        headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
        fault = self.exchange.faults.rest_fault()
        if fault == 429 or used > _WEIGHT_LIMIT_1M:
            return _error(429, -1003, f"Too much request weight used; current limit is {_WEIGHT_LIMIT_1M} request "
                          "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling "
                          "the API.", {**headers, "Retry-After": "1"}), headers
        if fault is not None:
            return web.json_response({"code": -1001, "msg": "Internal error; unable to process your request. "
                                      "Please try again."}, status=fault, headers=headers), headers
        return None, headers

    async def ping(self, request: web.Request) -> web.Response:
        err, headers = self._rest_guard(1)
        return err or web.json_response({}, headers=headers)

    async def server_time(self, request: web.Request) -> web.Response:
        err, headers = self._rest_guard(1)
        return err or web.json_response({"serverTime": self.exchange.now_ms()}, headers=headers)

    async def depth(self, request: web.Request) -> web.Response:
        q = request.query
        limit_s = q.get("limit", "100")
        if not limit_s.isdigit():
            return _error(400, -1100, "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.")
        limit = int(limit_s)
        err, headers = self._rest_guard(_depth_weight(limit))
        if err is not None:
            return err
        symbol = q.get("symbol", "")
        if not symbol:
            return _error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                          headers)
        market = self.exchange.markets.get(symbol)
        if market is None:
            return web.json_response(_ERR_INVALID_SYMBOL, status=400, headers=headers)
        if not 1 <= limit <= 5000:
            return _error(400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1-5000'.",
                          headers)
        return web.Response(body=market.snapshot(limit=limit), content_type="application/json", headers=headers)

    async def exchange_info(self, request: web.Request) -> web.Response:
        err, headers = self._rest_guard(20)
        if err is not None:
            return err
        q = request.query
        names = list(self.exchange.symbols)
        if "symbol" in q:
            names = [q["symbol"]]
        elif "symbols" in q:
            try:
                names = msgspec.json.decode(q["symbols"], type=list[str])
            except msgspec.DecodeError:
                return _error(400, -1100, "Illegal characters found in parameter 'symbols'.", headers)
        if any(n not in self.exchange.symbols for n in names):
            return web.json_response(_ERR_INVALID_SYMBOL, status=400, headers=headers)
        return web.json_response(exchange_info(self.exchange, names), headers=headers)

    # ------------------------------------------------------------------ WebSocket

    async def ws_combined(self, request: web.Request) -> web.WebSocketResponse:
        names = [n for n in request.query.get("streams", "").split("/") if n]
        return await self._serve(request, names, combined=True)

    async def ws_raw(self, request: web.Request) -> web.WebSocketResponse:
        name = request.match_info.get("stream", "")
        return await self._serve(request, [name] if name else [], combined=False)

    async def _serve(self, request: web.Request, names: list[str], combined: bool) -> web.WebSocketResponse:
        ex = self.exchange
        ws = web.WebSocketResponse(heartbeat=ex.ping_interval_s, autoping=True)
        await ws.prepare(request)
        conn = _Conn(FaultyStream(ws, ex.faults), combined)
        self._subscribe(conn, names)
        self.conns.add(conn)
        self.connections_opened += 1
        self.peak_connections = max(self.peak_connections, len(self.conns))
        conn.stream.start()
        # The venue closes every connection at the 24-hour mark.
        closer = asyncio.get_running_loop().call_later(ex.max_connection_age_s,
                                                       lambda: asyncio.ensure_future(ws.close()))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    reply = self._control(conn, msg.data)
                    if reply is not None:
                        await conn.stream.send_now(reply)
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            closer.cancel()
            self.conns.discard(conn)
            await conn.stream.stop()
            with contextlib.suppress(Exception):
                await ws.close()
        return ws

    def _subscribe(self, conn: _Conn, names: list[str]) -> None:
        for name in names:
            parsed = parse_stream(name)
            if parsed is not None:  # like Binance: an unknown stream simply never sends anything
                conn.subs[name] = parsed

    def _control(self, conn: _Conn, text: str) -> bytes | None:
        """Answer a live-subscription request: `{"method": "SUBSCRIBE", "params": [...], "id": 1}`."""
        try:
            req = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return _encode({"error": {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}})
        if not isinstance(req, dict):
            return _encode({"error": {"code": 2, "msg": "Invalid request: request must be an object"}})
        rid = req.get("id")
        method = req.get("method")
        params = req.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return _encode({"error": {"code": 2, "msg": "Invalid request: invalid value type for 'params'"},
                                "id": rid})
            if method == "SUBSCRIBE":
                self._subscribe(conn, params)
            else:
                for p in params:
                    conn.subs.pop(p, None)
            return _encode({"result": None, "id": rid})
        if method == "LIST_SUBSCRIPTIONS":
            return _encode({"result": list(conn.subs), "id": rid})
        return _encode({"error": {"code": 2, "msg": f"Invalid request: unknown variant '{method}'"}, "id": rid})


def _fmt_step(step: float) -> str:
    return _decimal_str(step)


def exchange_info(exchange: SimExchange, names: list[str]) -> dict:
    """`GET /api/v3/exchangeInfo` body in Binance's shape, filters derived from the symbol config."""
    symbols = []
    for name in names:
        s = exchange.symbols[name]
        base, quote = _split_symbol(name)
        symbols.append({
            "symbol": name, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
            "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True, "ocoAllowed": True, "quoteOrderQtyMarketAllowed": True,
            "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": _fmt_step(s.tick_size), "maxPrice": "1000000.00000000",
                 "tickSize": _fmt_step(s.tick_size)},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "5", "multiplierDown": "0.2", "avgPriceMins": 5},
                {"filterType": "LOT_SIZE", "minQty": _fmt_step(s.lot_size), "maxQty": "9000.00000000",
                 "stepSize": _fmt_step(s.lot_size)},
                {"filterType": "MIN_NOTIONAL", "minNotional": "10.00000000", "applyToMarket": True,
                 "avgPriceMins": 5},
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            ],
            "permissions": ["SPOT"],
        })
    return {"timezone": "UTC", "serverTime": exchange.now_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": _WEIGHT_LIMIT_1M},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 160000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000}],
            "exchangeFilters": [], "symbols": symbols}


_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "USD")


def _split_symbol(symbol: str) -> tuple[str, str]:
    if "/" in symbol:
        base, quote = symbol.split("/", 1)
        return base, quote
    for q in _QUOTES:
        if symbol.endswith(q) and len(symbol) > len(q):
            return symbol[: -len(q)], q
    return symbol, ""


SIM_KEY = web.AppKey("binance_market", BinanceMarketSim)


def register(app: web.Application, exchange: SimExchange) -> None:
    sim = BinanceMarketSim(exchange)
    app[SIM_KEY] = sim
    app.router.add_get("/api/v3/ping", sim.ping)
    app.router.add_get("/api/v3/time", sim.server_time)
    app.router.add_get("/api/v3/depth", sim.depth)
    app.router.add_get("/api/v3/exchangeInfo", sim.exchange_info)
    app.router.add_get("/stream", sim.ws_combined)
    app.router.add_get("/ws", sim.ws_raw)
    app.router.add_get("/ws/{stream}", sim.ws_raw)
