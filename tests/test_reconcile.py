"""Reconciliation against the simulator: orphans canceled, balance differences reported, missed fills swept."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from actors.gateway import GatewayService
from cluster.config import VenueSection
from cluster.messages import Fill, OrderStatus, OrderType, Side
from gateways.alpaca.trading import AlpacaAdapter
from gateways.binance.trading import BinanceRest
from gateways.reconcile import expected_balance_change
from gateways.secrets import Credentials
from gateways.venue_sim.alpaca_trading import SIM_KEY_ID, SIM_SECRET_KEY
from tests import test_alpaca_trading as alp
from tests.test_binance_trading import CREDS, make_service, order, rig, simulator


def test_expected_balance_change_from_fills() -> None:
    fills = [Fill(client_order_id="a", trade_id="1", strategy="s", venue="b", symbol="BTCUSDT", side=Side.BUY,
                  price=100.0, qty=2.0, fee=0.2)]
    assert expected_balance_change(fills) == {"BTC": 2.0, "USDT": -200.2}


def test_orphan_order_with_our_prefix_is_canceled_and_foreign_one_left(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as r:
            bid, _ = r.book()
            rest = BinanceRest(r.url, CREDS)
            await rest.start()
            for coid in ("bt-orphan1", "someone-else"):
                await rest.request("POST", "/api/v3/order", [
                    ("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
                    ("quantity", "0.01"), ("price", f"{round(bid * 0.9, 1)}"), ("newClientOrderId", coid)], signed=True)
            await rest.close()
            rep = await r.service.reconcile("test")
            assert rep.orphans_canceled == ["bt-orphan1"]
            assert rep.foreign_open_orders == ["someone-else"]
            assert r.sim.orders["bt-orphan1"].status == "CANCELED"
            assert r.sim.orders["someone-else"].status == "NEW"

    asyncio.run(go())


def test_balance_change_not_explained_by_journaled_fills_is_reported(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as r:
            first = await r.service.reconcile("test")
            assert first.balances["USDT"] > 0 and not first.balance_differences
            o = order(qty=0.01, otype=order().order_type.MARKET)
            r.service.accept(o)
            await r.service.send(o)
            explained = await r.service.reconcile("test")
            assert not explained.balance_differences, explained.balance_differences
            r.sim.accounts[CREDS.api_key].balances["USDT"] -= 500.0  # a withdrawal the journal knows nothing of
            rep = await r.service.reconcile("test")
            assert rep.balance_differences["USDT"] == -500.0

    asyncio.run(go())


# -- the fill sweep: every execution since the last one, for all orders ----------------------------------------------
def _venue_positions_binance(sim) -> dict[str, float]:
    out: dict[str, float] = {}
    for t in sim.trades:
        out[t["symbol"]] = out.get(t["symbol"], 0.0) + (1 if t["isBuyer"] else -1) * float(t["qty"])
    return out


def _our_positions(store) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in store.positions():
        out[p.symbol] = out.get(p.symbol, 0.0) + p.qty
    return out


def test_binance_gateway_down_orders_fill_at_the_venue_restart_positions_equal_the_venue(redis_url: str) -> None:
    async def go() -> None:
        async with simulator() as (sim, url):
            first = make_service(url, redis_url)
            first.restore()
            await first.start()
            btc = sim.exchange.markets["BTCUSDT"].book_levels()
            eth = sim.exchange.markets["ETHUSDT"].book_levels()
            a = order(qty=0.02, price=round(btc[0][0][0] * 0.95, 1))
            b = order(symbol="ETHUSDT", qty=0.5, price=round(eth[0][0][0] * 0.95, 2))
            c = order(side=Side.SELL, qty=0.01, price=round(btc[1][0][0] * 1.05, 1))
            for o in (a, b, c):
                first.accept(o)
                await first.send(o)
            await first.close()  # the gateway is down
            sim.force_fill(a.client_order_id, 0.02)
            sim.force_fill(b.client_order_id, 0.2)
            sim.force_fill(b.client_order_id, 0.3)
            sim.force_fill(c.client_order_id, 0.01)
            second = make_service(url, redis_url)
            second.restore()
            await second.start()
            rep = second.last_reconcile
            assert rep is not None and rep.why == "start"
            assert not second.orders and second.store.open_orders() == []
            for o in (a, b, c):
                assert second.store.load_order(o.client_order_id).status is OrderStatus.FILLED
            assert sorted(rep.fills_recovered) == sorted(str(t["id"]) for t in sim.trades)
            venue = _venue_positions_binance(sim)
            ours = _our_positions(second.store)
            assert set(ours) == set(venue)
            for sym, qty in venue.items():
                assert ours[sym] == pytest.approx(qty)
            fills = second.store.journal_fills()
            assert len(fills) == len(sim.trades) == len({f.trade_id for f in fills})
            again = await second.reconcile("check")  # from the last trade id seen: nothing new
            assert again.clean and again.fills_swept == 0
            assert len(second.store.journal_fills()) == len(fills)
            await second.close()

    asyncio.run(go())


def test_sweep_repairs_a_terminal_order_and_records_unjournaled_ones_but_not_foreign_fills(redis_url: str) -> None:
    async def go() -> None:
        async with simulator() as (sim, url):
            first = make_service(url, redis_url)
            first.restore()
            await first.start()
            bid = sim.exchange.markets["BTCUSDT"].book_levels()[0][0][0]
            o = order(qty=0.03, price=round(bid * 0.95, 1))
            first.accept(o)
            await first.send(o)
            await first.close()
            # While the gateway is down the venue fills the order, and Redis's last word on it is wrong
            # (a lost write): it says canceled, so no restart will query it as an open order.
            sim.force_fill(o.client_order_id, 0.03)
            first.store.record_order(msgspec.structs.replace(first.store.load_order(o.client_order_id),
                                                             status=OrderStatus.CANCELED))
            rest = BinanceRest(url, CREDS)
            await rest.start()
            for coid in ("bt-lost1", "someone-else-1"):  # ours but never journaled; another client's
                await rest.request("POST", "/api/v3/order", [
                    ("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.01"),
                    ("newClientOrderId", coid)], signed=True)
            await rest.close()
            second = make_service(url, redis_url)
            second.restore()
            assert not second.orders
            await second.start()
            rep = second.last_reconcile
            assert rep.terminal_orders_repaired == [o.client_order_id]
            repaired = second.store.load_order(o.client_order_id)
            assert repaired.status is OrderStatus.FILLED and repaired.filled_qty == pytest.approx(0.03)
            lost_ids = {str(t["id"]) for t in sim.trades if t["orderId"] == sim.orders["bt-lost1"].order_id}
            other_ids = {str(t["id"]) for t in sim.trades if t["orderId"] == sim.orders["someone-else-1"].order_id}
            assert set(rep.unattributed_fills) == lost_ids and set(rep.foreign_fills) == other_ids
            assert second.store.load_order("bt-lost1").strategy == "unknown"
            journaled = {f.trade_id for f in second.store.journal_fills()}
            assert lost_ids <= journaled and not (other_ids & journaled), "another client's fills are not ours"
            pos = {(p.strategy, p.symbol): p.qty for p in second.store.positions()}
            assert pos[("s1", "BTCUSDT")] == pytest.approx(0.03)
            assert pos[("unknown", "BTCUSDT")] == pytest.approx(0.01)
            stored_rep = msgspec.json.decode(second.store.r.get(second.store.key("reconcile:binance")))
            assert stored_rep["terminal_orders_repaired"] == [o.client_order_id]
            await second.close()

    asyncio.run(go())


def test_fresh_redis_starts_the_sweep_cursor_without_adopting_old_venue_fills(redis_url: str) -> None:
    async def go() -> None:
        async with simulator() as (sim, url):
            rest = BinanceRest(url, CREDS)
            await rest.start()
            await rest.request("POST", "/api/v3/order", [
                ("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.01"),
                ("newClientOrderId", "bt-from-an-old-run")], signed=True)
            await rest.close()
            svc = make_service(url, redis_url)
            svc.restore()
            await svc.start()
            assert svc.last_reconcile.fills_swept == 0 and svc.store.journal_fills() == []
            assert svc.store.r.hget(svc.store.key("fills:cursor:binance"), "ts_ns") is not None
            await svc.close()

    asyncio.run(go())


def test_alpaca_gateway_down_fills_recovered_positions_equal_the_venue(redis_url: str) -> None:
    async def go() -> None:
        async with alp.rig(redis_url) as (sim, first):
            bid = sim.exchange.markets["BTC/USD"].book_levels()[0][0][0]
            a, b = alp.order(0.01, round(bid * 0.9, 1)), alp.order(0.02, round(bid * 0.89, 1))
            for o in (a, b):
                first.accept(o)
                await first.send(o)
            url = first.adapter.rest_url  # type: ignore[attr-defined]
            await first.close()
            sim.force_fill(a.client_order_id, 0.01)
            sim.force_fill(b.client_order_id, 0.005)
            sim.force_fill(b.client_order_id, 0.015)
            adapter = AlpacaAdapter("alpaca", url, url.replace("http", "ws") + "/stream",
                                    Credentials("alpaca", SIM_KEY_ID, SIM_SECRET_KEY))
            second = GatewayService("alpaca", VenueSection(type="alpaca", rest_url=url), first.store, adapter=adapter)
            second.restore()
            await second.start()
            rep = second.last_reconcile
            assert len(rep.fills_recovered) == 3 and not rep.position_differences
            assert second.store.open_orders() == []
            assert _our_positions(second.store)["BTC/USD"] == pytest.approx(sim.positions["BTC/USD"])
            # Someone else trades on the account: reported as a position difference, never adopted.
            foreign = adapter.order_body(alp.order(0.003, otype=OrderType.MARKET))
            foreign["client_order_id"] = "manual-from-the-web-ui"
            await adapter.request("POST", "/v2/orders", body=foreign)
            rep = await second.reconcile("check")
            assert len(rep.foreign_fills) == 1 and not rep.fills_recovered
            assert rep.position_differences["BTC/USD"] == pytest.approx(0.003)
            await second.close()

    asyncio.run(go())
