"""The Alpaca gateway against the venue simulator over real sockets: REST v2 orders and trade_updates."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from actors.gateway import GatewayService
from cluster.config import MarketSection, SymbolSection, VenueSection
from cluster.messages import Order, OrderStatus, OrderType, Side
from cluster.state_store import StateStore
from gateways.alpaca.trading import AlpacaAdapter, parse_trade_update
from gateways.secrets import Credentials
from gateways.venue_sim.alpaca_trading import ALPACA_TRADING, SIM_KEY_ID, SIM_SECRET_KEY, AlpacaTradingSim
from gateways.venue_sim.exchange import SimExchange
from gateways.venue_sim.server import create_app, start_server

SYMBOLS = [SymbolSection(symbol="BTC/USD", venue="alpaca", price=60000.0, tick_size=0.1, lot_size=0.0001)]
MODULES = ["gateways.venue_sim.binance_market", "gateways.venue_sim.alpaca_trading"]


@contextlib.asynccontextmanager
async def rig(redis_url: str, timeout_s: float = 1.0) -> AsyncIterator[tuple[AlpacaTradingSim, GatewayService]]:
    ex = SimExchange(SYMBOLS, MarketSection(updates_per_second=20))
    app = create_app(ex, MODULES)
    runner, port = await start_server(app)
    url = f"http://127.0.0.1:{port}"
    adapter = AlpacaAdapter("alpaca", url, f"ws://127.0.0.1:{port}/stream",
                            Credentials("alpaca", SIM_KEY_ID, SIM_SECRET_KEY), timeout_s)
    service = GatewayService("alpaca", VenueSection(type="alpaca", rest_url=url), StateStore.from_url(redis_url, "al"),
                             adapter=adapter)
    service.restore()
    await service.start()
    try:
        yield app[ALPACA_TRADING], service
    finally:
        await service.close()
        await runner.cleanup()


def order(qty: float, price: float | None = None, otype: OrderType = OrderType.LIMIT) -> Order:
    return Order(client_order_id=f"al-{time.time_ns():x}", strategy="s1", venue="alpaca", symbol="BTC/USD",
                 side=Side.BUY, qty=qty, order_type=otype, price=price, created_ts_ns=time.time_ns())


async def until(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_fractional_market_order_fills_via_trade_updates(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as (sim, svc):
            o = order(0.0123, otype=OrderType.MARKET)
            svc.accept(o)
            await svc.send(o)
            await until(lambda: o.client_order_id not in svc.orders)
            final = svc.store.load_order(o.client_order_id)
            assert final.status is OrderStatus.FILLED and final.filled_qty == pytest.approx(0.0123)
            assert sum(f.qty for f in svc.store.journal_fills()) == pytest.approx(0.0123)

    asyncio.run(go())


def test_resting_order_cancel_and_venue_reject(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as (sim, svc):
            bid = sim.exchange.markets["BTC/USD"].book_levels()[0][0][0]
            o = order(0.01, round(bid * 0.9, 1))
            svc.accept(o)
            await svc.send(o)
            assert svc.orders[o.client_order_id].venue_order_id
            assert svc.request_cancel(o.client_order_id)
            await svc.cancel_at_venue(o.client_order_id)
            await until(lambda: o.client_order_id not in svc.orders)
            assert svc.store.load_order(o.client_order_id).status is OrderStatus.CANCELED
            big = order(1000.0, round(bid * 0.9, 1))
            svc.accept(big)
            await svc.send(big)
            rej = svc.store.load_order(big.client_order_id)
            assert rej.status is OrderStatus.REJECTED and "insufficient buying power" in rej.reason

    asyncio.run(go())


def test_5xx_resolved_by_client_order_id_with_fills_from_activities(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as (sim, svc):
            svc.adapter.stream_task.cancel()  # type: ignore[attr-defined]
            sim.faults.new_5xx = 1
            o = order(0.02, otype=OrderType.MARKET)
            svc.accept(o)
            await svc.send(o)
            await until(lambda: o.client_order_id not in svc.orders)
            assert svc.store.load_order(o.client_order_id).status is OrderStatus.FILLED
            assert sim.counts["new_orders"] == 1 and sim.counts["queries"] >= 1
            assert sum(f.qty for f in svc.store.journal_fills()) == pytest.approx(0.02)

    asyncio.run(go())


def test_trade_update_parsing() -> None:
    ev = {"event": "partial_fill", "execution_id": "e1", "price": "100.5", "qty": "0.5", "timestamp":
          "2024-01-02T03:04:05.123456789Z", "order": {"id": "v1", "client_order_id": "c1", "symbol": "AAPL",
                                                      "side": "sell", "qty": "2", "filled_qty": "0.5"}}
    r = parse_trade_update("alpaca", ev)
    assert r is not None and r.fill is not None and r.fill.trade_id == "e1" and r.fill.qty == 0.5
    assert r.side is Side.SELL and r.venue_order_id == "v1"
    canceled = parse_trade_update("alpaca", {**ev, "event": "canceled"})
    assert canceled is not None and canceled.status is OrderStatus.CANCELED and canceled.fill is None
    assert parse_trade_update("alpaca", {**ev, "event": "pending_new"}) is None


# -- rate limits ---------------------------------------------------------------------------------------------
def test_429_on_new_order_is_sent_again_after_retry_after(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as (sim, svc):
            sim.faults.next_429 = 1
            sim.faults.retry_after_s = 1.0
            o = order(0.01, otype=OrderType.MARKET)
            svc.accept(o)
            t0 = time.monotonic()
            await svc.send(o)
            assert time.monotonic() - t0 >= 0.9, "it waited for Retry-After"
            await until(lambda: o.client_order_id not in svc.orders)
            final = svc.store.load_order(o.client_order_id)
            assert final.status is OrderStatus.FILLED and final.filled_qty == pytest.approx(0.01)
            assert sim.counts["refused_429"] == 1 and sim.counts["new_orders"] == 1
            assert list(sim.orders) == [o.client_order_id]
            assert svc.counters["send_retries"] == 1
            # A back-off longer than the order timeout (5 s): rejected, saying so, nothing sent.
            sim.faults.next_429 = 1
            sim.faults.retry_after_s = 30.0
            late = order(0.01, otype=OrderType.MARKET)
            svc.accept(late)
            await svc.send(late)
            rej = svc.store.load_order(late.client_order_id)
            assert rej.status is OrderStatus.REJECTED and "429" in rej.reason and "outlasts" in rej.reason
            assert sim.counts["new_orders"] == 1

    asyncio.run(go())


def test_retry_after_a_429_whose_order_was_placed_is_resolved_not_duplicated(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as (sim, svc):
            svc.adapter.stream_task.cancel()  # type: ignore[attr-defined]
            bid = sim.exchange.markets["BTC/USD"].book_levels()[0][0][0]
            sim.faults.accept_then_429 = 1
            o = order(0.01, round(bid * 0.9, 1))
            svc.accept(o)
            await svc.send(o)
            await until(lambda: svc.orders[o.client_order_id].status is OrderStatus.NEW)
            assert sim.counts["new_orders"] == 1, "never two orders at the venue"
            assert sim.counts["queries"] >= 1
            journal = [f["event"] for _, f in svc.store.journal() if o.client_order_id in f["data"]]
            assert journal[:3] == ["submit", "send_retry", "new"]

    asyncio.run(go())


def test_client_order_id_already_at_the_venue_is_resolved_by_query(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as (sim, svc):
            svc.adapter.stream_task.cancel()  # type: ignore[attr-defined]
            bid = sim.exchange.markets["BTC/USD"].book_levels()[0][0][0]
            o = order(0.01, round(bid * 0.9, 1))
            await svc.adapter.request("POST", "/v2/orders", body=svc.adapter.order_body(o))  # type: ignore[attr-defined]
            svc.accept(o)
            await svc.send(o)
            journal = [f["event"] for _, f in svc.store.journal() if o.client_order_id in f["data"]]
            assert "unknown" in journal, "client_order_id must be unique: resolved by query, not rejected"
            await until(lambda: svc.orders[o.client_order_id].status is OrderStatus.NEW)
            assert sim.counts["new_orders"] == 1

    asyncio.run(go())


# -- trade_updates disconnect ----------------------------------------------------------------------------------
def test_stream_disconnect_reconnects_reauths_and_recovers_missed_fills_once(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as (sim, svc):
            adapter: AlpacaAdapter = svc.adapter  # type: ignore[assignment]
            bid = sim.exchange.markets["BTC/USD"].book_levels()[0][0][0]
            o = order(0.01, round(bid * 0.9, 1))
            coid = o.client_order_id
            svc.accept(o)
            await svc.send(o)
            assert svc.orders[coid].status is OrderStatus.NEW
            assert adapter.stream_connects == 1 and sim.counts["stream_auths"] == 1
            assert await sim.disconnect_streams(down_s=0.5) == 1
            sim.force_fill(coid, 0.004)  # nobody is listening: the event is lost
            await asyncio.sleep(0.1)
            assert svc.orders[coid].filled_qty == 0.0
            await until(lambda: getattr(svc.last_reconcile, "why", "") == "reconnect", timeout=8)
            assert sim.counts["stream_auths"] == 2 and adapter.stream_connects == 2, "re-authenticated"
            assert len(sim.sockets) == 1, "listening to trade_updates again"
            rep = svc.last_reconcile
            assert rep.orders_changed == [coid] and len(rep.fills_recovered) == 1
            assert svc.orders[coid].status is OrderStatus.PARTIALLY_FILLED
            assert svc.orders[coid].filled_qty == pytest.approx(0.004)
            sim.force_fill(coid, 0.006)  # the stream is back: this one arrives as an event
            await until(lambda: coid not in svc.orders)
            final = svc.store.load_order(coid)
            assert final.status is OrderStatus.FILLED and final.filled_qty == pytest.approx(0.01)
            again = await svc.reconcile("check")
            assert again.fills_swept == 2 and not again.fills_recovered and not again.position_differences
            fills = [f for f in svc.store.journal_fills() if f.client_order_id == coid]
            assert len(fills) == 2 and len({f.trade_id for f in fills}) == 2, "no fill lost or doubled"
            assert sum(f.qty for f in fills) == pytest.approx(0.01)
            pos = {p.symbol: p.qty for p in svc.store.positions()}
            assert pos["BTC/USD"] == pytest.approx(sim.positions["BTC/USD"])

    asyncio.run(go())
