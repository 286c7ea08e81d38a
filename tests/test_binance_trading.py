"""The Binance gateway against the venue simulator over real sockets: signed REST, user stream, faults.

Each test starts the simulator (market data + order entry) on a free port, a real
Redis (conftest), and drives `GatewayService` with a `BinanceAdapter`, as the
gateway actor does, without Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from actors.gateway import GatewayService
from cluster.config import MarketSection, SymbolSection, VenueSection
from cluster.messages import Order, OrderStatus, OrderType, Side, TimeInForce
from cluster.state_store import StateStore
from gateways.binance.trading import BinanceAdapter, BinanceRest
from gateways.binance.user_stream import BinanceUserStream, ws_api_url
from gateways.secrets import Credentials
from gateways.venue_adapter import VenueRejected
from gateways.venue_sim.binance_trading import BINANCE_TRADING, SIM_API_KEY, SIM_API_SECRET, BinanceTradingSim
from gateways.venue_sim.exchange import SimExchange
from gateways.venue_sim.server import create_app, start_server

SYMBOLS = [SymbolSection(symbol="BTCUSDT", venue="binance", price=60000.0, tick_size=0.1, lot_size=0.0001),
           SymbolSection(symbol="ETHUSDT", venue="binance", price=3000.0, tick_size=0.01, lot_size=0.001)]
MODULES = ["gateways.venue_sim.binance_market", "gateways.venue_sim.binance_trading"]
CREDS = Credentials("binance", SIM_API_KEY, SIM_API_SECRET)


@dataclass
class Rig:
    sim: BinanceTradingSim
    url: str
    service: GatewayService
    adapter: BinanceAdapter
    store: StateStore
    reports: list[Any]

    def book(self, symbol: str = "BTCUSDT") -> tuple[float, float]:
        bids, asks = self.sim.exchange.markets[symbol].book_levels()
        return bids[0][0], asks[0][0]


@contextlib.asynccontextmanager
async def simulator() -> AsyncIterator[tuple[BinanceTradingSim, str]]:
    ex = SimExchange(SYMBOLS, MarketSection(updates_per_second=20))
    app = create_app(ex, MODULES)
    runner, port = await start_server(app)
    try:
        yield app[BINANCE_TRADING], f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def make_service(url: str, redis_url: str, timeout_s: float = 1.0, cluster: str = "bt") -> GatewayService:
    adapter = BinanceAdapter("binance", url, url.replace("http", "ws"), CREDS, recv_window_ms=5000,
                             timeout_s=timeout_s)
    cfg = VenueSection(type="binance", rest_url=url, order_timeout_s=timeout_s)
    return GatewayService("binance", cfg, StateStore.from_url(redis_url, cluster), adapter=adapter)


@contextlib.asynccontextmanager
async def rig(redis_url: str, timeout_s: float = 1.0) -> AsyncIterator[Rig]:
    async with simulator() as (sim, url):
        service = make_service(url, redis_url, timeout_s)
        reports: list[Any] = []
        service.emit = reports.extend
        service.restore()
        await service.start()
        try:
            yield Rig(sim, url, service, service.adapter, service.store, reports)  # type: ignore[arg-type]
        finally:
            await service.close()


_n = 0


def order(symbol: str = "BTCUSDT", side: Side = Side.BUY, qty: float = 0.01, price: float | None = None,
          otype: OrderType = OrderType.LIMIT, tif: TimeInForce = TimeInForce.GTC, cluster: str = "bt") -> Order:
    global _n
    _n += 1
    return Order(client_order_id=f"{cluster}-{time.time_ns():x}{_n}", strategy="s1", venue="binance", symbol=symbol,
                 side=side, qty=qty, order_type=otype, price=price, tif=tif, created_ts_ns=time.time_ns())


async def until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def stored(r: Rig, coid: str) -> Order:
    o = r.store.load_order(coid)
    assert o is not None
    return o


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- signed REST ---------------------------------------------------------------------------------------
def test_signed_requests_are_verified_by_the_simulator(redis_url: str) -> None:
    async def go() -> None:
        async with simulator() as (sim, url):
            good = BinanceRest(url, CREDS)
            await good.start()
            acct = await good.request("GET", "/api/v3/account", signed=True)
            assert acct["balances"]
            bad = BinanceRest(url, Credentials("binance", SIM_API_KEY, "wrong-secret"))
            await bad.start()
            with pytest.raises(VenueRejected) as exc:
                await bad.request("GET", "/api/v3/account", signed=True)
            assert exc.value.code == -1022
            assert sim.counts["bad_signatures"] == 1
            # A clock far behind the venue's: outside recvWindow, the venue refuses with -1021.
            good.time_offset_ms = -60_000
            with pytest.raises(VenueRejected) as exc:
                await good.request("GET", "/api/v3/account", signed=True)
            assert exc.value.code == -1021
            assert abs(good.time_offset_ms) < 1000, "a -1021 resynchronizes the server-time offset"
            await good.close()
            await bad.close()

    run(go())


def test_limit_order_rests_then_cancel(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as r:
            bid, _ = r.book()
            o = order(price=round(bid * 0.95, 1))
            r.service.accept(o)
            await r.service.send(o)
            cur = r.service.orders[o.client_order_id]
            assert cur.status is OrderStatus.NEW and cur.venue_order_id
            assert stored(r, o.client_order_id).status is OrderStatus.NEW
            assert r.service.request_cancel(o.client_order_id)
            await r.service.cancel_at_venue(o.client_order_id)
            assert stored(r, o.client_order_id).status is OrderStatus.CANCELED
            events = [f["event"] for _, f in r.store.journal() if o.client_order_id.encode().decode() in f["data"]]
            assert events[0] == "submit" and "cancel_requested" in events and events[-1] == "canceled"

    run(go())


def test_marketable_order_fills_once_from_rest_and_stream(redis_url: str) -> None:
    """FULL response and executionReport both carry the fills: each trade id is counted once."""
    async def go() -> None:
        async with rig(redis_url) as r:
            o = order(qty=0.05, otype=OrderType.MARKET)
            r.service.accept(o)
            await r.service.send(o)
            await until(lambda: r.service.counters["duplicate_fills"] >= 1, what="the stream's copy of the fills")
            final = stored(r, o.client_order_id)
            assert final.status is OrderStatus.FILLED and final.filled_qty == pytest.approx(0.05)
            fills = [f for f in r.store.journal_fills() if f.client_order_id == o.client_order_id]
            assert sum(f.qty for f in fills) == pytest.approx(0.05)
            assert len({f.trade_id for f in fills}) == len(fills)
            pos = {p.symbol: p for p in r.store.positions()}["BTCUSDT"]
            assert pos.qty == pytest.approx(0.05) and pos.strategy == "s1"

    run(go())


def test_filters_reject_locally_with_the_filter_name(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as r:
            bid, _ = r.book()
            tiny = order(qty=0.0001, price=round(bid * 0.9, 1))  # 0.0001 * ~54000 = 5.4 < minNotional 10
            far = order(qty=0.01, price=round(bid * 0.1, 1))  # below 0.2 x average price
            for o in (tiny, far):
                r.service.accept(o)
                await r.service.send(o)
            assert "MIN_NOTIONAL" in stored(r, tiny.client_order_id).reason
            assert stored(r, tiny.client_order_id).status is OrderStatus.REJECTED
            assert "PERCENT_PRICE" in stored(r, far.client_order_id).reason
            assert r.sim.counts["new_orders"] == 0, "nothing the venue would refuse was sent"
            # Off-grid price and quantity are rounded, not refused: buy price down to the tick, qty down to the step.
            odd = order(qty=0.012345, price=bid * 0.95 + 0.037)
            r.service.accept(odd)
            await r.service.send(odd)
            sent = r.sim.orders[odd.client_order_id].order
            assert sent.qty == pytest.approx(0.0123) and round(sent.price / 0.1, 6).is_integer()

    run(go())


def test_venue_rejection_carries_the_venue_message(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as r:
            bid, _ = r.book()
            o = order(qty=50.0, price=round(bid * 0.9, 1))  # passes filters, exceeds the USDT balance
            r.service.accept(o)
            await r.service.send(o)
            final = stored(r, o.client_order_id)
            assert final.status is OrderStatus.REJECTED
            assert "-2010" in final.reason and "insufficient balance" in final.reason

    run(go())


# -- faults -------------------------------------------------------------------------------------------------
def test_no_response_to_new_order_is_resolved_by_query_without_a_duplicate(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url, timeout_s=0.3) as r:
            r.adapter.user_stream_enabled = False
            r.sim.faults.drop_new_response = 1
            r.sim.faults.drop_hold_s = 1.0
            bid, _ = r.book()
            o = order(price=round(bid * 0.95, 1))
            r.service.accept(o)
            await r.service.send(o)
            journal = [f["event"] for _, f in r.store.journal() if o.client_order_id in f["data"]]
            assert "unknown" in journal
            await until(lambda: r.service.orders[o.client_order_id].status is OrderStatus.NEW, what="resolution")
            assert r.sim.counts["new_orders"] == 1, "the order was never sent twice"
            assert r.sim.counts["queries"] >= 1

    run(go())


def test_5xx_on_new_order_is_unknown_then_resolved_with_its_fills(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as r:
            await r.adapter.user_stream.close()  # only the query can tell
            r.sim.faults.new_5xx = 1
            o = order(qty=0.02, otype=OrderType.MARKET)
            r.service.accept(o)
            await r.service.send(o)
            await until(lambda: o.client_order_id not in r.service.orders, what="resolution")
            final = stored(r, o.client_order_id)
            assert final.status is OrderStatus.FILLED and final.filled_qty == pytest.approx(0.02)
            assert r.sim.counts["new_orders"] == 1
            assert sum(f.qty for f in r.store.journal_fills()) == pytest.approx(0.02)

    run(go())


def test_429_on_new_order_is_sent_again_after_retry_after_with_the_same_id(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url, timeout_s=3.0) as r:
            limits: list[Any] = []
            r.service.on_limit = limits.append
            bid, _ = r.book()
            r.sim.faults.next_429 = 1
            r.sim.faults.retry_after_s = 1
            o = order(price=round(bid * 0.95, 1))
            r.service.accept(o)
            t0 = time.monotonic()
            await r.service.send(o)
            assert time.monotonic() - t0 >= 0.9, "it waited for the venue's Retry-After"
            final = r.service.orders[o.client_order_id]
            assert final.status is OrderStatus.NEW and final.venue_order_id
            assert r.sim.counts["refused_429"] == 1 and r.sim.counts["new_orders"] == 1
            assert list(r.sim.orders) == [o.client_order_id], "one order at the venue, under the same id"
            assert r.service.counters["send_retries"] == 1
            assert [lim.state.value for lim in limits] == ["backoff", "ok"], "risk is told of the back-off"
            events = [f["event"] for _, f in r.store.journal() if o.client_order_id in f["data"]]
            assert events[:2] == ["submit", "send_retry"] and "new" in events

    run(go())


def test_429_back_off_longer_than_the_order_timeout_rejects_it_saying_why(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url, timeout_s=1.0) as r:
            bid, _ = r.book()
            r.sim.faults.next_429 = 1
            r.sim.faults.retry_after_s = 5
            o = order(price=round(bid * 0.95, 1))
            r.service.accept(o)
            await r.service.send(o)
            final = stored(r, o.client_order_id)
            assert final.status is OrderStatus.REJECTED
            assert "429" in final.reason and "outlasts the order timeout" in final.reason
            assert r.sim.counts["new_orders"] == 0

    run(go())


def test_retry_whose_first_attempt_arrived_is_resolved_by_query_not_placed_twice(redis_url: str) -> None:
    """The venue placed the order but answered 429: before resending, the query finds it; nothing is resent."""
    async def go() -> None:
        async with rig(redis_url, timeout_s=3.0) as r:
            await r.adapter.user_stream.close()  # only the query can tell
            bid, _ = r.book()
            r.sim.faults.accept_then_429 = 1
            r.sim.faults.retry_after_s = 1
            o = order(price=round(bid * 0.95, 1))
            r.service.accept(o)
            await r.service.send(o)
            await until(lambda: r.service.orders[o.client_order_id].status is OrderStatus.NEW, what="resolution")
            assert r.sim.counts["new_orders"] == 1, "never two orders at the venue"
            assert r.sim.counts["queries"] >= 1
            journal = [f["event"] for _, f in r.store.journal() if o.client_order_id in f["data"]]
            assert journal[:3] == ["submit", "send_retry", "new"]
            assert r.service.orders[o.client_order_id].venue_order_id == str(r.sim.orders[o.client_order_id].order_id)

    run(go())


def test_duplicate_client_order_id_answer_is_resolved_by_query(redis_url: str) -> None:
    """The venue already holds an open order with this id: "Duplicate order sent." is UNKNOWN, then a query."""
    async def go() -> None:
        async with rig(redis_url) as r:
            await r.adapter.user_stream.close()
            bid, _ = r.book()
            o = order(price=round(bid * 0.95, 1))
            rest = BinanceRest(r.url, CREDS)
            await rest.start()
            await rest.request("POST", "/api/v3/order", [
                ("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
                ("quantity", "0.01"), ("price", f"{o.price}"), ("newClientOrderId", o.client_order_id)], signed=True)
            await rest.close()
            r.service.accept(o)
            await r.service.send(o)
            journal = [f["event"] for _, f in r.store.journal() if o.client_order_id in f["data"]]
            assert "unknown" in journal
            await until(lambda: r.service.orders[o.client_order_id].status is OrderStatus.NEW, what="resolution")
            assert r.sim.counts["new_orders"] == 1

    run(go())


def test_418_ban_sends_nothing_until_it_ends_then_the_order_goes(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url, timeout_s=4.0) as r:
            limits: list[Any] = []
            r.service.on_limit = limits.append
            bid, _ = r.book()
            r.sim.faults.next_418 = 1
            r.sim.faults.retry_after_s = 2
            a = order(price=round(bid * 0.95, 1))
            r.service.accept(a)
            task = asyncio.ensure_future(r.service.send(a))
            await until(lambda: r.sim.counts["refused_418"] == 1, what="the ban")
            requests_at_ban = r.sim.counts["requests"]
            assert limits and limits[-1].state.value == "banned"
            b = order(price=round(bid * 0.94, 1))  # a second order while banned: it waits too, nothing is sent
            r.service.accept(b)
            task_b = asyncio.ensure_future(r.service.send(b))
            await asyncio.sleep(1.0)
            assert r.sim.counts["requests"] == requests_at_ban, "no request reaches the venue during the ban"
            assert r.service.orders[a.client_order_id].status is OrderStatus.PENDING_NEW
            await asyncio.gather(task, task_b)
            for o in (a, b):
                assert r.service.orders[o.client_order_id].status is OrderStatus.NEW
            assert r.sim.counts["new_orders"] == 2 and r.sim.counts["refused_418"] == 1
            assert limits[-1].state.value == "ok"
            # A ban longer than the order timeout: rejected at once, with the reason, nothing sent.
            r.sim.faults.next_418 = 1
            r.sim.faults.retry_after_s = 30
            c = order(price=round(bid * 0.95, 1))
            r.service.accept(c)
            await r.service.send(c)
            rej = stored(r, c.client_order_id)
            assert rej.status is OrderStatus.REJECTED and "banned" in rej.reason and "outlasts" in rej.reason
            d = order(price=round(bid * 0.95, 1))
            requests = r.sim.counts["requests"]
            r.service.accept(d)
            await r.service.send(d)
            assert "banned" in stored(r, d.client_order_id).reason
            assert r.sim.counts["requests"] == requests, "while banned, refused locally without a request"

    run(go())


def test_cancel_of_an_order_waiting_out_a_back_off_is_local(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url, timeout_s=3.0) as r:
            bid, _ = r.book()
            r.sim.faults.next_429 = 1
            r.sim.faults.retry_after_s = 2
            o = order(price=round(bid * 0.95, 1))
            r.service.accept(o)
            task = asyncio.ensure_future(r.service.send(o))
            await until(lambda: o.client_order_id in r.service.backing_off, what="the back-off")
            assert r.service.request_cancel(o.client_order_id) is False  # nothing to cancel at the venue
            assert await task == []
            assert stored(r, o.client_order_id).status is OrderStatus.CANCELED
            assert r.sim.counts["new_orders"] == 0

    run(go())


def test_partial_fill_then_cancel(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as r:
            bid, _ = r.book()
            o = order(qty=0.02, price=round(bid * 0.95, 1))
            r.service.accept(o)
            await r.service.send(o)
            r.sim.faults.partial_fill_before_cancel = 1
            assert r.service.request_cancel(o.client_order_id)
            await r.service.cancel_at_venue(o.client_order_id)
            await until(lambda: o.client_order_id not in r.service.orders, what="the cancel")
            final = stored(r, o.client_order_id)
            assert final.status is OrderStatus.CANCELED and final.filled_qty == pytest.approx(0.01)
            assert sum(f.qty for f in r.store.journal_fills()) == pytest.approx(0.01)

    run(go())


def test_cancel_that_races_a_fill_ends_filled_with_every_fill(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as r:
            await r.adapter.user_stream.close()  # the fill is only learned by query
            bid, _ = r.book()
            o = order(qty=0.02, price=round(bid * 0.95, 1))
            r.service.accept(o)
            await r.service.send(o)
            r.sim.faults.fill_before_cancel = 1
            r.service.request_cancel(o.client_order_id)
            await r.service.cancel_at_venue(o.client_order_id)
            final = stored(r, o.client_order_id)
            assert final.status is OrderStatus.FILLED and final.filled_qty == pytest.approx(0.02)
            assert sum(f.qty for f in r.store.journal_fills()) == pytest.approx(0.02)

    run(go())


def test_user_stream_disconnect_fills_missed_are_recovered_over_rest(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as r:
            bid, _ = r.book()
            o = order(qty=0.02, price=round(bid * 0.95, 1))
            r.service.accept(o)
            await r.service.send(o)
            await r.sim.disconnect_user_streams(down_s=0.5)
            r.sim._force_fill(r.sim.orders[o.client_order_id], 0.02)  # nobody is listening
            assert r.service.orders[o.client_order_id].filled_qty == 0.0
            await until(lambda: getattr(r.service.last_reconcile, "why", "") == "reconnect", timeout=8,
                        what="reconnect + reconcile")
            assert stored(r, o.client_order_id).status is OrderStatus.FILLED
            assert r.service.counters["reconciles"] >= 2
            rep = msgspec.json.decode(r.store.r.get(r.store.key("reconcile:binance")))
            assert rep["why"] == "reconnect" and rep["orders_changed"] == [o.client_order_id]
            assert rep["fills_recovered"]

    run(go())


def test_gateway_restart_with_orders_open(redis_url: str) -> None:
    """A new gateway process rebuilds from Redis and reconciles: fills made while it was down are recorded."""
    async def go() -> None:
        async with simulator() as (sim, url):
            first = make_service(url, redis_url)
            first.restore()
            await first.start()
            bid = sim.exchange.markets["BTCUSDT"].book_levels()[0][0][0]
            a, b = order(qty=0.02, price=round(bid * 0.95, 1)), order(qty=0.03, price=round(bid * 0.94, 1))
            for o in (a, b):
                first.accept(o)
                await first.send(o)
            await first.close()  # the gateway dies
            sim._force_fill(sim.orders[a.client_order_id], 0.02)
            second = make_service(url, redis_url)
            second.restore()
            assert set(second.orders) == {a.client_order_id, b.client_order_id}
            await second.start()  # reconciles
            assert a.client_order_id not in second.orders
            assert second.store.load_order(a.client_order_id).status is OrderStatus.FILLED
            assert second.orders[b.client_order_id].status is OrderStatus.NEW
            assert sim.counts["new_orders"] == 2
            # Nothing sent twice even if asked: the order is not PENDING_NEW any more.
            assert await second.send(b) == []
            await second.close()

    run(go())


def test_user_stream_subscribes_on_the_websocket_api_with_a_signed_request(redis_url: str) -> None:
    """Listen keys are gone (Binance, 2026-02-20): events come after `userDataStream.subscribe.signature` on
    the WebSocket API, as `{"subscriptionId", "event"}`; a fill reaches the gateway through it, not by query."""
    async def go() -> None:
        async with rig(redis_url) as r:
            stream = r.adapter.user_stream
            assert stream.url().endswith("/ws-api/v3") and stream.subscription_id is not None
            assert not r.sim.listen_keys  # the deprecated REST endpoints were never called
            assert list(r.sim.subscriptions[SIM_API_KEY].values()) == [stream.subscription_id]
            bid, _ = r.book()
            o = order(qty=0.02, price=round(bid * 0.95, 1))
            r.service.accept(o)
            await r.service.send(o)
            queries = r.sim.counts["queries"]
            r.sim._force_fill(r.sim.orders[o.client_order_id], 0.02)
            await until(lambda: stored(r, o.client_order_id).status is OrderStatus.FILLED, timeout=5,
                        what="the fill on the user stream")
            assert stream.events >= 2 and r.sim.counts["queries"] == queries

    run(go())


def test_user_stream_resubscribes_when_the_venue_ends_the_subscription(redis_url: str) -> None:
    async def go() -> None:
        async with rig(redis_url) as r:
            stream = r.adapter.user_stream
            (ws, sub), = r.sim.subscriptions[SIM_API_KEY].items()
            await ws.send_str(msgspec.json.encode({"subscriptionId": sub, "event": {
                "e": "eventStreamTerminated", "E": 1}}).decode())
            await until(lambda: stream.connects == 2 and stream.connected.is_set(), timeout=5, what="resubscribed")
            assert stream.subscription_id != sub
            await until(lambda: getattr(r.service.last_reconcile, "why", "") == "reconnect", timeout=8,
                        what="reconcile after the gap")

    run(go())


def test_a_badly_signed_subscription_is_refused_and_retried_not_trusted(redis_url: str) -> None:
    async def go() -> None:
        async with simulator() as (sim, url):
            wrong = Credentials("binance", SIM_API_KEY, "not-the-secret")
            adapter = BinanceAdapter("binance", url, url.replace("http", "ws"), wrong)
            await adapter.rest.start()
            stream = BinanceUserStream(adapter)
            try:
                await stream.start(wait_s=1.0)
                assert not stream.connected.is_set() and stream.subscription_id is None
                assert sim.counts["bad_signatures"] >= 1 and not sim.subscriptions.get(SIM_API_KEY)
            finally:
                await stream.close()
                await adapter.rest.close()

    run(go())


def test_the_user_stream_url_of_each_binance_environment() -> None:
    assert ws_api_url("wss://stream.binance.com:9443") == "wss://ws-api.binance.com:443/ws-api/v3"
    assert ws_api_url("wss://stream.testnet.binance.vision/ws") == "wss://ws-api.testnet.binance.vision/ws-api/v3"
    assert ws_api_url("ws://127.0.0.1:8123") == "ws://127.0.0.1:8123/ws-api/v3"  # the simulator serves both
    assert ws_api_url("wss://stream.binance.com:9443", "wss://example.test/ws-api/v3") == "wss://example.test/ws-api/v3"
