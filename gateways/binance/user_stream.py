"""Binance's user data stream over the WebSocket API: `executionReport` events -> reports.

Binance discontinued listen keys for spot on 2026-02-20; the account's events now come on a
WebSocket API connection (`wss://ws-api.binance.com:443/ws-api/v3`) after a signed
`userDataStream.subscribe.signature` request (`apiKey`, `timestamp`, `recvWindow`, `signature` over
the parameters sorted by name). The answer carries a `subscriptionId`; each event arrives as
`{"subscriptionId": N, "event": {...}}`. Events missed while the socket is down are not replayed
by the venue, so every reconnect calls the adapter's `on_reconnect`, and the gateway reconciles
over REST. `eventStreamTerminated` and `serverShutdown` make it connect and subscribe again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

import aiohttp
import msgspec

from cluster.messages import ExecutionReport, OrderStatus, Side, now_ns

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 10.0
SUBSCRIBE_TIMEOUT_S = 10.0
WS_API_PATH = "/ws-api/v3"
# The market-data stream host of each Binance environment -> its WebSocket API (a different host).
WS_API_BY_STREAM_HOST = {
    "stream.binance.com": "wss://ws-api.binance.com:443/ws-api/v3",
    "data-stream.binance.vision": "wss://ws-api.binance.com:443/ws-api/v3",
    "stream.testnet.binance.vision": "wss://ws-api.testnet.binance.vision/ws-api/v3",
}


def ws_api_url(ws_url: str, stream_url: str = "") -> str:
    """Where the user data stream is: `stream_url` when configured, Binance's WebSocket API for Binance's own
    stream hosts, else the same server as `ws_url` (the venue simulator serves both)."""
    if stream_url:
        return stream_url
    host = ws_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    return WS_API_BY_STREAM_HOST.get(host) or ws_url.rstrip("/") + WS_API_PATH


class SubscriptionRefused(RuntimeError):
    """The venue answered the subscription request with an error (bad key or signature, clock skew)."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"status {status}, code {code}: {msg}")
        self.code = code

EXEC_TYPE_STATUS = {"NEW": OrderStatus.NEW, "CANCELED": OrderStatus.CANCELED, "REJECTED": OrderStatus.REJECTED,
                    "EXPIRED": OrderStatus.EXPIRED, "TRADE_PREVENTION": OrderStatus.EXPIRED}


def parse_execution_report(venue: str, ev: dict[str, Any], quote_asset: str = "") -> ExecutionReport:
    """One `executionReport` event as a report; strategy is left empty (the gateway fills it from the order).

    A cancel's own id is `c`; the canceled order's client order id is `C`.
    """
    from gateways.binance.trading import STATUS, _f, fill_from_trade

    x = ev.get("x", "")
    coid = ev.get("C") if x == "CANCELED" and ev.get("C") else ev.get("c", "")
    side = Side.BUY if ev.get("S") == "BUY" else Side.SELL
    status = STATUS.get(ev.get("X", ""), OrderStatus.UNKNOWN)
    fill = None
    if x == "TRADE":
        fill = fill_from_trade(venue, coid, ev.get("s", ""), side, ev["t"], ev["L"], ev["l"], ev.get("n"),
                               ev.get("N") or "", quote_asset, bool(ev.get("m")), int(ev.get("T") or ev.get("E") or 0))
        # FILLED stays on the last fill: the gateway completes an order by its fills' quantity, and a
        # notional (quoteOrderQty) order, whose quantity only the venue knows, by this word.
    else:
        status = EXEC_TYPE_STATUS.get(x, status)
    reason = ev.get("r", "") if ev.get("r") not in (None, "NONE") else ""
    return ExecutionReport(client_order_id=coid, strategy="", venue=venue, symbol=ev.get("s", ""), status=status,
                           side=side, order_qty=_f(ev.get("q")), filled_qty=_f(ev.get("z")),
                           price=_f(ev.get("p")) or None, fill=fill, reason=f"binance {reason}".strip() if reason else "",
                           ts_ns=now_ns(), venue_order_id=str(ev["i"]) if "i" in ev else None)


class BinanceUserStream:
    """Keeps one subscribed WebSocket API connection open for an adapter; reconnects forever with back-off."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter
        self.task: asyncio.Task | None = None
        self.connected = asyncio.Event()
        self.connects = 0
        self.events = 0
        self.subscription_id: int | None = None
        self._ids = itertools.count(1)

    async def start(self, wait_s: float = 5.0) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.connected.wait(), wait_s)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        self.connected.clear()

    def url(self) -> str:
        return ws_api_url(self.adapter.ws_url, self.adapter.stream_url)

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse) -> int:
        """Send the signed subscription and wait for its answer; events before it are handled as they come."""
        rid = f"subscribe-{next(self._ids)}"
        await ws.send_str(msgspec.json.encode({"id": rid, "method": "userDataStream.subscribe.signature",
                                               "params": self.adapter.rest.signed_ws_params({})}).decode())
        while True:
            msg = await ws.receive(timeout=SUBSCRIBE_TIMEOUT_S)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"connection ended before the subscription was answered ({msg.type.name})")
            try:
                answer = msgspec.json.decode(msg.data)
            except msgspec.DecodeError:
                log.warning("binance user stream: not JSON: %.200s", msg.data)
                continue
            if not isinstance(answer, dict) or answer.get("id") != rid:
                self._on_message(msg.data)
                continue
            status = answer.get("status")
            if status != 200:
                err = answer.get("error") or {}
                raise SubscriptionRefused(int(status or 0), int(err.get("code") or 0), str(err.get("msg") or ""))
            return int((answer.get("result") or {}).get("subscriptionId", 0))

    async def _run(self) -> None:
        delay = RECONNECT_MIN_S
        session = self.adapter.rest.session
        while True:
            try:
                async with session.ws_connect(self.url(), heartbeat=20.0) as ws:
                    self.subscription_id = await self._subscribe(ws)
                    self.connects += 1
                    delay = RECONNECT_MIN_S
                    self.connected.set()
                    if self.connects > 1:
                        self.adapter.on_reconnect()
                    async for msg in ws:
                        if msg.type is aiohttp.WSMsgType.TEXT:
                            if not self._on_message(msg.data):
                                break  # the venue ended the subscription or is shutting down: start again
                        elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                            break
            except asyncio.CancelledError:
                raise
            except SubscriptionRefused as exc:
                log.error("binance user stream: subscription refused (%s)", exc)
                if exc.code == -1021:  # our clock is off the venue's: measure it again
                    with contextlib.suppress(Exception):
                        await self.adapter.rest.sync_time()
            except Exception as exc:
                log.warning("binance user stream: %s: %s", type(exc).__name__, exc)
            self.connected.clear()
            self.subscription_id = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _on_message(self, raw: str) -> bool:
        """Handle one message; False when the connection should be replaced."""
        try:
            msg = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            log.warning("binance user stream: not JSON: %.200s", raw)
            return True
        ev = msg.get("event") if isinstance(msg, dict) else None
        if not isinstance(ev, dict):
            return True  # answers to other requests, unknown shapes: not account events
        self.events += 1
        kind = ev.get("e")
        if kind == "executionReport":
            quote = self.adapter.quote_asset(ev.get("s", ""))
            self.adapter.on_reports([parse_execution_report(self.adapter.name, ev, quote)])
        elif kind in ("eventStreamTerminated", "serverShutdown"):
            log.warning("binance user stream: %s; subscribing on a new connection", kind)
            return False
        return True
