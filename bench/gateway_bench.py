"""Gateway: time from an approved order to its bytes on the wire, and orders per second one gateway sustains.

Everything real except Ray: the venue simulator (Binance protocol) on a local TCP
port, a real redis-server for the journal, and `GatewayService` with the Binance
adapter (exchangeInfo filters, HMAC signing, aiohttp, the user data stream).

approved_to_wire: from `accept()` (the order journaled as PENDING_NEW, as the actor
    does when risk forwards it) to the simulator's order handler starting on the
    request (same process, same perf_counter clock), one order at a time.
Orders are IOC limits 10% below the bid: the venue answers EXPIRED at once, so no resting orders pile
up in the simulator (which shares the process and its 2 cores with the gateway).
throughput: orders sent concurrently (up to `CONCURRENCY` in flight) until each
    has its venue answer applied and journaled; orders per second over the batch.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import percentiles_us, write_result
from cluster.config import MarketSection, SymbolSection, VenueSection
from cluster.messages import Order, OrderType, Side, TimeInForce
from cluster.state_store import StateStore

LATENCY_N = 500
THROUGHPUT_N = 2000
CONCURRENCY = 32


async def _run(redis_url: str) -> dict:
    from actors.gateway import GatewayService
    from gateways.binance.trading import BinanceAdapter
    from gateways.secrets import Credentials
    from gateways.venue_sim.binance_trading import BINANCE_TRADING, SIM_API_KEY, SIM_API_SECRET
    from gateways.venue_sim.exchange import SimExchange
    from gateways.venue_sim.server import create_app, start_server

    ex = SimExchange([SymbolSection(symbol="BTCUSDT", venue="binance", price=60000.0, tick_size=0.1,
                                    lot_size=0.0001)], MarketSection(updates_per_second=20))
    app = create_app(ex, ["gateways.venue_sim.binance_market", "gateways.venue_sim.binance_trading"])
    runner, port = await start_server(app)
    sim = app[BINANCE_TRADING]
    url = f"http://127.0.0.1:{port}"
    adapter = BinanceAdapter("binance", url, url.replace("http", "ws"), Credentials("binance", SIM_API_KEY,
                                                                                   SIM_API_SECRET))
    store = StateStore.from_url(redis_url, "bench")
    store.reset()
    svc = GatewayService("binance", VenueSection(type="binance", rest_url=url), store, adapter=adapter)
    svc.restore()
    await svc.start()
    price = round(ex.markets["BTCUSDT"].book_levels()[0][0][0] * 0.9, 1)
    n = 0

    def order() -> Order:
        nonlocal n
        n += 1
        return Order(client_order_id=f"bench-{n:x}", strategy="bench", venue="binance", symbol="BTCUSDT",
                     side=Side.BUY, qty=0.001, order_type=OrderType.LIMIT, price=price, tif=TimeInForce.IOC,
                     created_ts_ns=time.time_ns())

    for _ in range(20):  # warm-up: connections, caches
        o = order()
        svc.accept(o)
        await svc.send(o)
    samples = []
    for _ in range(LATENCY_N):
        o = order()
        sim.order_recv_ns.clear()
        t0 = time.perf_counter_ns()
        svc.accept(o)
        await svc.send(o)
        samples.append(sim.order_recv_ns[0] - t0)
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with sem:
            o = order()
            svc.accept(o)
            await svc.send(o)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(THROUGHPUT_N)))
    elapsed = time.perf_counter() - t0
    sent = sim.counts["new_orders"]
    await svc.close()
    await runner.cleanup()
    return {"approved_to_wire": percentiles_us(samples),
            "throughput": {"orders": THROUGHPUT_N, "concurrency": CONCURRENCY, "seconds": round(elapsed, 3),
                           "orders_per_s": round(THROUGHPUT_N / elapsed, 1)},
            "orders_at_venue": sent, "unknown": svc.counters["unknown"], "not_sent": svc.counters["not_sent"]}


def main() -> None:
    from cluster.redis_server import EmbeddedRedis

    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp))
        url = server.start()
        try:
            result = asyncio.run(_run(url))
        finally:
            server.stop()
    result["setup"] = ("one GatewayService + BinanceAdapter (filters, HMAC, aiohttp) against the in-process venue "
                       "simulator over TCP, journal in a real redis-server")
    print(f"approved->wire p50 {result['approved_to_wire']['p50_us']} us, p99 {result['approved_to_wire']['p99_us']} us;"
          f" {result['throughput']['orders_per_s']} orders/s")
    write_result("gateway", result)


if __name__ == "__main__":
    main()
