"""Reconciliation against the simulator: orphans canceled, balance differences reported."""

from __future__ import annotations

import asyncio

from cluster.messages import Fill, Side
from gateways.binance.trading import BinanceRest
from gateways.reconcile import expected_balance_change
from tests.test_binance_trading import CREDS, order, rig


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
