"""Alpaca order entry on the venue simulator: REST v2 orders and the `trade_updates` stream.

Keys are checked from the `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY` headers (401
otherwise). Orders match with `gateways.paper.PaperVenue` against the simulated
books; executions are kept as FILL activities whose `id` is the stream's
`execution_id`, so a fill learned over REST de-duplicates against the stream.
The stream lives at `/stream` (without a `streams` query, which is Binance's
combined market stream on the same simulator).

As Alpaca does: `qty` (fractional, up to 9 decimals) or `notional` (a dollar
amount; market orders only, `day` for equities, `gtc`/`ioc` for crypto pairs
written BASE/QUOTE), never both; a notional order's JSON has `qty: null` and the
venue picks the quantity by walking the book. FILL activities have ids
`<YYYYMMDDHHMMSSmmm>::<execution_id>`, are listed oldest first with
`direction=asc` (newest first by default), `after`, `page_size` (max 100) and
`page_token` (the last id of the previous page). `GET /v2/orders/{id}` gives an
order by the venue's id.

Faults (`app[ALPACA_TRADING].faults`): `next_429` (with `Retry-After`, or only
`X-RateLimit-Reset` when `retry_after_s` is None), `accept_then_429` (the order
is placed, the answer is 429), `new_5xx`, and `disconnect_streams(down_s)`
(trade_updates sockets closed, reconnects refused for `down_s`: events meanwhile
are lost, as on the real stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from aiohttp import web

from cluster.messages import BookUpdate, ExecutionReport, Order, OrderStatus, OrderType, Side, TimeInForce
from gateways.paper import IOC_REMAINDER, PaperVenue
from gateways.venue_sim.exchange import SimExchange

SIM_KEY_ID = "sim-alpaca-key-id"
SIM_SECRET_KEY = "sim-alpaca-secret-key"
START_CASH = 1_000_000.0
LIMIT_PER_MIN = 200


@dataclass
class AlpacaFaults:
    next_429: int = 0  # refuse the next requests with 429
    retry_after_s: float | None = 1.0  # the 429's Retry-After; None: only X-RateLimit-Reset says when
    accept_then_429: int = 0  # place the next new orders, then answer 429 (a retry must not place it twice)
    new_5xx: int = 0  # accept the order, answer 500
    stream_down_until: float = 0.0  # monotonic: trade_updates connections refused until then


def _iso(ms: float | None = None) -> str:
    t = dt.datetime.fromtimestamp((ms if ms is not None else time.time() * 1000) / 1000, tz=dt.timezone.utc)
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_iso(ts: str) -> dt.datetime:
    ts = ts.strip().replace("Z", "+00:00")
    if "T" not in ts:
        ts += "T00:00:00+00:00"
    if "." in ts:  # at most microseconds
        head, rest = ts.split(".", 1)
        digits = "".join(ch for ch in rest if ch.isdigit())
        ts = f"{head}.{digits[:6]}{rest[len(digits):]}"
    out = dt.datetime.fromisoformat(ts)
    return out if out.tzinfo else out.replace(tzinfo=dt.timezone.utc)


def _amount(x: float) -> float:
    """Alpaca keeps quantities to 9 decimals."""
    return float(Decimal(repr(x)).quantize(Decimal("0.000000001"), rounding=ROUND_DOWN))


class AlpacaTradingSim:
    def __init__(self, exchange: SimExchange) -> None:
        self.exchange = exchange
        self.venue = PaperVenue(0.0, 0.0, trade_id_prefix="A")
        self.keys = {SIM_KEY_ID: SIM_SECRET_KEY}
        self.faults = AlpacaFaults()
        self.orders: dict[str, dict[str, Any]] = {}  # client_order_id -> Alpaca order JSON
        self.qtys: dict[str, float] = {}  # client_order_id -> the quantity the venue works (notional orders too)
        self.by_id: dict[str, str] = {}
        self.activities: list[dict[str, Any]] = []
        self.cash = START_CASH
        self.positions: dict[str, float] = {}
        self.sockets: set[web.WebSocketResponse] = set()
        self.counts = {"new_orders": 0, "queries": 0, "requests": 0, "refused_429": 0, "stream_auths": 0}
        self.window: dict[int, int] = {}
        exchange.add_listener(self._on_tick)

    def _book(self, symbol: str) -> BookUpdate:
        m = self.exchange.markets[symbol]
        bids, asks = m.book_levels()
        return BookUpdate(venue="alpaca", symbol=symbol, seq=m.update_id, bids=bids, asks=asks)

    def _on_tick(self, symbol: str, msgs: list[bytes]) -> None:
        if any(o.symbol == symbol for o in self.venue.open_orders()):
            self._process(self.venue.on_book(self._book(symbol)))

    def _guard(self, request: web.Request) -> tuple[web.Response | None, dict[str, str]]:
        self.counts["requests"] += 1
        minute = int(time.time() // 60)
        used = self.window.get(minute, 0) + 1
        self.window = {minute: used}
        headers = {"X-RateLimit-Limit": str(LIMIT_PER_MIN), "X-RateLimit-Remaining": str(max(LIMIT_PER_MIN - used, 0)),
                   "X-RateLimit-Reset": str((minute + 1) * 60)}
        if self.keys.get(request.headers.get("APCA-API-KEY-ID", "")) != request.headers.get("APCA-API-SECRET-KEY"):
            return web.json_response({"code": 40110000, "message": "request is not authorized"}, status=401), headers
        if self.faults.next_429 > 0 or used > LIMIT_PER_MIN:
            self.faults.next_429 = max(self.faults.next_429 - 1, 0)
            return self._too_many(headers), headers
        return None, headers

    def _too_many(self, headers: dict[str, str]) -> web.Response:
        self.counts["refused_429"] += 1
        extra = dict(headers)
        if self.faults.retry_after_s is not None:
            extra["Retry-After"] = f"{self.faults.retry_after_s:g}"
        return web.json_response({"code": 42910000, "message": "rate limit exceeded"}, status=429, headers=extra)

    def _process(self, reports: list[ExecutionReport]) -> None:
        for r in reports:
            o = self.orders.get(r.client_order_id)
            if o is None:
                continue
            now = _iso()
            o["updated_at"] = now
            o["filled_qty"] = repr(r.filled_qty)
            event = "new"
            extra: dict[str, Any] = {}
            if r.fill is not None:
                f = r.fill
                exec_id = str(uuid.uuid4())
                prev = _f(o.get("filled_avg_price")) * (r.filled_qty - f.qty)
                o["filled_avg_price"] = repr((prev + f.price * f.qty) / r.filled_qty)
                sign = 1 if f.side is Side.BUY else -1
                self.cash -= sign * f.price * f.qty
                self.positions[o["symbol"]] = self.positions.get(o["symbol"], 0.0) + sign * f.qty
                stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S%f")[:17]
                self.activities.append({"id": f"{stamp}::{exec_id}", "activity_type": "FILL",
                                        "transaction_time": now,
                                        "type": "fill" if r.status is OrderStatus.FILLED else "partial_fill",
                                        "price": repr(f.price), "qty": repr(f.qty), "side": o["side"],
                                        "symbol": o["symbol"],
                                        "leaves_qty": repr(self.qtys[o["client_order_id"]] - r.filled_qty),
                                        "order_id": o["id"], "cum_qty": repr(r.filled_qty),
                                        "order_status": "filled" if r.status is OrderStatus.FILLED else
                                        "partially_filled"})
                event = "fill" if r.status is OrderStatus.FILLED else "partial_fill"
                o["status"] = "filled" if r.status is OrderStatus.FILLED else "partially_filled"
                if o["status"] == "filled":
                    o["filled_at"] = now
                extra = {"execution_id": exec_id, "price": repr(f.price), "qty": repr(f.qty),
                         "position_qty": repr(self.positions[o["symbol"]])}
            elif r.status is OrderStatus.CANCELED:
                event = o["status"] = "canceled" if r.reason != IOC_REMAINDER else "canceled"
                o["canceled_at"] = now
            elif r.status is OrderStatus.REJECTED:
                event = o["status"] = "rejected"
            elif r.status is OrderStatus.NEW:
                event, o["status"] = "new", "new"
            self._emit({"event": event, "timestamp": now, "order": dict(o), **extra})

    def _emit(self, data: dict[str, Any]) -> None:
        raw = json.dumps({"stream": "trade_updates", "data": data})
        for ws in list(self.sockets):
            asyncio.ensure_future(_send(ws, raw))

    async def new_order(self, request: web.Request) -> web.Response:
        err, headers = self._guard(request)
        if err is not None:
            return err
        try:
            b = await request.json()
        except (ValueError, json.JSONDecodeError):
            return web.json_response({"code": 40010000, "message": "invalid body"}, status=400, headers=headers)
        sym = b.get("symbol", "")
        if sym not in self.exchange.markets:
            return web.json_response({"code": 42210000, "message": f"asset {sym} not found"}, status=422,
                                     headers=headers)
        coid = b.get("client_order_id") or str(uuid.uuid4())
        if coid in self.orders:
            return web.json_response({"code": 40010001, "message": "client_order_id must be unique"}, status=422,
                                     headers=headers)
        book = self._book(sym)
        otype = OrderType.LIMIT if b.get("type") == "limit" else OrderType.MARKET
        has_qty, has_notional = b.get("qty") not in (None, ""), b.get("notional") not in (None, "")
        if has_qty == has_notional:
            return web.json_response({"code": 40010001, "message": "qty or notional is required, not both"},
                                     status=400 if has_qty else 422, headers=headers)
        tif = b.get("time_in_force", "gtc")
        if has_notional:
            if otype is not OrderType.MARKET:
                return web.json_response({"code": 42210000, "message": "notional orders must be market orders"},
                                         status=422, headers=headers)
            if "/" not in sym and tif != "day":
                return web.json_response({"code": 42210000, "message": "fractional orders must be DAY orders"},
                                         status=422, headers=headers)
        try:
            price = float(b["limit_price"]) if otype is OrderType.LIMIT else None
            amount = float(b["qty"] if has_qty else b["notional"])
        except (KeyError, TypeError, ValueError):
            return web.json_response({"code": 40010001, "message": "invalid qty, notional or limit_price"},
                                     status=422, headers=headers)
        ref = price or (book.best_ask if b.get("side") == "buy" else book.best_bid) or 0.0
        qty = _amount(amount if has_qty else self._qty_for_notional(book, b.get("side", ""), amount))
        if qty <= 0:
            return web.json_response({"code": 40010001, "message": "qty or notional is required"}, status=422,
                                     headers=headers)
        if b.get("side") == "buy" and qty * ref > self.cash:
            return web.json_response({"code": 40310000, "message": "insufficient buying power"}, status=403,
                                     headers=headers)
        oid = str(uuid.uuid4())
        now = _iso()
        o = {"id": oid, "client_order_id": coid, "created_at": now, "updated_at": now, "submitted_at": now,
             "filled_at": None, "canceled_at": None, "asset_class": "crypto" if "/" in sym else "us_equity",
             "symbol": sym, "qty": None if has_notional else repr(qty), "notional": b.get("notional"),
             "filled_qty": "0", "filled_avg_price": None, "order_type": b.get("type"),
             "type": b.get("type"), "side": b.get("side"), "time_in_force": tif,
             "limit_price": b.get("limit_price"), "status": "accepted"}
        self.orders[coid] = o
        self.qtys[coid] = qty
        self.by_id[oid] = coid
        self.counts["new_orders"] += 1
        order = Order(client_order_id=coid, strategy="sim", venue="alpaca", symbol=sym,
                      side=Side.BUY if b.get("side") == "buy" else Side.SELL, qty=qty, order_type=otype, price=price,
                      tif=TimeInForce.IOC if tif in ("ioc", "fok") else TimeInForce.GTC)
        self.venue.on_book(book)
        self._process(self.venue.submit(order))
        if self.faults.new_5xx > 0:
            self.faults.new_5xx -= 1
            return web.json_response({"message": "internal server error"}, status=500, headers=headers)
        if self.faults.accept_then_429 > 0:
            self.faults.accept_then_429 -= 1
            return self._too_many(headers)
        return web.json_response(o, headers=headers)

    @staticmethod
    def _qty_for_notional(book: BookUpdate, side: str, notional: float) -> float:
        """What `notional` dollars buy (sell) walking the book, as the venue's market order would."""
        left, qty = notional, 0.0
        for price, size in (book.asks if side == "buy" else book.bids):
            take = min(size, left / price)
            qty += take
            left -= take * price
            if left <= 1e-9:
                break
        return qty

    async def get_by_id(self, request: web.Request) -> web.Response:
        err, headers = self._guard(request)
        if err is not None:
            return err
        self.counts["queries"] += 1
        coid = self.by_id.get(request.match_info["order_id"])
        if coid is None:
            return web.json_response({"code": 40410000, "message": "order not found"}, status=404, headers=headers)
        return web.json_response(self.orders[coid], headers=headers)

    async def get_by_client_id(self, request: web.Request) -> web.Response:
        err, headers = self._guard(request)
        if err is not None:
            return err
        self.counts["queries"] += 1
        o = self.orders.get(request.query.get("client_order_id", ""))
        if o is None:
            return web.json_response({"code": 40410000, "message": "order not found"}, status=404, headers=headers)
        return web.json_response(o, headers=headers)

    async def list_orders(self, request: web.Request) -> web.Response:
        err, headers = self._guard(request)
        if err is not None:
            return err
        open_ = request.query.get("status", "open") == "open"
        return web.json_response([o for o in self.orders.values() if not open_ or o["status"] in
                                  ("new", "accepted", "partially_filled")], headers=headers)

    async def cancel(self, request: web.Request) -> web.Response:
        err, headers = self._guard(request)
        if err is not None:
            return err
        coid = self.by_id.get(request.match_info["order_id"])
        if coid is None:
            return web.json_response({"code": 40410000, "message": "order not found"}, status=404, headers=headers)
        if self.orders[coid]["status"] not in ("new", "accepted", "partially_filled"):
            return web.json_response({"code": 42210000, "message": f"order is already in \"{self.orders[coid]['status']}\" "
                                      "state"}, status=422, headers=headers)
        self._process(self.venue.cancel(coid))
        return web.Response(status=204, headers=headers)

    async def activities_fill(self, request: web.Request) -> web.Response:
        err, headers = self._guard(request)
        if err is not None:
            return err
        q = request.query
        try:
            after = _parse_iso(q["after"]) if q.get("after") else None
            size = min(int(q.get("page_size", "100")), 100)
        except ValueError:
            return web.json_response({"code": 40010001, "message": "invalid after or page_size"}, status=422,
                                     headers=headers)
        out = [a for a in self.activities if after is None or _parse_iso(a["transaction_time"]) > after]
        if q.get("direction", "desc") == "desc":
            out.reverse()
        token = q.get("page_token")
        if token:
            ids = [a["id"] for a in out]
            out = out[ids.index(token) + 1:] if token in ids else []
        return web.json_response(out[:size], headers=headers)

    async def account(self, request: web.Request) -> web.Response:
        err, headers = self._guard(request)
        if err is not None:
            return err
        return web.json_response({"id": "sim-account", "status": "ACTIVE", "currency": "USD", "cash": repr(self.cash),
                                  "buying_power": repr(self.cash), "equity": repr(self.cash)}, headers=headers)

    async def positions_(self, request: web.Request) -> web.Response:
        err, headers = self._guard(request)
        if err is not None:
            return err
        return web.json_response([{"symbol": s, "qty": repr(q), "side": "long" if q >= 0 else "short"}
                                  for s, q in self.positions.items() if q], headers=headers)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if time.monotonic() < self.faults.stream_down_until:
            return web.Response(status=503, text="trade_updates unavailable")
        ws = web.WebSocketResponse(heartbeat=self.exchange.ping_interval_s)
        await ws.prepare(request)
        authed = False
        try:
            async for msg in ws:
                try:
                    m = json.loads(msg.data)
                except (TypeError, ValueError):
                    continue
                if m.get("action") == "auth":
                    authed = self.keys.get(m.get("key", "")) == m.get("secret")
                    self.counts["stream_auths"] += int(authed)
                    await ws.send_str(json.dumps({"stream": "authorization", "data": {
                        "status": "authorized" if authed else "unauthorized", "action": "authenticate"}}))
                    if not authed:
                        break
                elif m.get("action") == "listen" and authed:
                    streams = [s for s in m.get("data", {}).get("streams", []) if s == "trade_updates"]
                    if streams:
                        self.sockets.add(ws)
                    await ws.send_str(json.dumps({"stream": "listening", "data": {"streams": streams}}))
        finally:
            self.sockets.discard(ws)
        return ws

    async def disconnect_streams(self, down_s: float = 0.0) -> int:
        """Close every trade_updates socket; refuse reconnects for `down_s` (events meanwhile are lost)."""
        self.faults.stream_down_until = time.monotonic() + down_s
        n = 0
        for ws in list(self.sockets):
            n += 1
            await ws.close()
        return n

    def force_fill(self, client_order_id: str, qty: float) -> None:
        """Trade `qty` of a resting order at its limit price now (a fill that happens while nobody listens)."""
        from cluster.messages import Fill, Liquidity

        resting = self.venue._resting[client_order_id]
        self.venue._trades += 1
        fill = Fill(client_order_id=client_order_id, trade_id=f"A-{self.venue._trades}", strategy="sim",
                    venue="alpaca", symbol=resting.symbol, side=resting.side, price=resting.price or 0.0, qty=qty,
                    liquidity=Liquidity.MAKER)
        moved = self.venue.sm.apply_fill(resting, fill)
        if moved.status.is_terminal:
            del self.venue._resting[client_order_id]
        else:
            self.venue._resting[client_order_id] = moved
        self._process([ExecutionReport(client_order_id=client_order_id, strategy="sim", venue="alpaca",
                                       symbol=resting.symbol, status=moved.status, side=resting.side,
                                       order_qty=resting.qty, filled_qty=moved.filled_qty, price=resting.price,
                                       fill=fill)])


def _f(x: Any) -> float:
    return float(x) if x not in (None, "") else 0.0


async def _send(ws: web.WebSocketResponse, raw: str) -> None:
    with contextlib.suppress(Exception):
        await ws.send_str(raw)


ALPACA_TRADING = web.AppKey("alpaca_trading", AlpacaTradingSim)


def register(app: web.Application, exchange: SimExchange) -> None:
    sim = AlpacaTradingSim(exchange)
    app[ALPACA_TRADING] = sim
    r = app.router
    r.add_post("/v2/orders", sim.new_order)
    r.add_get("/v2/orders", sim.list_orders)
    r.add_get("/v2/orders:by_client_order_id", sim.get_by_client_id)
    r.add_get("/v2/orders/{order_id}", sim.get_by_id)
    r.add_delete("/v2/orders/{order_id}", sim.cancel)
    r.add_get("/v2/account", sim.account)
    r.add_get("/v2/positions", sim.positions_)
    r.add_get("/v2/account/activities/FILL", sim.activities_fill)
    if not any(getattr(res, "canonical", "") == "/stream" for res in r.resources()):
        r.add_get("/stream", sim.stream)
    else:
        @web.middleware
        async def trade_stream(request: web.Request, handler: Any) -> web.StreamResponse:
            """`/stream` without `streams=` is Alpaca's trading stream; with it, Binance's combined market stream."""
            if request.path == "/stream" and "streams" not in request.query:
                return await sim.stream(request)
            return await handler(request)

        app.middlewares.append(trade_stream)



