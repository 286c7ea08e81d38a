"""Shared by the simulator and feed tests (no tests here): the venue simulator on a real localhost socket."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from cluster.config import MarketSection, SymbolSection
from gateways.binance.depth_sync import SyncState
from gateways.venue_sim.exchange import FaultPlan, SimExchange
from gateways.venue_sim.replay import Recording, ReplayDriver, load_recording
from gateways.venue_sim.server import create_app, start_server

SYMBOLS = [SymbolSection(symbol="BTCUSDT", price=60000.0, tick_size=0.1, lot_size=0.0001, volatility=0.6),
           SymbolSection(symbol="ETHUSDT", price=3000.0, tick_size=0.01, lot_size=0.001, volatility=0.7)]


@contextlib.asynccontextmanager
async def running_sim(faults: FaultPlan | None = None, symbols: list[SymbolSection] | None = None,
                      updates_per_second: float = 50.0, ping_interval_s: float = 20.0,
                      max_connection_age_s: float = 24 * 3600.0,
                      modules: list[str] | None = None, replay: Any = None,
                      replay_speed: float = 0.0, replay_loop: bool = False
                      ) -> AsyncIterator[tuple[SimExchange, str, str]]:
    """(exchange, http base URL, ws base URL) of a simulator listening on 127.0.0.1.

    `replay`: a recording (paths or `load_recording`'s result) served instead of the seeded market;
    the driver is `exchange.replay`.
    """
    market = MarketSection(seed=11, updates_per_second=updates_per_second, depth=20)
    exchange = SimExchange(symbols or SYMBOLS, market, faults)
    exchange.ping_interval_s = ping_interval_s
    exchange.max_connection_age_s = max_connection_age_s
    driver = None
    if replay is not None:
        recording = replay if isinstance(replay, Recording) else load_recording(replay)
        driver = exchange.replay = ReplayDriver(exchange, recording, replay_speed,  # type: ignore[attr-defined]
                                                     loop=replay_loop)
    runner, port = await start_server(create_app(exchange, modules, replay=driver))
    try:
        yield exchange, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def caught_up(handler: Any, exchange: SimExchange, symbols: list[str]) -> bool:
    """Every symbol's feed book is synced at the venue's latest update id."""
    return all(handler.symbols[s].sync.state is SyncState.SYNCED
               and handler.symbols[s].sync.last_update_id == exchange.markets[s].update_id for s in symbols)
