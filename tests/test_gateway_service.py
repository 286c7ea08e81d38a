"""GatewayService with the paper venue behind the adapter interface: the spine's behaviour, kept."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors.gateway import GatewayRejected, GatewayService
from cluster.config import VenueSection
from cluster.messages import BookUpdate, Order, OrderStatus, OrderType, Side
from cluster.state_store import StateStore
from gateways.venue_adapter import PaperAdapter


def book(seq: int = 1) -> BookUpdate:
    return BookUpdate(venue="paper", symbol="X", seq=seq, bids=[(99.0, 5.0)], asks=[(101.0, 5.0)])


def order(coid: str, price: float | None = 100.0, qty: float = 1.0, side: Side = Side.BUY) -> Order:
    return Order(client_order_id=coid, strategy="s", venue="paper", symbol="X", side=side, qty=qty,
                 order_type=OrderType.LIMIT if price else OrderType.MARKET, price=price, created_ts_ns=time.time_ns())


def service(redis_url: str) -> GatewayService:
    svc = GatewayService("paper", VenueSection(), StateStore.from_url(redis_url, "gw"))
    assert isinstance(svc.adapter, PaperAdapter)
    svc.restore()
    return svc


def test_paper_orders_fill_rest_and_cancel_through_the_one_state_machine(redis_url: str) -> None:
    async def go() -> None:
        svc = service(redis_url)
        emitted: list = []
        svc.emit = emitted.extend
        await svc.start()
        svc.on_book(book())
        taker = order("gw-1", price=None, qty=2.0)
        svc.accept(taker)
        await svc.send(taker)
        assert svc.store.load_order("gw-1").status is OrderStatus.FILLED
        resting = order("gw-2", price=100.0)
        svc.accept(resting)
        await svc.send(resting)
        assert svc.orders["gw-2"].status is OrderStatus.NEW
        with pytest.raises(GatewayRejected):
            svc.accept(resting)
        assert svc.request_cancel("gw-2")
        await svc.cancel_at_venue("gw-2")
        assert svc.store.load_order("gw-2").status is OrderStatus.CANCELED
        assert [r.status for r in emitted if r.client_order_id == "gw-2"] == [OrderStatus.NEW, OrderStatus.CANCELED]
        assert all(r.strategy == "s" for r in emitted)

    asyncio.run(go())


def test_restart_restores_acknowledged_orders_and_cancels_unsent_ones(redis_url: str) -> None:
    async def go() -> None:
        svc = service(redis_url)
        await svc.start()
        svc.on_book(book())
        rest, unsent = order("gw-3", price=100.0), order("gw-4", price=100.0)
        svc.accept(rest)
        await svc.send(rest)
        svc.accept(unsent)  # journaled, never sent: the paper venue dies with the process
        again = service(redis_url)
        assert "gw-3" in again.orders and "gw-4" not in again.orders
        assert again.store.load_order("gw-4").status is OrderStatus.CANCELED
        await again.start()
        again.on_book(BookUpdate(venue="paper", symbol="X", seq=2, bids=[(99.0, 5.0)], asks=[(100.0, 5.0)]))
        assert again.store.load_order("gw-3").status is OrderStatus.FILLED
        # The fill position survives in Redis and is loaded by the next incarnation.
        third = service(redis_url)
        assert third.portfolio.positions  # type: ignore[attr-defined]

    asyncio.run(go())


def test_duplicate_trade_ids_are_counted_once(redis_url: str) -> None:
    async def go() -> None:
        svc = service(redis_url)
        await svc.start()
        svc.on_book(book())
        o = order("gw-5", price=None, qty=1.0)
        svc.accept(o)
        reports = await svc.adapter.submit(svc.orders["gw-5"])
        svc.apply_all(reports)
        assert svc.apply_all([r for r in reports if r.fill is not None]) == []
        assert svc.counters["duplicate_fills"] >= 1
        assert len(svc.store.journal_fills()) == 1

    asyncio.run(go())
