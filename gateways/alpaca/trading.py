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
`qty`), `canceled`/`rejected`/`expired` close the order. Quantities may be
fractional; a `notional` order (quote amount instead of qty) is sent when the
adapter is asked for one (`submit_notional`).
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
    NotSent,
    OrderNotFound,
    VenueAdapter,
    VenueOrder,
    VenueRejected,
    VenueTimeout,
    report,
)

log = logging.getLogger(__name__)

LIVE_URL = "https://api.alpaca.markets"
PAPER_URL = "https://paper-api.alpaca.markets"
REQUESTS_PER_MIN = 200

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
            raise NotSent(str(exc)) from exc
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
            raise NotSent(f"{method} {path}: HTTP 429, backing off")
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
    def order_body(self, order: Order, notional: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"symbol": order.symbol, "side": order.side.value,
                                "type": "limit" if order.order_type is OrderType.LIMIT else "market",
                                "time_in_force": order.tif.value, "client_order_id": order.client_order_id}
        if notional is not None:
            body["notional"] = repr(notional)
        else:
            body["qty"] = repr(order.qty)
        if order.order_type is OrderType.LIMIT and order.price is not None:
            body["limit_price"] = repr(order.price)
        return body

    async def submit(self, order: Order, notional: float | None = None) -> list[ExecutionReport]:
        try:
            data = await self.request("POST", "/v2/orders", body=self.order_body(order, notional))
        except VenueRejected as exc:
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

    async def submit_notional(self, order: Order, notional: float) -> list[ExecutionReport]:
        """A notional (quote amount) market order; `order.qty` is the caller's estimate of the quantity."""
        return await self.submit(order, notional)

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
        if truth.filled_qty > 0:
            truth.fills = [f for f in await self.fills_since([msgspec.structs.replace(order, venue_order_id=truth.venue_order_id)],
                                                             order.created_ts_ns - 60_000_000_000)]
        return truth

    async def open_orders(self) -> list[VenueOrder]:
        data = await self.request("GET", "/v2/orders", params={"status": "open", "limit": "500"})
        return [self._venue_order(d) for d in data]

    async def fills_since(self, orders: list[Order], since_ns: int) -> list[Fill]:
        by_vid = {o.venue_order_id: o for o in orders if o.venue_order_id}
        if not by_vid:
            return []
        from datetime import datetime, timezone

        after = datetime.fromtimestamp(max(since_ns, 0) / 1e9, tz=timezone.utc).isoformat().replace("+00:00", "Z")
        data = await self.request("GET", "/v2/account/activities/FILL", params={"after": after, "direction": "asc"})
        out = []
        for a in data:
            o = by_vid.get(a.get("order_id"))
            if o is None:
                continue
            out.append(Fill(client_order_id=o.client_order_id, trade_id=str(a["id"]), strategy=o.strategy,
                            venue=self.name, symbol=o.symbol, side=o.side, price=_f(a["price"]), qty=_f(a["qty"]),
                            liquidity=Liquidity.TAKER, ts_ns=_iso_ns(a.get("transaction_time", ""))))
        return out

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
        status = OrderStatus.PARTIALLY_FILLED
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
