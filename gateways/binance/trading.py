"""Binance spot order entry: the signed REST client and the venue adapter the gateway drives.

REST (https://developers.binance.com/docs/binance-spot-api-docs/rest-api):
`POST /api/v3/order` (newClientOrderId, newOrderRespType=FULL), `DELETE /api/v3/order`
and `GET /api/v3/order` by origClientOrderId, `GET /api/v3/openOrders`,
`GET /api/v3/account`, `GET /api/v3/myTrades`. SIGNED requests carry `timestamp`
(local clock + the tracked server-time offset) and `recvWindow`, the API key in
`X-MBX-APIKEY`, and the signature last (gateways.binance.signing).

How answers map: 4xx with `{"code", "msg"}` is a definite answer (a new order
becomes REJECTED with the venue's message, except "Duplicate order sent.", which
means an earlier attempt with this client order id arrived: resolved by query);
429/418 mean the request was refused by the rate limiter before it was acted on
(`NotSent` with `retry_after_s`: the gateway may send it again after the
back-off or the ban); 5xx, a timeout or a dropped connection mean the outcome is
unknown. A notional order (`Order.notional`) is a MARKET order with
`quoteOrderQty`: the venue picks the quantity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec

from cluster.messages import BookUpdate, ExecutionReport, Fill, Liquidity, Order, OrderStatus, OrderType, Side
from gateways.binance.filters import ExchangeFilters, FilterRejected, fmt_decimal
from gateways.binance.signing import Ed25519Signer, HmacSigner, encode_params, signed_query
from gateways.rate_limit import RateLimited, RateLimiter
from gateways.secrets import Credentials
from gateways.venue_adapter import (
    DuplicateOrder,
    NotSent,
    OrderNotFound,
    VenueAdapter,
    VenueOrder,
    VenueRejected,
    VenueTimeout,
    VenueTrade,
    report,
    venue_says_filled,
)

log = logging.getLogger(__name__)

STATUS: dict[str, OrderStatus] = {
    "NEW": OrderStatus.NEW, "PENDING_NEW": OrderStatus.PENDING_NEW, "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
    "FILLED": OrderStatus.FILLED, "CANCELED": OrderStatus.CANCELED, "PENDING_CANCEL": OrderStatus.PENDING_CANCEL,
    "REJECTED": OrderStatus.REJECTED, "EXPIRED": OrderStatus.EXPIRED, "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
}
ORDER_DOES_NOT_EXIST = -2013
UNKNOWN_ORDER_SENT = -2011
NEW_ORDER_REJECTED = -2010
DUPLICATE_ORDER_MSG = "Duplicate order sent."
MY_TRADES_LIMIT = 1000
DAY_MS = 24 * 3600 * 1000
MY_TRADES_MAX_LOOKBACK_MS = 30 * DAY_MS
TIMESTAMP_OUTSIDE_RECV_WINDOW = -1021
WEIGHT_LIMIT_DEFAULT = 6000
REF_PRICE_MAX_AGE_S = 5.0


class BinanceRest:
    """One aiohttp session to one Binance REST base URL, signed requests, weight tracking."""

    def __init__(self, base_url: str, creds: Credentials | None, recv_window_ms: int = 5000, timeout_s: float = 5.0,
                 limiter: RateLimiter | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = creds.api_key if creds else ""
        self._signer: HmacSigner | Ed25519Signer | None = None
        if creds is not None:
            self._signer = Ed25519Signer(creds.private_key_pem) if creds.private_key_pem else HmacSigner(creds.api_secret)
        self.recv_window_ms = recv_window_ms
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.limiter = limiter or RateLimiter("binance", "binance", WEIGHT_LIMIT_DEFAULT)
        self.time_offset_ms = 0
        self.session: aiohttp.ClientSession | None = None
        self.last_send_ns = 0
        """When the latest request's bytes were handed to the socket (for the bench)."""

    async def start(self) -> None:
        if self.session is None:
            headers = {"X-MBX-APIKEY": self._api_key} if self._api_key else {}
            self.session = aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=64))
        await self.sync_time()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def sync_time(self) -> int:
        """Offset = server time - local time at the request's midpoint; SIGNED timestamps use it."""
        t0 = time.time() * 1000
        data = await self.request("GET", "/api/v3/time", weight=1)
        t1 = time.time() * 1000
        self.time_offset_ms = int(data["serverTime"] - (t0 + t1) / 2)
        return self.time_offset_ms

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.time_offset_ms

    def signed_ws_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """WebSocket API request parameters with `apiKey`, `recvWindow`, `timestamp` and `signature` added:
        the signature covers every parameter sorted by name as `k=v&...` (Binance's WebSocket API rule)."""
        assert self._signer is not None, "signed request without credentials"
        out = {**params, "apiKey": self._api_key, "recvWindow": self.recv_window_ms, "timestamp": self.now_ms()}
        out["signature"] = self._signer.sign(encode_params(sorted(out.items())))
        return out

    async def request(self, method: str, path: str, params: list[tuple[str, Any]] | None = None, *,
                      signed: bool = False, weight: int = 1, timeout: aiohttp.ClientTimeout | None = None) -> Any:
        assert self.session is not None, "start() first"
        try:
            self.limiter.check(weight)
        except RateLimited as exc:
            raise NotSent(str(exc), retry_after_s=exc.retry_after_s) from exc
        params = list(params or [])
        if signed:
            assert self._signer is not None, "signed request without credentials"
            params += [("recvWindow", self.recv_window_ms), ("timestamp", self.now_ms())]
            query = signed_query(params, self._signer)
        else:
            query = encode_params(params)
        url = f"{self.base_url}{path}?{query}" if query else f"{self.base_url}{path}"
        self.last_send_ns = time.perf_counter_ns()
        try:
            async with self.session.request(method, url, timeout=timeout or self.timeout) as resp:
                body = await resp.read()
                status, headers = resp.status, resp.headers
        except aiohttp.ClientConnectorError as exc:
            raise NotSent(f"cannot connect to {self.base_url}: {exc.os_error}") from None
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise VenueTimeout(f"{method} {path}: no answer ({type(exc).__name__})") from None
        self.limiter.on_response(status, headers)
        if status in (429, 418):
            limit = self.limiter.status()
            raise NotSent(f"{method} {path}: HTTP {status}, {limit.state.value} for {limit.retry_after_s:g}s",
                          retry_after_s=limit.retry_after_s)
        if status >= 500:
            raise VenueTimeout(f"{method} {path}: HTTP {status}, execution status unknown")
        try:
            data = msgspec.json.decode(body) if body else {}
        except msgspec.DecodeError:
            raise VenueTimeout(f"{method} {path}: HTTP {status} with a body that is not JSON") from None
        if status >= 400:
            code = data.get("code", status) if isinstance(data, dict) else status
            msg = data.get("msg", "") if isinstance(data, dict) else str(data)
            if code == TIMESTAMP_OUTSIDE_RECV_WINDOW:
                with contextlib.suppress(Exception):
                    await self.sync_time()
            raise VenueRejected(code, msg)
        return data


def _f(x: Any) -> float:
    return float(x) if x not in (None, "") else 0.0


def fill_from_trade(venue: str, coid: str, symbol: str, side: Side, trade_id: Any, price: Any, qty: Any,
                    commission: Any, commission_asset: str, quote_asset: str, maker: bool, ts_ms: int) -> Fill:
    """A Binance fill; the fee is converted to the quote asset when it was charged in base or quote."""
    p, q, fee = _f(price), _f(qty), _f(commission)
    if commission_asset and commission_asset != quote_asset and symbol.startswith(commission_asset):
        fee *= p
    return Fill(client_order_id=coid, trade_id=str(trade_id), strategy="", venue=venue, symbol=symbol, side=side,
                price=p, qty=q, fee=fee, liquidity=Liquidity.MAKER if maker else Liquidity.TAKER,
                ts_ns=int(ts_ms) * 1_000_000)


class BinanceAdapter(VenueAdapter):
    """Binance spot behind the gateway's VenueAdapter interface (REST here, the user stream in user_stream.py)."""

    def __init__(self, name: str, rest_url: str, ws_url: str, creds: Credentials, recv_window_ms: int = 5000,
                 timeout_s: float = 5.0, stream_url: str = "", user_stream: bool = True) -> None:
        super().__init__()
        self.name = name
        self.limiter = RateLimiter(name, "binance", WEIGHT_LIMIT_DEFAULT, on_change=lambda s: self.on_limit(s))
        self.rest = BinanceRest(rest_url, creds, recv_window_ms, timeout_s, self.limiter)
        self.ws_url = ws_url
        self.stream_url = stream_url
        self.filters: ExchangeFilters | None = None
        self.ref_prices: dict[str, tuple[float, float]] = {}
        self.not_found_grace_s = recv_window_ms / 1000.0 + 1.0  # after that the venue would refuse it (-1021)
        self.user_stream_enabled = user_stream
        self.user_stream: Any = None

    async def start(self) -> None:
        await self.rest.start()
        await self.load_filters()
        if self.user_stream_enabled:
            from gateways.binance.user_stream import BinanceUserStream

            self.user_stream = BinanceUserStream(self)
            await self.user_stream.start()

    async def close(self) -> None:
        if self.user_stream is not None:
            await self.user_stream.close()
        await self.rest.close()

    async def load_filters(self) -> ExchangeFilters:
        info = await self.rest.request("GET", "/api/v3/exchangeInfo", weight=20)
        self.filters = ExchangeFilters(info)
        for rl in self.filters.rate_limits:
            if rl.get("rateLimitType") == "REQUEST_WEIGHT" and rl.get("interval") == "MINUTE":
                self.limiter.limit = int(rl["limit"]) // max(int(rl.get("intervalNum", 1)), 1)
        return self.filters

    def quote_asset(self, symbol: str) -> str:
        f = self.filters.symbols.get(symbol) if self.filters else None
        return f.quote_asset if f else ""

    # -- reference price for PERCENT_PRICE ------------------------------------------------------------
    def on_book(self, update: BookUpdate) -> list[ExecutionReport]:
        if update.mid is not None:
            self.ref_prices[update.symbol] = (update.mid, time.monotonic())
        return []

    async def ref_price(self, symbol: str) -> float | None:
        cached = self.ref_prices.get(symbol)
        if cached and time.monotonic() - cached[1] < REF_PRICE_MAX_AGE_S:
            return cached[0]
        try:
            data = await self.rest.request("GET", "/api/v3/avgPrice", [("symbol", symbol)], weight=2)
        except (VenueRejected, VenueTimeout, NotSent):
            return None
        price = _f(data.get("price"))
        self.ref_prices[symbol] = (price, time.monotonic())
        return price

    # -- orders -------------------------------------------------------------------------------------------
    async def order_params(self, order: Order) -> list[tuple[str, Any]]:
        """The request's parameters after exchangeInfo filters; raises FilterRejected."""
        assert self.filters is not None
        side = "BUY" if order.side is Side.BUY else "SELL"
        otype = "LIMIT" if order.order_type is OrderType.LIMIT else "MARKET"
        if order.notional is not None:
            if otype != "MARKET":
                raise FilterRejected("ORDER_TYPE", "a notional (quoteOrderQty) order must be a MARKET order")
            quote = self.filters.get(order.symbol).prepare_quote(order.notional)
            return [("symbol", order.symbol), ("side", side), ("type", "MARKET"), ("quoteOrderQty", fmt_decimal(quote)),
                    ("newClientOrderId", order.client_order_id), ("newOrderRespType", "FULL")]
        qty, price = self.filters.get(order.symbol).prepare(side, otype, order.qty, order.price,
                                                            await self.ref_price(order.symbol))
        params: list[tuple[str, Any]] = [("symbol", order.symbol), ("side", side), ("type", otype)]
        if otype == "LIMIT":
            params.append(("timeInForce", order.tif.value.upper()))
        params.append(("quantity", fmt_decimal(qty)))
        if price is not None:
            params.append(("price", fmt_decimal(price)))
        params += [("newClientOrderId", order.client_order_id), ("newOrderRespType", "FULL")]
        return params

    async def submit(self, order: Order) -> list[ExecutionReport]:
        try:
            params = await self.order_params(order)
        except FilterRejected as exc:
            return [report(order, OrderStatus.REJECTED, reason=str(exc))]
        try:
            data = await self.rest.request("POST", "/api/v3/order", params, signed=True, weight=1)
        except VenueRejected as exc:
            if exc.code == NEW_ORDER_REJECTED and exc.message == DUPLICATE_ORDER_MSG:
                raise DuplicateOrder(f"binance {exc.code}: {exc.message}") from None
            return [report(order, OrderStatus.REJECTED, reason=f"binance {exc.code}: {exc.message}")]
        return self._reports_from_response(order, data)

    def _reports_from_response(self, order: Order, data: dict[str, Any]) -> list[ExecutionReport]:
        """Ack, then each fill of a FULL response, then a terminal status that is not FILLED (fills carry that).

        The last fill says FILLED when the venue does and the fills add up to `executedQty`: that
        completes a notional order, whose quantity only the venue knows.
        """
        vid = str(data.get("orderId", "")) or None
        status = STATUS.get(data.get("status", ""), OrderStatus.NEW)
        quote = self.quote_asset(order.symbol)
        ts_ms = int(data.get("transactTime") or data.get("updateTime") or time.time() * 1000)
        out = [msgspec.structs.replace(report(order, OrderStatus.NEW, filled_qty=0.0), venue_order_id=vid)]
        filled = 0.0
        executed = _f(data.get("executedQty"))
        fills = data.get("fills", [])
        for i, f in enumerate(fills):
            fill = fill_from_trade(self.name, order.client_order_id, order.symbol, order.side, f["tradeId"], f["price"],
                                   f["qty"], f.get("commission"), f.get("commissionAsset", ""), quote, False, ts_ms)
            filled += fill.qty
            done = i == len(fills) - 1 and venue_says_filled(status, executed, filled)
            out.append(report(order, OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED, fill=fill,
                              filled_qty=filled))
        if status.is_terminal and status is not OrderStatus.FILLED:
            out.append(report(order, status, reason=f"binance {data.get('status', '').lower()}",
                              filled_qty=_f(data.get("executedQty"))))
        elif status is OrderStatus.FILLED and _f(data.get("executedQty")) > filled:
            # A RESULT/ACK-style answer without the fills: the gateway fetches them by query.
            out.append(report(order, OrderStatus.FILLED, filled_qty=_f(data.get("executedQty"))))
        return out

    async def cancel(self, order: Order) -> list[ExecutionReport]:
        params = [("symbol", order.symbol), ("origClientOrderId", order.client_order_id)]
        try:
            data = await self.rest.request("DELETE", "/api/v3/order", params, signed=True, weight=1)
        except VenueRejected as exc:
            if exc.code in (UNKNOWN_ORDER_SENT, ORDER_DOES_NOT_EXIST):
                raise OrderNotFound(f"binance {exc.code}: {exc.message}") from None
            raise
        status = STATUS.get(data.get("status", ""), OrderStatus.CANCELED)
        return [report(order, status, reason="canceled", filled_qty=_f(data.get("executedQty")))]

    async def query(self, order: Order) -> VenueOrder:
        params = [("symbol", order.symbol), ("origClientOrderId", order.client_order_id)]
        try:
            data = await self.rest.request("GET", "/api/v3/order", params, signed=True, weight=4)
        except VenueRejected as exc:
            if exc.code == ORDER_DOES_NOT_EXIST:
                raise OrderNotFound(f"binance {exc.code}: {exc.message}") from None
            raise
        truth = self._venue_order(data)
        if truth.filled_qty > 0 and truth.venue_order_id:
            truth.fills = await self._trades(order.symbol, [("orderId", truth.venue_order_id)],
                                             {truth.venue_order_id: order})
        return truth

    def _venue_order(self, data: dict[str, Any]) -> VenueOrder:
        return VenueOrder(client_order_id=data["clientOrderId"], symbol=data["symbol"],
                          status=STATUS.get(data["status"], OrderStatus.UNKNOWN), filled_qty=_f(data.get("executedQty")),
                          venue_order_id=str(data["orderId"]), reason=f"binance {data['status'].lower()}",
                          side=data.get("side", ""), qty=_f(data.get("origQty")), price=_f(data.get("price")) or None)

    async def _trades(self, symbol: str, extra: list[tuple[str, Any]], by_vid: dict[str, Order]) -> list[Fill]:
        data = await self.rest.request("GET", "/api/v3/myTrades", [("symbol", symbol), *extra], signed=True, weight=20)
        quote = self.quote_asset(symbol)
        out = []
        for t in data:
            order = by_vid.get(str(t["orderId"]))
            if order is None:
                continue
            out.append(fill_from_trade(self.name, order.client_order_id, symbol, order.side, t["id"], t["price"],
                                       t["qty"], t.get("commission"), t.get("commissionAsset", ""), quote,
                                       bool(t.get("isMaker")), int(t.get("time", 0))))
        return out

    async def open_orders(self) -> list[VenueOrder]:
        data = await self.rest.request("GET", "/api/v3/openOrders", signed=True, weight=80)
        return [self._venue_order(d) for d in data]

    async def trades_since(self, since_ns: int, symbols: list[str], cursors: dict[str, str]
                           ) -> tuple[list[VenueTrade], dict[str, str]]:
        """`GET /api/v3/myTrades` per symbol: from the last trade id seen (`fromId`) where known, else by
        `startTime` in windows of at most 24 hours (the venue's limit), then page on by `fromId`."""
        out: list[VenueTrade] = []
        new_cursors: dict[str, str] = {}
        now_ms = self.rest.now_ms()
        for symbol in sorted(set(symbols)):
            if self.filters is not None and symbol not in self.filters.symbols:
                continue
            rows: list[dict[str, Any]] = []
            last_id = cursors.get(symbol)
            if last_id is None:
                start = max(since_ns // 1_000_000, now_ms - MY_TRADES_MAX_LOOKBACK_MS)
                while start <= now_ms:
                    page = await self._my_trades(symbol, [("startTime", start), ("endTime", start + DAY_MS - 1)])
                    rows += page
                    if len(page) >= MY_TRADES_LIMIT:
                        last_id = str(page[-1]["id"])  # the rest of the way by id
                        break
                    start += DAY_MS
            while last_id is not None:
                page = await self._my_trades(symbol, [("fromId", int(last_id) + 1)])
                rows += page
                if len(page) < MY_TRADES_LIMIT:
                    break
                last_id = str(page[-1]["id"])
            seen: set[int] = set()
            quote = self.quote_asset(symbol)
            for t in sorted(rows, key=lambda t: int(t["id"])):
                if int(t["id"]) in seen:
                    continue
                seen.add(int(t["id"]))
                side = Side.BUY if t.get("isBuyer") else Side.SELL
                fill = fill_from_trade(self.name, "", symbol, side, t["id"], t["price"], t["qty"], t.get("commission"),
                                       t.get("commissionAsset", ""), quote, bool(t.get("isMaker")), int(t.get("time", 0)))
                out.append(VenueTrade(fill, str(t["orderId"])))
            top = max(seen) if seen else (int(cursors[symbol]) if symbol in cursors else None)
            if top is not None:
                new_cursors[symbol] = str(top)
        out.sort(key=lambda vt: vt.fill.ts_ns)
        return out, new_cursors

    async def _my_trades(self, symbol: str, extra: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        data = await self.rest.request("GET", "/api/v3/myTrades", [("symbol", symbol), *extra,
                                                                    ("limit", MY_TRADES_LIMIT)], signed=True, weight=20)
        return list(data) if isinstance(data, list) else []

    async def order_by_venue_id(self, symbol: str, venue_order_id: str) -> VenueOrder:
        try:
            data = await self.rest.request("GET", "/api/v3/order", [("symbol", symbol), ("orderId", venue_order_id)],
                                           signed=True, weight=4)
        except VenueRejected as exc:
            if exc.code == ORDER_DOES_NOT_EXIST:
                raise OrderNotFound(f"binance {exc.code}: {exc.message}") from None
            raise
        return self._venue_order(data)

    async def balances(self) -> dict[str, float]:
        data = await self.rest.request("GET", "/api/v3/account", [("omitZeroBalances", "true")], signed=True, weight=20)
        return {b["asset"]: _f(b["free"]) + _f(b["locked"]) for b in data.get("balances", [])}

    def price_str(self, symbol: str, price: float) -> str:
        return fmt_decimal(Decimal(str(price)))
