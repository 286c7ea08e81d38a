"""Binance spot order entry on the venue simulator: signed REST and the user data stream.

Requests are authenticated exactly as the venue does: the `X-MBX-APIKEY` header
names the account, the signature is checked over the query string concatenated
with the body (signature removed), HMAC-SHA256 hex or Ed25519 base64, and
`timestamp` must fall within `recvWindow` of the venue's clock. Orders match
with `gateways.paper.PaperVenue` against each symbol's current simulated book,
are kept by clientOrderId, and produce `executionReport` events with trade ids
for the account's user data stream: on the WebSocket API (`/ws-api/v3`, after a
signed `userDataStream.subscribe.signature`, each event as
`{"subscriptionId": N, "event": {...}}`, as Binance serves it since listen keys
were discontinued) and, for older clients, on `/ws/<listenKey>` (served by a
middleware, since `/ws/{stream}` belongs to the market-data module).

A MARKET order may give `quoteOrderQty` instead of `quantity`: the venue walks
the book to spend (receive) that much quote asset and rounds the quantity down
to the lot step, as Binance does. `myTrades` takes `startTime`, `endTime`,
`fromId`, `orderId` and `limit` (at most 1000).

Deterministic fault hooks for tests and the bench live in `BinanceFaults`
(`app[BINANCE_TRADING].faults`, or `POST /sim/binance/faults` with JSON): 429
with `Retry-After`, a 418 ban during which every signed request is refused,
an order placed but answered 429 (`accept_then_429`), no answer, 5xx, fills
racing cancels, and user-stream outages.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from aiohttp import WSMsgType, web

from cluster.messages import BookUpdate, ExecutionReport, Order, OrderStatus, OrderType, Side, TimeInForce
from gateways.binance.filters import ExchangeFilters, FilterRejected, fmt_decimal
from gateways.binance.signing import param_text, payload_of, verify_ed25519, verify_hmac
from gateways.paper import IOC_REMAINDER, PaperVenue
from gateways.venue_sim.exchange import SimExchange

SIM_API_KEY = "sim-binance-api-key"
SIM_API_SECRET = "sim-binance-api-secret-0123456789abcdef"
"""The account every simulator has; tests and the bench sign with it (add more with `add_account`)."""

FEE_BPS = 10.0
START_QUOTE = 1_000_000.0
START_BASE = 100.0
MAX_RECV_WINDOW_MS = 60_000


@dataclass
class BinanceFaults:
    """Counts of the next requests to fault; each fault decrements its count."""

    drop_new_response: int = 0  # accept a new order, then answer nothing for `drop_hold_s`
    drop_hold_s: float = 5.0
    new_5xx: int = 0  # accept a new order, then answer 500 (status unknown)
    next_429: int = 0  # refuse the next signed requests with 429 + Retry-After
    next_418: int = 0  # ... with 418 (banned) + Retry-After; every request is refused until the ban ends
    retry_after_s: int = 1
    accept_then_429: int = 0  # place the next new orders, then answer 429 (a retry must not place it twice)
    banned_until: float = 0.0  # monotonic; set by a 418
    fill_before_cancel: int = 0  # a fill races the next cancels: fill the order fully before it is canceled
    partial_fill_before_cancel: int = 0  # fill half of the order, then cancel the rest
    user_stream_down_s: float = 0.0  # refuse user-stream connections until then (monotonic, set by disconnect)

    def take(self, name: str) -> bool:
        n = getattr(self, name)
        if n > 0:
            setattr(self, name, n - 1)
            return True
        return False


@dataclass
class SimOrder:
    order: Order
    order_id: int
    otype: str
    tif: str
    created_ms: int
    updated_ms: int
    status: str = "NEW"
    quote_qty: float = 0.0
    quote_order_qty: float = 0.0  # what a quoteOrderQty MARKET order asked to spend (or receive)


@dataclass
class Account:
    api_key: str
    secret: str = ""
    public_key_pem: bytes = b""
    balances: dict[str, float] = field(default_factory=dict)
    listen_keys: set[str] = field(default_factory=set)


def _err(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)


def _num(x: float) -> str:
    return format(Decimal(repr(x)).quantize(Decimal("0.00000001")), "f")


class BinanceTradingSim:
    def __init__(self, exchange: SimExchange) -> None:
        from gateways.venue_sim.binance_market import exchange_info

        self.exchange = exchange
        self.filters = ExchangeFilters(exchange_info(exchange, list(exchange.symbols)))
        self.venue = PaperVenue(FEE_BPS, FEE_BPS, trade_id_prefix="T")
        self.faults = BinanceFaults()
        self.accounts: dict[str, Account] = {}
        self.add_account(SIM_API_KEY, SIM_API_SECRET)
        self.orders: dict[str, SimOrder] = {}
        self.order_owner: dict[str, str] = {}
        self.trades: list[dict[str, Any]] = []
        self.next_order_id = 1
        self.listen_keys: dict[str, str] = {}  # listen key -> api key
        self.sockets: dict[str, set[web.WebSocketResponse]] = {}
        # api key -> {WebSocket API connection: its subscription id}
        self.subscriptions: dict[str, dict[web.WebSocketResponse, int]] = {}
        self.next_subscription_id = 0
        self.counts = {"new_orders": 0, "cancels": 0, "queries": 0, "bad_signatures": 0, "events": 0,
                       "requests": 0, "refused_429": 0, "refused_418": 0}
        self.weight: dict[int, int] = {}
        self.order_recv_ns: list[int] = []
        exchange.add_listener(self._on_tick)

    def add_account(self, api_key: str, secret: str = "", public_key_pem: bytes = b"") -> Account:
        acct = Account(api_key, secret, public_key_pem)
        acct.balances = {"USDT": START_QUOTE, **{self.filters.symbols[s].base_asset: START_BASE
                                                 for s in self.filters.symbols}}
        self.accounts[api_key] = acct
        return acct

    # -- auth -----------------------------------------------------------------------------------------
    async def _auth(self, request: web.Request, signed: bool = True
                    ) -> tuple[Account | None, dict[str, str], web.Response | None, dict[str, str]]:
        import time

        self.counts["requests"] += 1
        minute = int(time.time() // 60)
        used = self.weight.get(minute, 0) + 1
        self.weight = {minute: used}
        headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
        banned_for = self.faults.banned_until - time.monotonic()
        if self.faults.take("next_418") or banned_for > 0:
            self.counts["refused_418"] += 1
            if banned_for <= 0:
                self.faults.banned_until = time.monotonic() + self.faults.retry_after_s
                banned_for = float(self.faults.retry_after_s)
            return None, {}, _err(418, -1003, "Way too much request weight used; IP banned until later.",
                                  {**headers, "Retry-After": str(max(int(banned_for + 0.999), 1))}), headers
        if self.faults.take("next_429"):
            self.counts["refused_429"] += 1
            return None, {}, _err(429, -1003, "Too much request weight used; please use WebSocket Streams.",
                                  {**headers, "Retry-After": str(self.faults.retry_after_s)}), headers
        acct = self.accounts.get(request.headers.get("X-MBX-APIKEY", ""))
        if acct is None:
            return None, {}, _err(401, -2015, "Invalid API-key, IP, or permissions for action.", headers), headers
        body = await request.text() if request.can_read_body else ""
        params = dict(parse_qsl(request.query_string, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        if not signed:
            return acct, params, None, headers
        for name in ("timestamp", "signature"):
            if not params.get(name):
                return None, {}, _err(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
                                      "or malformed.", headers), headers
        payload, sig = payload_of(request.query_string, body)
        ok = verify_ed25519(acct.public_key_pem, payload, sig) if acct.public_key_pem else \
            verify_hmac(acct.secret, payload, sig)
        if not ok:
            self.counts["bad_signatures"] += 1
            return None, {}, _err(400, -1022, "Signature for this request is not valid.", headers), headers
        try:
            ts, window = int(params["timestamp"]), int(params.get("recvWindow", "5000"))
        except ValueError:
            return None, {}, _err(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, "
                                  "or malformed.", headers), headers
        if window > MAX_RECV_WINDOW_MS:
            return None, {}, _err(400, -1131, "recvWindow must be less than 60000", headers), headers
        now = self.exchange.now_ms()
        if ts >= now + 1000:
            return None, {}, _err(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.",
                                  headers), headers
        if now - ts > window:
            return None, {}, _err(400, -1021, "Timestamp for this request is outside of the recvWindow.",
                                  headers), headers
        return acct, params, None, headers

    # -- matching --------------------------------------------------------------------------------------
    def _book(self, symbol: str) -> BookUpdate:
        m = self.exchange.markets[symbol]
        bids, asks = m.book_levels()
        return BookUpdate(venue="binance", symbol=symbol, seq=m.update_id, bids=bids, asks=asks)

    def _on_tick(self, symbol: str, msgs: list[bytes]) -> None:
        if any(o.symbol == symbol for o in self.venue.open_orders()):
            self._process(self.venue.on_book(self._book(symbol)))

    def _process(self, reports: list[ExecutionReport]) -> list[dict[str, Any]]:
        """Apply the matcher's reports to the sim's orders, balances and trades; emit events; return fills."""
        fills = []
        for r in reports:
            so = self.orders.get(r.client_order_id)
            if so is None:
                continue
            now = self.exchange.now_ms()
            so.updated_ms = now
            so.order = msgspec.structs.replace(so.order, status=r.status, filled_qty=r.filled_qty)
            x = "NEW"
            if r.fill is not None:
                f = r.fill
                tid = int(f.trade_id.rsplit("-", 1)[1])
                so.quote_qty += f.price * f.qty
                sym = self.filters.symbols[so.order.symbol]
                acct = self.accounts[self.order_owner[r.client_order_id]]
                sign = 1 if f.side is Side.BUY else -1
                acct.balances[sym.base_asset] = acct.balances.get(sym.base_asset, 0.0) + sign * f.qty
                acct.balances[sym.quote_asset] = acct.balances.get(sym.quote_asset, 0.0) - sign * f.price * f.qty - f.fee
                trade = {"symbol": so.order.symbol, "id": tid, "orderId": so.order_id, "orderListId": -1,
                         "price": _num(f.price), "qty": _num(f.qty), "quoteQty": _num(f.price * f.qty),
                         "commission": _num(f.fee), "commissionAsset": sym.quote_asset, "time": now,
                         "isBuyer": f.side is Side.BUY, "isMaker": f.liquidity.value == "maker", "isBestMatch": True}
                self.trades.append(trade)
                fills.append({"price": trade["price"], "qty": trade["qty"], "commission": trade["commission"],
                              "commissionAsset": sym.quote_asset, "tradeId": tid})
                x = "TRADE"
                so.status = "FILLED" if r.status is OrderStatus.FILLED else "PARTIALLY_FILLED"
            elif r.status is OrderStatus.CANCELED and r.reason == IOC_REMAINDER:
                x = so.status = "EXPIRED"
            elif r.status is OrderStatus.CANCELED:
                x = so.status = "CANCELED"
            elif r.status is OrderStatus.REJECTED:
                x = so.status = "REJECTED"
            elif r.status is OrderStatus.NEW:
                x = so.status = "NEW"
            self._emit(so, x, r)
        return fills

    def _emit(self, so: SimOrder, x: str, r: ExecutionReport, cancel_id: str = "") -> None:
        o = so.order
        f = r.fill
        ev = {"e": "executionReport", "E": self.exchange.now_ms(), "s": o.symbol,
              "c": cancel_id or o.client_order_id, "S": o.side.value.upper(), "o": so.otype, "f": so.tif,
              "q": _num(o.qty), "p": _num(o.price or 0.0), "P": "0.00000000", "F": "0.00000000", "g": -1,
              "C": o.client_order_id if cancel_id else "", "x": x, "X": so.status, "r": "NONE", "i": so.order_id,
              "l": _num(f.qty if f else 0.0), "z": _num(o.filled_qty), "L": _num(f.price if f else 0.0),
              "n": _num(f.fee if f else 0.0), "N": self.filters.symbols[o.symbol].quote_asset if f else None,
              "T": so.updated_ms, "t": int(f.trade_id.rsplit("-", 1)[1]) if f else -1, "I": 0, "w": so.status == "NEW",
              "m": bool(f and f.liquidity.value == "maker"), "M": False, "O": so.created_ms,
              "Z": _num(so.quote_qty), "Y": _num(f.price * f.qty if f else 0.0), "Q": "0.00000000"}
        data = msgspec.json.encode(ev).decode()
        owner = self.order_owner.get(o.client_order_id, SIM_API_KEY)
        for lk in self.accounts[owner].listen_keys:
            for ws in list(self.sockets.get(lk, ())):
                self.counts["events"] += 1
                asyncio.ensure_future(self._send(ws, data))
        for ws, sub in list(self.subscriptions.get(owner, {}).items()):
            self.counts["events"] += 1
            asyncio.ensure_future(self._send(ws, f'{{"subscriptionId":{sub},"event":{data}}}'))

    @staticmethod
    async def _send(ws: web.WebSocketResponse, data: str) -> None:
        with contextlib.suppress(Exception):
            await ws.send_str(data)

    def _order_json(self, so: SimOrder, full: bool = False) -> dict[str, Any]:
        o = so.order
        out = {"symbol": o.symbol, "orderId": so.order_id, "orderListId": -1, "clientOrderId": o.client_order_id,
               "price": _num(o.price or 0.0), "origQty": _num(o.qty), "executedQty": _num(o.filled_qty),
               "cummulativeQuoteQty": _num(so.quote_qty), "status": so.status, "timeInForce": so.tif,
               "type": so.otype, "side": o.side.value.upper()}
        if full:
            out["transactTime"] = so.created_ms
        else:
            out.update({"stopPrice": "0.00000000", "icebergQty": "0.00000000", "time": so.created_ms,
                        "updateTime": so.updated_ms, "isWorking": so.status in ("NEW", "PARTIALLY_FILLED"),
                        "origQuoteOrderQty": _num(so.quote_order_qty)})
        return out

    # -- REST handlers -------------------------------------------------------------------------------------
    async def new_order(self, request: web.Request) -> web.Response:
        import time

        recv_ns = time.perf_counter_ns()
        acct, p, err, headers = await self._auth(request)
        if err is not None:
            return err
        assert acct is not None
        self.order_recv_ns.append(recv_ns)
        sym = p.get("symbol", "")
        if sym not in self.filters.symbols:
            return _err(400, -1121, "Invalid symbol.", headers)
        side, otype = p.get("side", ""), p.get("type", "")
        if side not in ("BUY", "SELL") or otype not in ("LIMIT", "MARKET"):
            return _err(400, -1116 if otype not in ("LIMIT", "MARKET") else -1117,
                        "Invalid orderType." if otype not in ("LIMIT", "MARKET") else "Invalid side.", headers)
        coid = p.get("newClientOrderId") or f"sim-{secrets.token_hex(8)}"
        existing = self.orders.get(coid)
        if existing is not None and existing.status in ("NEW", "PARTIALLY_FILLED"):
            return _err(400, -2010, "Duplicate order sent.", headers)
        book = self._book(sym)
        quote_order_qty = 0.0
        if "quoteOrderQty" in p:
            if otype != "MARKET" or "quantity" in p:
                return _err(400, -1106, "Parameter 'quoteOrderQty' sent when not required.", headers)
            try:
                quote_order_qty = float(p["quoteOrderQty"])
                self.filters.get(sym).prepare_quote(quote_order_qty)
            except ValueError:
                return _err(400, -1100, "Illegal characters found in parameter 'quoteOrderQty'.", headers)
            except FilterRejected as exc:
                return _err(400, -1013, f"Filter failure: {exc.filter_type}", headers)
            p["quantity"] = fmt_decimal(self._qty_for_quote(sym, side, quote_order_qty, book))
        try:
            qty = float(p["quantity"])
            price = float(p["price"]) if otype == "LIMIT" else None
        except (KeyError, ValueError):
            return _err(400, -1102, "Mandatory parameter 'quantity' or 'price' was not sent, was empty/null, or "
                        "malformed.", headers)
        tif = p.get("timeInForce", "GTC" if otype == "LIMIT" else "")
        if otype == "LIMIT" and tif not in ("GTC", "IOC"):
            return _err(400, -1115, "Invalid timeInForce.", headers)
        try:
            q, pr = self.filters.get(sym).prepare(side, otype, qty, price, book.mid)
        except FilterRejected as exc:
            return _err(400, -1013, f"Filter failure: {exc.filter_type}", headers)
        if q != Decimal(p["quantity"]):
            return _err(400, -1013, "Filter failure: LOT_SIZE", headers)
        if pr is not None and pr != Decimal(p["price"]):
            return _err(400, -1013, "Filter failure: PRICE_FILTER", headers)
        fs = self.filters.symbols[sym]
        ref = price if price is not None else (book.best_ask if side == "BUY" else book.best_bid) or 0.0
        need_asset, need = (fs.quote_asset, qty * ref * (1 + FEE_BPS / 1e4)) if side == "BUY" else (fs.base_asset, qty)
        if acct.balances.get(need_asset, 0.0) < need:
            return _err(400, -2010, "Account has insufficient balance for requested action.", headers)
        now = self.exchange.now_ms()
        order = Order(client_order_id=coid, strategy="sim", venue="binance", symbol=sym,
                      side=Side.BUY if side == "BUY" else Side.SELL, qty=qty,
                      order_type=OrderType.LIMIT if otype == "LIMIT" else OrderType.MARKET, price=price,
                      tif=TimeInForce.IOC if tif == "IOC" else TimeInForce.GTC)
        so = SimOrder(order, self.next_order_id, otype, tif or "GTC", now, now, quote_order_qty=quote_order_qty)
        self.next_order_id += 1
        self.orders[coid] = so
        self.order_owner[coid] = acct.api_key
        self.counts["new_orders"] += 1
        self.venue.on_book(book)
        fills = self._process(self.venue.submit(order))
        if self.faults.take("drop_new_response"):
            await asyncio.sleep(self.faults.drop_hold_s)
        if self.faults.take("new_5xx"):
            return _err(500, -1000, "An unknown error occurred while processing the request.", headers)
        if self.faults.take("accept_then_429"):
            self.counts["refused_429"] += 1
            return _err(429, -1003, "Too much request weight used; please use WebSocket Streams.",
                        {**headers, "Retry-After": str(self.faults.retry_after_s)})
        resp_type = p.get("newOrderRespType", "FULL" if otype == "MARKET" else "RESULT")
        if resp_type == "ACK":
            body: dict[str, Any] = {"symbol": sym, "orderId": so.order_id, "orderListId": -1, "clientOrderId": coid,
                                    "transactTime": now}
        else:
            body = self._order_json(so, full=True)
            if resp_type == "FULL":
                body["fills"] = fills
        return web.json_response(body, headers=headers)

    def _find(self, p: dict[str, str]) -> SimOrder | None:
        coid = p.get("origClientOrderId")
        if coid:
            so = self.orders.get(coid)
        else:
            so = next((s for s in self.orders.values() if str(s.order_id) == p.get("orderId")), None)
        return so if so is not None and so.order.symbol == p.get("symbol") else None

    async def cancel_order(self, request: web.Request) -> web.Response:
        acct, p, err, headers = await self._auth(request)
        if err is not None:
            return err
        self.counts["cancels"] += 1
        so = self._find(p)
        if so is not None and so.status in ("NEW", "PARTIALLY_FILLED"):
            if self.faults.take("fill_before_cancel"):
                self._force_fill(so, so.order.remaining)
            elif self.faults.take("partial_fill_before_cancel"):
                self._force_fill(so, so.order.remaining / 2)
        if so is None or so.status not in ("NEW", "PARTIALLY_FILLED"):
            return _err(400, -2011, "Unknown order sent.", headers)
        reports = self.venue.cancel(so.order.client_order_id)
        so.status = "CANCELED"
        so.updated_ms = self.exchange.now_ms()
        cancel_id = p.get("newClientOrderId") or f"cancel-{secrets.token_hex(6)}"
        self._emit(so, "CANCELED", reports[0], cancel_id=cancel_id)
        body = self._order_json(so)
        body.update({"origClientOrderId": so.order.client_order_id, "clientOrderId": cancel_id,
                     "transactTime": so.updated_ms})
        return web.json_response(body, headers=headers)

    def _qty_for_quote(self, symbol: str, side: str, quote: float, book: BookUpdate) -> Decimal:
        """The quantity a quoteOrderQty MARKET order executes: walk the book until `quote` is spent
        (received), rounded down to the lot step, as the venue does (LOT_SIZE is never broken)."""
        levels = book.asks if side == "BUY" else book.bids
        left, qty = quote, 0.0
        for price, size in levels:
            take = min(size, left / price)
            qty += take
            left -= take * price
            if left <= 1e-12:
                break
        step = self.filters.symbols[symbol].step_size
        return (Decimal(repr(qty)) / step).to_integral_value(rounding=ROUND_FLOOR) * step if step > 0 else \
            Decimal(repr(qty))

    def force_fill(self, client_order_id: str, qty: float) -> None:
        """Trade `qty` of a resting order at its price now (a fill that happens while nobody listens)."""
        self._force_fill(self.orders[client_order_id], qty)

    def _force_fill(self, so: SimOrder, qty: float) -> None:
        """A fill that got to the matcher first: trade `qty` at the order's price."""
        from cluster.messages import Fill, Liquidity

        self.venue._trades += 1
        o = so.order
        fill = Fill(client_order_id=o.client_order_id, trade_id=f"T-{self.venue._trades}", strategy="sim",
                    venue="binance", symbol=o.symbol, side=o.side, price=o.price or 0.0, qty=qty,
                    fee=(o.price or 0.0) * qty * FEE_BPS / 1e4, liquidity=Liquidity.MAKER)
        resting = self.venue._resting[o.client_order_id]
        moved = self.venue.sm.apply_fill(resting, fill)
        if moved.status.is_terminal:
            del self.venue._resting[o.client_order_id]
        else:
            self.venue._resting[o.client_order_id] = moved
        self._process([ExecutionReport(client_order_id=o.client_order_id, strategy="sim", venue="binance",
                                       symbol=o.symbol, status=moved.status, side=o.side, order_qty=o.qty,
                                       filled_qty=moved.filled_qty, price=o.price, fill=fill)])

    async def query_order(self, request: web.Request) -> web.Response:
        acct, p, err, headers = await self._auth(request)
        if err is not None:
            return err
        self.counts["queries"] += 1
        so = self._find(p)
        if so is None:
            return _err(400, -2013, "Order does not exist.", headers)
        return web.json_response(self._order_json(so), headers=headers)

    async def open_orders(self, request: web.Request) -> web.Response:
        acct, p, err, headers = await self._auth(request)
        if err is not None:
            return err
        sym = p.get("symbol")
        return web.json_response([self._order_json(s) for s in self.orders.values()
                                  if s.status in ("NEW", "PARTIALLY_FILLED") and (not sym or s.order.symbol == sym)
                                  and acct is not None and self.order_owner[s.order.client_order_id] == acct.api_key],
                                 headers=headers)

    async def account(self, request: web.Request) -> web.Response:
        acct, p, err, headers = await self._auth(request)
        if err is not None:
            return err
        assert acct is not None
        bal = [{"asset": a, "free": _num(v), "locked": "0.00000000"} for a, v in sorted(acct.balances.items())]
        return web.json_response({"makerCommission": 10, "takerCommission": 10, "canTrade": True,
                                  "canWithdraw": False, "canDeposit": False, "updateTime": self.exchange.now_ms(),
                                  "accountType": "SPOT", "balances": bal, "permissions": ["SPOT"]}, headers=headers)

    async def my_trades(self, request: web.Request) -> web.Response:
        acct, p, err, headers = await self._auth(request)
        if err is not None:
            return err
        sym = p.get("symbol")
        if not sym:
            return _err(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.", headers)
        out = [t for t in self.trades if t["symbol"] == sym]
        if "orderId" in p:
            out = [t for t in out if str(t["orderId"]) == p["orderId"]]
        if "startTime" in p:
            out = [t for t in out if t["time"] >= int(p["startTime"])]
        if "endTime" in p:
            out = [t for t in out if t["time"] <= int(p["endTime"])]
        if "fromId" in p:
            out = [t for t in out if t["id"] >= int(p["fromId"])]
        return web.json_response(out[: min(int(p.get("limit", "500")), 1000)], headers=headers)

    async def avg_price(self, request: web.Request) -> web.Response:
        sym = request.query.get("symbol", "")
        if sym not in self.exchange.markets:
            return _err(400, -1121, "Invalid symbol.")
        mid = self._book(sym).mid or 0.0
        return web.json_response({"mins": 5, "price": _num(mid), "closeTime": self.exchange.now_ms()})

    # -- user data stream ------------------------------------------------------------------------------------
    async def listen_key(self, request: web.Request) -> web.Response:
        acct, p, err, headers = await self._auth(request, signed=False)
        if err is not None:
            return err
        assert acct is not None
        if request.method == "POST":
            key = next(iter(acct.listen_keys), "") or secrets.token_urlsafe(45)[:60]
            acct.listen_keys.add(key)
            self.listen_keys[key] = acct.api_key
            return web.json_response({"listenKey": key}, headers=headers)
        key = p.get("listenKey", "")
        if key not in acct.listen_keys:
            return _err(400, -1125, "This listenKey does not exist.", headers)
        if request.method == "DELETE":
            acct.listen_keys.discard(key)
            self.listen_keys.pop(key, None)
            for ws in list(self.sockets.pop(key, ())):
                await ws.close()
        return web.json_response({}, headers=headers)

    async def user_ws(self, request: web.Request, key: str) -> web.StreamResponse:
        import time

        if time.monotonic() < self.faults.user_stream_down_s:
            return web.Response(status=503, text="user stream unavailable")
        ws = web.WebSocketResponse(heartbeat=self.exchange.ping_interval_s)
        await ws.prepare(request)
        self.sockets.setdefault(key, set()).add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            self.sockets.get(key, set()).discard(ws)
        return ws

    async def ws_api(self, request: web.Request) -> web.StreamResponse:
        """The WebSocket API, as far as the user data stream needs it: `userDataStream.subscribe.signature`
        (checked like a signed REST request: key, signature over the sorted parameters, recvWindow),
        `userDataStream.unsubscribe`, `session.subscriptions`."""
        import time

        if time.monotonic() < self.faults.user_stream_down_s:
            return web.Response(status=503, text="WebSocket API unavailable")
        ws = web.WebSocketResponse(heartbeat=self.exchange.ping_interval_s)
        await ws.prepare(request)
        mine: dict[str, int] = {}  # api key -> subscription id on this connection
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(msgspec.json.encode(self._ws_api_request(ws, msg.data, mine)).decode())
        finally:
            for key in mine:
                self.subscriptions.get(key, {}).pop(ws, None)
        return ws

    def _ws_api_request(self, ws: web.WebSocketResponse, text: str, mine: dict[str, int]) -> dict[str, Any]:
        try:
            req = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return {"id": None, "status": 400, "error": {"code": -1000, "msg": "Malformed request: not JSON."}}
        if not isinstance(req, dict):
            return {"id": None, "status": 400, "error": {"code": -1000, "msg": "Malformed request."}}
        rid, method, params = req.get("id"), req.get("method"), req.get("params") or {}

        def error(status: int, code: int, msg: str) -> dict[str, Any]:
            return {"id": rid, "status": status, "error": {"code": code, "msg": msg}}

        if method == "session.subscriptions":
            return {"id": rid, "status": 200, "result": [{"subscriptionId": i} for i in mine.values()]}
        if method == "userDataStream.unsubscribe":
            for key in list(mine):
                self.subscriptions.get(key, {}).pop(ws, None)
                mine.pop(key)
            return {"id": rid, "status": 200, "result": {}}
        if method != "userDataStream.subscribe.signature":
            return error(400, -1000, f"Unknown method {method!r}.")
        if not isinstance(params, dict):
            return error(400, -1102, "Malformed 'params'.")
        acct = self.accounts.get(str(params.get("apiKey", "")))
        if acct is None:
            return error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        for name in ("timestamp", "signature"):
            if not params.get(name):
                return error(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        payload = "&".join(f"{k}={param_text(v)}" for k, v in sorted(params.items()) if k != "signature")
        sig = str(params["signature"])
        ok = verify_ed25519(acct.public_key_pem, payload, sig) if acct.public_key_pem else \
            verify_hmac(acct.secret, payload, sig)
        if not ok:
            self.counts["bad_signatures"] += 1
            return error(400, -1022, "Signature for this request is not valid.")
        try:
            ts, window = int(params["timestamp"]), int(params.get("recvWindow", 5000))
        except (TypeError, ValueError):
            return error(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        now = self.exchange.now_ms()
        if ts >= now + 1000 or now - ts > min(window, MAX_RECV_WINDOW_MS):
            return error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        if acct.api_key in mine:
            return error(400, -2011, "This account is already subscribed on this connection.")
        sub = mine[acct.api_key] = self.next_subscription_id
        self.next_subscription_id += 1
        self.subscriptions.setdefault(acct.api_key, {})[ws] = sub
        return {"id": rid, "status": 200, "result": {"subscriptionId": sub}}

    async def disconnect_user_streams(self, down_s: float = 0.0) -> int:
        """Close every user-stream socket; refuse reconnects for `down_s` (events meanwhile are lost)."""
        import time

        self.faults.user_stream_down_s = time.monotonic() + down_s
        n = 0
        socks = [ws for group in self.sockets.values() for ws in group]
        socks += [ws for group in self.subscriptions.values() for ws in group]
        for ws in socks:
            n += 1
            await ws.close()
        return n

    async def set_faults(self, request: web.Request) -> web.Response:
        data = await request.json()
        if "disconnect_user_stream_s" in data:
            await self.disconnect_user_streams(float(data.pop("disconnect_user_stream_s")))
        for k, v in data.items():
            if not hasattr(self.faults, k):
                return web.json_response({"error": f"unknown fault {k}"}, status=400)
            setattr(self.faults, k, type(getattr(self.faults, k))(v))
        return web.json_response({"faults": self.faults.__dict__, "counts": self.counts})


BINANCE_TRADING = web.AppKey("binance_trading", BinanceTradingSim)


def register(app: web.Application, exchange: SimExchange) -> None:
    sim = BinanceTradingSim(exchange)
    app[BINANCE_TRADING] = sim
    r = app.router
    r.add_post("/api/v3/order", sim.new_order)
    r.add_delete("/api/v3/order", sim.cancel_order)
    r.add_get("/api/v3/order", sim.query_order)
    r.add_get("/api/v3/openOrders", sim.open_orders)
    r.add_get("/api/v3/account", sim.account)
    r.add_get("/api/v3/myTrades", sim.my_trades)
    r.add_post("/api/v3/userDataStream", sim.listen_key)
    r.add_put("/api/v3/userDataStream", sim.listen_key)
    r.add_delete("/api/v3/userDataStream", sim.listen_key)
    r.add_post("/sim/binance/faults", sim.set_faults)
    r.add_get("/ws-api/v3", sim.ws_api)
    if not any(getattr(res, "canonical", "") == "/api/v3/avgPrice" for res in r.resources()):
        r.add_get("/api/v3/avgPrice", sim.avg_price)

    @web.middleware
    async def user_stream_paths(request: web.Request, handler: Any) -> web.StreamResponse:
        """`/ws/<listenKey>` is the user stream; any other `/ws/...` is market data."""
        if request.path.startswith("/ws/"):
            key = request.path[4:]
            if key in sim.listen_keys:
                return await sim.user_ws(request, key)
        return await handler(request)

    app.middlewares.append(user_stream_paths)
