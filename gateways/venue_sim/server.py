"""The simulator's aiohttp application: each protocol module adds its routes."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
from collections.abc import Callable

from aiohttp import web

from gateways.venue_sim.exchange import SimExchange
from gateways.venue_sim.replay import ReplayDriver, SubscriberProbe

EXCHANGE_KEY = web.AppKey("exchange", SimExchange)

# Each protocol module exposes `register(app: web.Application, exchange: SimExchange) -> None`.
# Modules listed here that are not installed (yet) are skipped, so order-entry modules can be
# listed before they exist.
ROUTE_MODULES: list[str] = [
    "gateways.venue_sim.binance_market",
    "gateways.venue_sim.alpaca_market",
    "gateways.venue_sim.binance_trading",
    "gateways.venue_sim.alpaca_trading",
]


def _present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def create_app(exchange: SimExchange, modules: list[str] | None = None,
               replay: ReplayDriver | None = None) -> web.Application:
    """The application with the routes of `modules` (default: every present module of `ROUTE_MODULES`).

    With `replay`, the recording is the market: the driver replaces the seeded markets' tick loop.
    """
    app = web.Application()
    app[EXCHANGE_KEY] = exchange
    names = [m for m in ROUTE_MODULES if _present(m)] if modules is None else modules
    for name in names:
        register: Callable[[web.Application, SimExchange], None] = importlib.import_module(name).register
        register(app, exchange)
    if replay is not None:
        from gateways.venue_sim import alpaca_market, binance_market

        for key in (binance_market.SIM_KEY, alpaca_market.SIM_KEY):
            sim = app.get(key)
            if sim is not None:
                replay.add_probe(SubscriberProbe(sim.subscribers, sim.backlog))

    async def ticking(app: web.Application):
        task = asyncio.get_running_loop().create_task(replay.run() if replay is not None else exchange.run())
        yield
        exchange.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(ticking)
    return app


async def start_server(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve `app` on a real TCP socket; returns the runner (call `cleanup()` to stop) and the bound port."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    return runner, server.sockets[0].getsockname()[1]
