"""Binance's user data stream: listen key, keep-alive, `executionReport` events -> reports.

`POST /api/v3/userDataStream` gives a listen key (API key header, unsigned),
`PUT` keeps it alive (every 30 minutes; it expires after 60), and
`<ws_url>/ws/<listenKey>` streams the account's events. Events missed while the
socket is down are not replayed by the venue, so every reconnect calls the
adapter's `on_reconnect`, and the gateway reconciles over REST.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import msgspec

from cluster.messages import ExecutionReport, OrderStatus, Side, now_ns
from gateways.venue_adapter import NotSent, VenueRejected, VenueTimeout

log = logging.getLogger(__name__)

KEEPALIVE_S = 30 * 60
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 10.0

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
    """Keeps one user-data WebSocket open for an adapter; reconnects forever with back-off."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter
        self.listen_key = ""
        self.task: asyncio.Task | None = None
        self.keepalive_task: asyncio.Task | None = None
        self.connected = asyncio.Event()
        self.connects = 0
        self.events = 0

    async def start(self, wait_s: float = 5.0) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.keepalive_task = asyncio.get_running_loop().create_task(self._keepalive())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.connected.wait(), wait_s)

    async def close(self) -> None:
        for t in (self.task, self.keepalive_task):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if self.listen_key:
            with contextlib.suppress(Exception):
                await self.adapter.rest.request("DELETE", "/api/v3/userDataStream", [("listenKey", self.listen_key)])

    def url(self) -> str:
        base = self.adapter.stream_url or f"{self.adapter.ws_url.rstrip('/')}/ws"
        return f"{base.rstrip('/')}/{self.listen_key}"

    async def _new_key(self) -> None:
        data = await self.adapter.rest.request("POST", "/api/v3/userDataStream", weight=2)
        self.listen_key = data["listenKey"]

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            if self.listen_key:
                try:
                    await self.adapter.rest.request("PUT", "/api/v3/userDataStream", [("listenKey", self.listen_key)],
                                                    weight=2)
                except (VenueRejected, VenueTimeout, NotSent) as exc:
                    log.warning("binance user stream keep-alive failed: %s", exc)

    async def _run(self) -> None:
        delay = RECONNECT_MIN_S
        session = self.adapter.rest.session
        while True:
            try:
                if not self.listen_key:
                    await self._new_key()
                async with session.ws_connect(self.url(), heartbeat=20.0) as ws:
                    self.connects += 1
                    delay = RECONNECT_MIN_S
                    self.connected.set()
                    if self.connects > 1:
                        self.adapter.on_reconnect()
                    async for msg in ws:
                        if msg.type is aiohttp.WSMsgType.TEXT:
                            self._on_message(msg.data)
                        elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                            break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("binance user stream: %s: %s", type(exc).__name__, exc)
                if isinstance(exc, aiohttp.WSServerHandshakeError):
                    self.listen_key = ""  # expired or unknown key: make a new one
            self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _on_message(self, raw: str) -> None:
        try:
            ev = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            log.warning("binance user stream: not JSON: %.200s", raw)
            return
        if isinstance(ev, dict) and "data" in ev and "stream" in ev:
            ev = ev["data"]
        if not isinstance(ev, dict):
            return
        self.events += 1
        kind = ev.get("e")
        if kind == "executionReport":
            quote = self.adapter.quote_asset(ev.get("s", ""))
            self.adapter.on_reports([parse_execution_report(self.adapter.name, ev, quote)])
        elif kind == "listenKeyExpired":
            self.listen_key = ""
