"""The simulator's state: seeded markets ticking in real time, subscribers, injected faults."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.config import MarketSection, SymbolSection
from gateways.market_sim import SimulatedMarket


@dataclass
class FaultPlan:
    """Probabilities (0..1) of each fault, per message or per request; all off by default."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay_ms: float = 0.0
    disconnect_after: int = 0  # close each WebSocket after this many messages (0 = never)
    rest_429: float = 0.0
    rest_5xx: float = 0.0
    seed: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self.rng.seed(self.seed)

    def roll(self, p: float) -> bool:
        return p > 0 and self.rng.random() < p


Listener = Callable[[str, list[bytes]], None]


class SimExchange:
    """All symbols of the simulated venue; `listeners` get each tick's raw Binance-format messages."""

    def __init__(self, symbols: list[SymbolSection], market: MarketSection, faults: FaultPlan | None = None):
        self.cfg = market
        self.symbols = {s.symbol: s for s in symbols}
        self.markets = {s.symbol: SimulatedMarket(s.symbol, market.seed, s.price, s.tick_size, s.lot_size,
                                                  volatility=s.volatility, depth=market.depth,
                                                  spread_ticks=market.spread_ticks,
                                                  trade_rate=market.trades_per_update) for s in symbols}
        self.faults = faults or FaultPlan()
        self.listeners: list[Listener] = []
        self.clock_ms = int(time.time() * 1000)
        self.running = False

    def step(self, dt_s: float) -> dict[str, list[bytes]]:
        self.clock_ms = max(self.clock_ms + 1, int(time.time() * 1000))
        out = {sym: m.step(dt_s, self.clock_ms) for sym, m in self.markets.items()}
        for sym, msgs in out.items():
            if msgs:
                for listener in list(self.listeners):
                    listener(sym, msgs)
        return out

    async def run(self) -> None:
        """Tick every symbol at `market.updates_per_second` until stopped."""
        self.running = True
        interval = 1.0 / self.cfg.updates_per_second
        next_tick = time.monotonic()
        while self.running:
            self.step(interval)
            next_tick += interval
            delay = next_tick - time.monotonic()
            if delay < -1.0:
                next_tick = time.monotonic()
            await asyncio.sleep(max(delay, 0.0))

    def stop(self) -> None:
        self.running = False
