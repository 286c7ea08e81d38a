"""The simulator's aiohttp application: each protocol module adds its routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import web

from gateways.venue_sim.exchange import SimExchange

EXCHANGE_KEY = web.AppKey("exchange", SimExchange)

# Each protocol module exposes `register(app: web.Application, exchange: SimExchange) -> None`.
ROUTE_MODULES: list[str] = []


def create_app(exchange: SimExchange, modules: list[str] | None = None) -> web.Application:
    import importlib

    app = web.Application()
    app[EXCHANGE_KEY] = exchange
    for name in ROUTE_MODULES if modules is None else modules:
        register: Callable[[web.Application, SimExchange], None] = importlib.import_module(name).register
        register(app, exchange)

    async def ticking(app: web.Application):
        task = asyncio.get_running_loop().create_task(exchange.run())
        yield
        exchange.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(ticking)
    return app
