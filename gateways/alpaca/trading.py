"""Alpaca order entry: REST v2 orders by `client_order_id`, and the `trade_updates` stream.

REST (https://docs.alpaca.markets/reference): `POST /v2/orders`, `GET
/v2/orders:by_client_order_id`, `DELETE /v2/orders/{id}`, `GET /v2/orders?status=open`,
`GET /v2/positions`, `GET /v2/account`, `GET /v2/account/activities/FILL`; keys in the
`APCA-API-KEY-ID` / `APCA-API-SECRET-KEY` headers; 200 requests a minute
(`X-RateLimit-*` headers). Paper: https://paper-api.alpaca.markets, live:
https://api.alpaca.markets (`venues.<v>.rest_url`).

The stream (`<stream_url>`, e.g. wss://paper-api.alpaca.markets/stream): send
`{"action":"auth",...}`, then `{"action":"listen","data":{"streams":["trade_updates"]}}`;
`fill`/`partial_fill` events carry the execution (trade id `execution_id`, `price`,
`qty`), `canceled`/`rejected`/`expired` close the order. The stream does not
replay what was missed while it was down: every reconnect (auth, listen, the
`listening` answer) calls `on_reconnect`, and the gateway reconciles over REST.

Quantities may be fractional (up to 9 decimals). An order with `Order.notional`
set is sent with `notional` (a dollar amount) instead of `qty`; Alpaca takes it
for market orders, `time_in_force` `day` for equities (`gtc`/`ioc` for crypto),
and the venue decides the quantity: the order is complete when the venue says
`fill`. A 429 is `NotSent` with the venue's back-off (`Retry-After`, else
`X-RateLimit-Reset`); an answer "client_order_id must be unique" means an earlier
attempt arrived (`DuplicateOrder`, resolved by query).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import aiohttp
import msgspec

from cluster.messages import ExecutionReport, Fill, Liquidity, Order, OrderStatus, OrderType, Side, now_ns
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
)

log = logging.getLogger(__name__)

LIVE_URL = "https://api.alpaca.markets"
PAPER_URL = "https://paper-api.alpaca.markets"
REQUESTS_PER_MIN = 200
ACTIVITIES_PAGE_SIZE = 100
LISTEN_ACK_TIMEOUT_S = 5.0
DUPLICATE_COID_MSG = "client_order_id must be unique"

STATUS: dict[str, OrderStatus] = {
    "new": OrderStatus.NEW, "accepted": OrderStatus.NEW, "pending_new": OrderStatus.PENDING_NEW,
    "accepted_for_bidding": OrderStatus.NEW, "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED, "done_for_day": OrderStatus.EXPIRED, "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED, "replaced": OrderStatus.CANCELED, "pending_cancel": OrderStatus.PENDING_CANCEL,
    "pending_replace": OrderStatus.NEW, "rejected": OrderStatus.REJECTED, "suspended": OrderStatus.NEW,
    "stopped": OrderStatus.NEW, "calculated": OrderStatus.NEW,
}
EVENT_STATUS = {"new": OrderStatus.NEW, "canceled": OrderStatus.CANCELED, "rejected": OrderStatus.REJECTED,
                "expired": OrderStatus.EXPIRED, "done_for_day": OrderStatus.EXPIRED}


def _f(x: Any) -> float:
    return float(x) if x not in (None, "") else 0.0


def fmt_amount(x: float) -> str:
    """A quantity or notional as Alpaca takes it: plain decimal, at most 9 places (rounded down)."""
    from decimal import ROUND_DOWN, Decimal

    d = Decimal(repr(float(x))).quantize(Decimal("0.000000001"), rounding=ROUND_DOWN)
    out = format(d.normalize(), "f")
    return out if out not in ("-0", "") else "0"


def is_crypto(symbol: str) -> bool:
    """Alpaca crypto pairs are written BASE/QUOTE (BTC/USD); equities are tickers."""
    return "/" in symbol


def _iso(ns: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(max(ns, 0) / 1e9, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _activity_trade_id(activity_id: str) -> str:
    """A FILL activity's id is `<time>::<execution id>`; the execution id is what trade_updates calls it."""
    return activity_id.rsplit("::", 1)[-1]


def _iso_ns(ts: str) -> int:
    from datetime import datetime

    if not ts:
        return now_ns()
    ts = ts.replace("Z", "+00:00")
    if "." in ts:  # Alpaca sends nanoseconds; datetime takes microseconds
        head, rest = ts.split(".", 1)
        frac, tz = (rest.split("+", 1) + [""])[:2] if "+" in rest else (rest, "")
        ts = f"{head}.{frac[:6]}" + (f"+{tz}" if tz else "")
    return int(datetime.fromisoformat(ts).timestamp() * 1e9)


class AlpacaAdapter(VenueAdapter):
    def __init__(self, name: str, rest_url: str, stream_url: str, creds: Credentials, timeout_s: float = 5.0,
                 user_stream: bool = True) -> None:
        super().__init__()
        self.name = name
        self.rest_url = rest_url.rstrip("/")
        self.stream_url = stream_url
        self._creds = creds
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.limiter = RateLimiter(name, "alpaca", REQUESTS_PER_MIN, on_change=lambda s: self.on_limit(s))
        self.session: aiohttp.ClientSession | None = None
        self.not_found_grace_s = timeout_s + 1.0
        self.user_stream_enabled = user_stream
        self.stream_task: asyncio.Task | None = None
        self.stream_connected = asyncio.Event()
        self.stream_connects = 0
        self.last_send_ns = 0

    async def start(self) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(headers={"APCA-API-KEY-ID": self._creds.api_key,
                                                          "APCA-API-SECRET-KEY": self._creds.api_secret})
        if self.user_stream_enabled and self.stream_task is None:
            self.stream_task = asyncio.get_running_loop().create_task(self._stream())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stream_connected.wait(), 5.0)

    async def close(self) -> None:
        if self.stream_task is not None:
            self.stream_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.stream_task
            self.stream_task = None
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def request(self, method: str, path: str, params: dict[str, Any] | None = None,
                      body: dict[str, Any] | None = None) -> Any:
        assert self.session is not None, "start() first"
        try:
            self.limiter.check(1)
        except RateLimited as exc:
            raise NotSent(str(exc), retry_after_s=exc.retry_after_s) from exc
        self.last_send_ns = time.perf_counter_ns()
        try:
            async with self.session.request(method, self.rest_url + path, params=params,
                                            data=json.dumps(body) if body is not None else None,
                                            headers={"Content-Type": "application/json"} if body is not None else None,
                                            timeout=self.timeout) as resp:
                raw = await resp.read()
                status, headers = resp.status, resp.headers
        except aiohttp.ClientConnectorError as exc:
            raise NotSent(f"cannot connect to {self.rest_url}: {exc.os_error}") from None
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise VenueTimeout(f"{method} {path}: no answer ({type(exc).__name__})") from None
        self.limiter.on_response(status, headers)
        if status == 429:
            limit = self.limiter.status()
            raise NotSent(f"{method} {path}: HTTP 429, {limit.state.value} for {limit.retry_after_s:g}s",
                          retry_after_s=limit.retry_after_s)
        if status >= 500:
            raise VenueTimeout(f"{method} {path}: HTTP {status}, outcome unknown")
        data = msgspec.json.decode(raw) if raw else {}
        if status == 404:
            raise OrderNotFound(f"alpaca 404: {data.get('message', '') if isinstance(data, dict) else data}")
        if status >= 400:
            code = data.get("code", status) if isinstance(data, dict) else status
            raise VenueRejected(code, data.get("message", "") if isinstance(data, dict) else str(data))
        return data

    # -- orders -------------------------------------------------------------------------------------------
    def order_body(self, order: Order) -> dict[str, Any]:
        """The `POST /v2/orders` body; raises ValueError for a notional order Alpaca would refuse."""
        body: dict[str, Any] = {"symbol": order.symbol, "side": order.side.value,
                                "type": "limit" if order.order_type is OrderType.LIMIT else "market",
                                "time_in_force": order.tif.value, "client_order_id": order.client_order_id}
        if order.notional is not None:
            if order.order_type is not OrderType.MARKET:
                raise ValueError("a notional order must be a market order")
            if not order.notional > 0:
                raise ValueError(f"notional {order.notional!r} must be positive")
            body["notional"] = fmt_amount(order.notional)
            if not is_crypto(order.symbol):
                body["time_in_force"] = "day"  # fractional/notional equity orders are day orders only
        else:
            body["qty"] = fmt_amount(order.qty)
        if order.order_type is OrderType.LIMIT and order.price is not None:
            body["limit_price"] = repr(order.price)
        return body

    async def submit(self, order: Order) -> list[ExecutionReport]:
        try:
            body = self.order_body(order)
        except ValueError as exc:
            return [report(order, OrderStatus.REJECTED, reason=f"not sent: {exc}")]
        try:
            data = await self.request("POST", "/v2/orders", body=body)
        except VenueRejected as exc:
            if DUPLICATE_COID_MSG in exc.message:
                raise DuplicateOrder(f"alpaca {exc.code}: {exc.message}") from None
            return [report(order, OrderStatus.REJECTED, reason=f"alpaca {exc.code}: {exc.message}")]
        status = STATUS.get(data.get("status", ""), OrderStatus.NEW)
        vid = data.get("id")
        if status is OrderStatus.REJECTED:
            return [msgspec.structs.replace(report(order, status, reason="alpaca rejected"), venue_order_id=vid)]
        out = [msgspec.structs.replace(report(order, OrderStatus.NEW, filled_qty=0.0), venue_order_id=vid)]
        if status.is_terminal:
            # Fills arrive on trade_updates; a terminal answer with fills we lack makes the gateway query.
            out.append(report(order, status, reason=f"alpaca {data.get('status')}",
                              filled_qty=_f(data.get("filled_qty"))))
        return out

    async def cancel(self, order: Order) -> list[ExecutionReport]:
        vid = order.venue_order_id or (await self.query(order)).venue_order_id
        try:
            await self.request("DELETE", f"/v2/orders/{vid}")
        except VenueRejected as exc:
            if exc.code in (422, 40410000, 42210000):  # not cancelable any more: filled or done
                raise OrderNotFound(f"alpaca {exc.code}: {exc.message}") from None
            raise
        return []  # accepted; the `canceled` event (or a query) closes the order

    def _venue_order(self, d: dict[str, Any]) -> VenueOrder:
        return VenueOrder(client_order_id=d["client_order_id"], symbol=d["symbol"],
                          status=STATUS.get(d.get("status", ""), OrderStatus.UNKNOWN), filled_qty=_f(d.get("filled_qty")),
                          venue_order_id=d.get("id"), reason=f"alpaca {d.get('status', '')}", side=d.get("side", ""),
                          qty=_f(d.get("qty")), price=_f(d.get("limit_price")) or None)

    async def query(self, order: Order) -> VenueOrder:
        data = await self.request("GET", "/v2/orders:by_client_order_id", params={"client_order_id": order.client_order_id})
        truth = self._venue_order(data)
        if truth.filled_qty > 0 and truth.venue_order_id:
            since = (order.created_ts_ns or _iso_ns(data.get("created_at", ""))) - 60_000_000_000
            trades = await self._activities(since)
            truth.fills = [msgspec.structs.replace(t.fill, client_order_id=order.client_order_id, strategy=order.strategy)
                           for t in trades if t.venue_order_id == truth.venue_order_id]
        return truth

    async def order_by_venue_id(self, symbol: str, venue_order_id: str) -> VenueOrder:
        return self._venue_order(await self.request("GET", f"/v2/orders/{venue_order_id}"))

    async def open_orders(self) -> list[VenueOrder]:
        data = await self.request("GET", "/v2/orders", params={"status": "open", "limit": "500"})
        return [self._venue_order(d) for d in data]

    async def trades_since(self, since_ns: int, symbols: list[str], cursors: dict[str, str]
                           ) -> tuple[list[VenueTrade], dict[str, str]]:
        """Every FILL activity after `since_ns` (all symbols at once; Alpaca needs none named)."""
        return await self._activities(since_ns), {}

    async def _activities(self, since_ns: int) -> list[VenueTrade]:
        """`GET /v2/account/activities/FILL?after=...&direction=asc`, page by page (`page_token` = last id)."""
        out: list[VenueTrade] = []
        token: str | None = None
        while True:
            params = {"after": _iso(since_ns), "direction": "asc", "page_size": str(ACTIVITIES_PAGE_SIZE)}
            if token:
                params["page_token"] = token
            page = await self.request("GET", "/v2/account/activities/FILL", params=params)
            if not isinstance(page, list):
                break
            for a in page:
                side = Side.BUY if a.get("side") == "buy" else Side.SELL
                fill = Fill(client_order_id="", trade_id=_activity_trade_id(str(a["id"])), strategy="", venue=self.name,
                            symbol=a.get("symbol", ""), side=side, price=_f(a.get("price")), qty=_f(a.get("qty")),
                            liquidity=Liquidity.TAKER, ts_ns=_iso_ns(a.get("transaction_time", "")))
                out.append(VenueTrade(fill, str(a.get("order_id", ""))))
            if len(page) < ACTIVITIES_PAGE_SIZE:
                break
            token = str(page[-1]["id"])
        return out

    async def positions(self) -> dict[str, float] | None:
        data = await self.request("GET", "/v2/positions")
        return {p["symbol"]: _f(p["qty"]) * (-1.0 if p.get("side") == "short" and _f(p["qty"]) > 0 else 1.0)
                for p in data}

    async def balances(self) -> dict[str, float]:
        acct = await self.request("GET", "/v2/account")
        out = {"USD": _f(acct.get("cash"))}
        for p in await self.request("GET", "/v2/positions"):
            out[p["symbol"]] = _f(p["qty"])
        return out

    # -- trade_updates -------------------------------------------------------------------------------------
    async def _stream(self) -> None:
        delay = 0.1
        while True:
            try:
                assert self.session is not None
                async with self.session.ws_connect(self.stream_url, heartbeat=20.0) as ws:
                    await ws.send_str(json.dumps({"action": "auth", "key": self._creds.api_key,
                                                  "secret": self._creds.api_secret}))
                    auth = _decode(await ws.receive(timeout=5.0))
                    if auth.get("data", {}).get("status") != "authorized":
                        raise VenueRejected("auth", str(auth.get("data", {}).get("status", "unauthorized")))
                    await ws.send_str(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
                    await self._await_listening(ws)
                    self.stream_connects += 1
                    delay = 0.1
                    self.stream_connected.set()
                    if self.stream_connects > 1:
                        self.on_reconnect()
                    async for msg in ws:
                        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                            self._on_message(_decode(msg))
                        elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                            break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("alpaca trade_updates: %s: %s", type(exc).__name__, exc)
            self.stream_connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _await_listening(self, ws: Any) -> None:
        """Wait for the `listening` answer naming trade_updates (events that come first are applied)."""
        deadline = time.monotonic() + LISTEN_ACK_TIMEOUT_S
        while True:
            msg = await ws.receive(timeout=max(deadline - time.monotonic(), 0.01))
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise ConnectionError(f"stream closed before listening ({msg.type.name})")
            data = _decode(msg)
            if data.get("stream") == "listening":
                if "trade_updates" not in data.get("data", {}).get("streams", []):
                    raise VenueRejected("listen", f"not listening to trade_updates: {data.get('data')}")
                return
            self._on_message(data)

    def _on_message(self, msg: dict[str, Any]) -> None:
        if msg.get("stream") != "trade_updates":
            return
        r = parse_trade_update(self.name, msg.get("data", {}))
        if r is not None:
            self.on_reports([r])


def _decode(msg: Any) -> dict[str, Any]:
    data = msg.data if hasattr(msg, "data") else msg
    try:
        out = msgspec.json.decode(data)
    except (msgspec.DecodeError, TypeError):
        return {}
    return out if isinstance(out, dict) else {}


def parse_trade_update(venue: str, data: dict[str, Any]) -> ExecutionReport | None:
    """One `trade_updates` event as a report (strategy filled in by the gateway), or None for events that change nothing."""
    event = data.get("event", "")
    o = data.get("order", {})
    coid = o.get("client_order_id", "")
    side = Side.BUY if o.get("side") == "buy" else Side.SELL
    fill = None
    if event in ("fill", "partial_fill"):
        fill = Fill(client_order_id=coid, trade_id=str(data.get("execution_id", "")), strategy="", venue=venue,
                    symbol=o.get("symbol", ""), side=side, price=_f(data.get("price")), qty=_f(data.get("qty")),
                    liquidity=Liquidity.TAKER, ts_ns=_iso_ns(data.get("timestamp", "")))
        # `fill` is the venue's word that the order is done (what completes a notional order).
        status = OrderStatus.FILLED if event == "fill" else OrderStatus.PARTIALLY_FILLED
    elif event in EVENT_STATUS:
        status = EVENT_STATUS[event]
    else:
        return None
    return ExecutionReport(client_order_id=coid, strategy="", venue=venue, symbol=o.get("symbol", ""), status=status,
                           side=side, order_qty=_f(o.get("qty")), filled_qty=_f(o.get("filled_qty")),
                           price=_f(o.get("limit_price")) or None, fill=fill,
                           reason=f"alpaca {event}" if status in (OrderStatus.REJECTED, OrderStatus.EXPIRED,
                                                                  OrderStatus.CANCELED) else "",
                           ts_ns=now_ns(), venue_order_id=o.get("id"))
