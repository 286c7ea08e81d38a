"""Notional orders (an amount of quote currency): the venue decides the quantity, the venue's word completes them.

Alpaca `notional`, Binance `quoteOrderQty`, the paper venue; over real sockets against the simulator.
Risk's quantity estimate (`Order.qty`) is deliberately wrong in some tests: the order still ends FILLED
with its true quantity, and positions follow the fills.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from actors.gateway import GatewayService
from cluster.config import VenueSection
from cluster.messages import BookUpdate, Fill, Order, OrderStatus, OrderType, Side, TimeInForce
from cluster.state_store import StateStore
from gateways.alpaca.trading import AlpacaAdapter, fmt_amount
from gateways.order_state import InvalidTransition, OrderStateMachine
from gateways.secrets import Credentials
from gateways.venue_adapter import VenueOrder, report, reports_from_truth
from tests import test_alpaca_trading as alp
from tests.test_binance_trading import rig as binance_rig
from tests.test_binance_trading import stored, until

sm = OrderStateMachine()


def notional_order(venue: str, symbol: str, notional: float, estimate: float, side: Side = Side.BUY,
                   otype: OrderType = OrderType.MARKET, prefix: str = "bt") -> Order:
    return Order(client_order_id=f"{prefix}-n{time.time_ns():x}", strategy="s1", venue=venue, symbol=symbol, side=side,
                 qty=estimate, order_type=otype, price=None if otype is OrderType.MARKET else 1.0,
                 notional=notional, created_ts_ns=time.time_ns())


def fill(coid: str, qty: float, price: float = 100.0, tid: str = "t1") -> Fill:
    return Fill(client_order_id=coid, trade_id=tid, strategy="s", venue="v", symbol="X", side=Side.BUY, price=price,
                qty=qty)


# -- the state machine ------------------------------------------------------------------------------------------
def test_notional_order_is_completed_by_the_venue_not_by_its_estimate() -> None:
    o = Order(client_order_id="n1", strategy="s", venue="v", symbol="X", side=Side.BUY, qty=1.0,
              order_type=OrderType.MARKET, notional=100.0, status=OrderStatus.NEW)
    a = sm.apply_fill(o, fill("n1", 0.6, tid="a"))
    assert a.status is OrderStatus.PARTIALLY_FILLED
    b = sm.apply_fill(a, fill("n1", 0.6, tid="b"))  # past the estimate: no overfill error, still open
    assert b.status is OrderStatus.PARTIALLY_FILLED and b.filled_qty == pytest.approx(1.2) and b.qty == pytest.approx(1.2)
    done = sm.apply_fill(b, fill("n1", 0.1, tid="c"), venue_done=True)
    assert done.status is OrderStatus.FILLED and done.qty == pytest.approx(1.3) and done.remaining == 0.0
    # Fewer than estimated: the venue says filled, the quantity shrinks to what was filled.
    short = sm.apply_fill(o, fill("n1", 0.4))
    closed = sm.complete_notional(short)
    assert closed.status is OrderStatus.FILLED and closed.qty == pytest.approx(0.4)
    with pytest.raises(InvalidTransition):
        sm.complete_notional(o)  # no fills yet
    with pytest.raises(InvalidTransition):
        sm.complete_notional(msgspec.structs.replace(short, notional=None))
    with pytest.raises(InvalidTransition):  # a quantity order still refuses an overfill
        sm.apply_fill(msgspec.structs.replace(o, notional=None), fill("n1", 1.5))


def test_query_completes_a_notional_order_whose_fills_all_arrived_before(redis_url: str) -> None:
    """Every fill is known (say from the fill sweep) but nothing said FILLED: the venue's status does."""
    svc = GatewayService("paper", VenueSection(), StateStore.from_url(redis_url, "pq"))
    o = Order(client_order_id="pq-1", strategy="s", venue="paper", symbol="X", side=Side.BUY, qty=1.0,
              order_type=OrderType.MARKET, notional=100.0, status=OrderStatus.NEW, created_ts_ns=time.time_ns())
    svc.orders[o.client_order_id] = o
    f1 = msgspec.structs.replace(fill("pq-1", 0.7, tid="x1"), venue="paper", symbol="X")
    svc.apply(report(o, OrderStatus.PARTIALLY_FILLED, fill=f1))
    assert svc.orders["pq-1"].status is OrderStatus.PARTIALLY_FILLED
    truth = VenueOrder("pq-1", "X", OrderStatus.FILLED, 0.7, fills=[f1])
    applied = svc.apply_all(reports_from_truth(svc.orders["pq-1"], truth))
    assert [r.status for r in applied] == [OrderStatus.FILLED]
    final = svc.store.load_order("pq-1")
    assert final.status is OrderStatus.FILLED and final.qty == pytest.approx(0.7)
    assert svc.counters["duplicate_fills"] == 1


# -- Binance quoteOrderQty ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimate_factor", [1.0, 0.2, 3.0])
def test_binance_quote_order_qty_fills_its_true_quantity(redis_url: str, estimate_factor: float) -> None:
    async def go() -> None:
        async with binance_rig(redis_url) as r:
            bid, ask = r.book()
            o = notional_order("binance", "BTCUSDT", 500.0, estimate_factor * 500.0 / ask)
            r.service.accept(o)
            await r.service.send(o)
            sim_order = r.sim.orders[o.client_order_id]
            assert sim_order.quote_order_qty == 500.0 and sim_order.otype == "MARKET"
            final = stored(r, o.client_order_id)
            true_qty = sim_order.order.filled_qty
            assert final.status is OrderStatus.FILLED
            assert final.qty == pytest.approx(true_qty) and final.filled_qty == pytest.approx(true_qty)
            assert 0.9 * 500.0 <= true_qty * final.avg_fill_price <= 500.0
            await until(lambda: r.service.counters["duplicate_fills"] >= 1, what="the stream's copy")
            fills = [f for f in r.store.journal_fills() if f.client_order_id == o.client_order_id]
            assert sum(f.qty for f in fills) == pytest.approx(true_qty)
            pos = {p.symbol: p.qty for p in r.store.positions()}
            assert pos["BTCUSDT"] == pytest.approx(true_qty)
            assert r.service.counters["invalid_reports"] == 0

    asyncio.run(go())


def test_binance_quote_order_qty_resolved_by_query_after_5xx(redis_url: str) -> None:
    async def go() -> None:
        async with binance_rig(redis_url) as r:
            await r.adapter.user_stream.close()
            r.sim.faults.new_5xx = 1
            _, ask = r.book()
            o = notional_order("binance", "BTCUSDT", 300.0, 0.5 * 300.0 / ask)
            r.service.accept(o)
            await r.service.send(o)
            await until(lambda: o.client_order_id not in r.service.orders, what="resolution")
            final = stored(r, o.client_order_id)
            assert final.status is OrderStatus.FILLED
            assert final.qty == pytest.approx(r.sim.orders[o.client_order_id].order.filled_qty)
            assert r.sim.counts["new_orders"] == 1

    asyncio.run(go())


def test_binance_notional_orders_the_venue_would_refuse_are_refused_locally(redis_url: str) -> None:
    async def go() -> None:
        async with binance_rig(redis_url) as r:
            tiny = notional_order("binance", "BTCUSDT", 5.0, 0.0001)  # below MIN_NOTIONAL 10
            limit = notional_order("binance", "BTCUSDT", 500.0, 0.01, otype=OrderType.LIMIT)
            for o in (tiny, limit):
                r.service.accept(o)
                await r.service.send(o)
            assert "MIN_NOTIONAL" in stored(r, tiny.client_order_id).reason
            assert "must be a MARKET order" in stored(r, limit.client_order_id).reason
            assert r.sim.counts["new_orders"] == 0

    asyncio.run(go())


# -- Alpaca notional ------------------------------------------------------------------------------------------------
def test_alpaca_body_sends_notional_instead_of_qty() -> None:
    ad = AlpacaAdapter("alpaca", "http://x", "ws://x", Credentials("alpaca", "k", "s"))
    eq = notional_order("alpaca", "AAPL", 500.75, 2.6)
    body = ad.order_body(eq)
    assert body["notional"] == "500.75" and "qty" not in body
    assert body["type"] == "market" and body["time_in_force"] == "day", "fractional equity orders are day orders"
    crypto = ad.order_body(msgspec.structs.replace(eq, symbol="BTC/USD", tif=TimeInForce.IOC))
    assert crypto["time_in_force"] == "ioc"
    plain = ad.order_body(msgspec.structs.replace(eq, notional=None, qty=0.000012345678912))
    assert plain["qty"] == "0.000012345" and "notional" not in plain  # 9 decimals at most, never 1.2e-05
    assert fmt_amount(1e-05) == "0.00001"
    with pytest.raises(ValueError):
        ad.order_body(msgspec.structs.replace(eq, order_type=OrderType.LIMIT, price=190.0))


def test_alpaca_notional_order_fills_its_true_quantity_via_trade_updates(redis_url: str) -> None:
    async def go() -> None:
        async with alp.rig(redis_url) as (sim, svc):
            ask = sim.exchange.markets["BTC/USD"].book_levels()[1][0][0]
            o = notional_order("alpaca", "BTC/USD", 1000.0, 0.25 * 1000.0 / ask, prefix="al")
            svc.accept(o)
            await svc.send(o)
            venue_order = sim.orders[o.client_order_id]
            assert venue_order["notional"] == "1000" and venue_order["qty"] is None
            await until(lambda: o.client_order_id not in svc.orders, what="the fill event")
            final = svc.store.load_order(o.client_order_id)
            true_qty = float(venue_order["filled_qty"])
            assert final.status is OrderStatus.FILLED and venue_order["status"] == "filled"
            assert final.qty == pytest.approx(true_qty) and final.filled_qty == pytest.approx(true_qty)
            assert true_qty * final.avg_fill_price == pytest.approx(1000.0, rel=1e-6)
            assert {p.symbol: p.qty for p in svc.store.positions()}["BTC/USD"] == pytest.approx(true_qty)

    asyncio.run(go())


def test_alpaca_notional_order_resolved_by_query_with_its_fills(redis_url: str) -> None:
    async def go() -> None:
        async with alp.rig(redis_url) as (sim, svc):
            svc.adapter.stream_task.cancel()  # type: ignore[attr-defined]
            sim.faults.new_5xx = 1
            ask = sim.exchange.markets["BTC/USD"].book_levels()[1][0][0]
            o = notional_order("alpaca", "BTC/USD", 800.0, 2.0 * 800.0 / ask, prefix="al")
            svc.accept(o)
            await svc.send(o)
            await until(lambda: o.client_order_id not in svc.orders, what="resolution")
            final = svc.store.load_order(o.client_order_id)
            assert final.status is OrderStatus.FILLED
            assert final.qty == pytest.approx(float(sim.orders[o.client_order_id]["filled_qty"]))
            assert sim.counts["new_orders"] == 1

    asyncio.run(go())


# -- paper ------------------------------------------------------------------------------------------------------------
def test_paper_notional_order_fills_its_estimate_and_closes(redis_url: str) -> None:
    async def go() -> None:
        svc = GatewayService("paper", VenueSection(), StateStore.from_url(redis_url, "pn"))
        svc.restore()
        await svc.start()
        svc.on_book(BookUpdate(venue="paper", symbol="X", seq=1, bids=[(99.0, 5.0)], asks=[(101.0, 5.0)]))
        o = Order(client_order_id="pn-1", strategy="s", venue="paper", symbol="X", side=Side.BUY, qty=1.5,
                  order_type=OrderType.MARKET, notional=151.5, created_ts_ns=time.time_ns())
        svc.accept(o)
        await svc.send(o)
        final = svc.store.load_order("pn-1")
        assert final.status is OrderStatus.FILLED and final.qty == pytest.approx(1.5)
        assert "pn-1" not in svc.orders
        await svc.close()

    asyncio.run(go())
