"""The simulator's state: seeded markets ticking in real time, subscribers, injected faults.

Protocol modules (`binance_market`, `alpaca_market`, and the order-entry modules) read the
markets and register listeners here; nothing in this module knows a wire protocol beyond
the Binance-format bytes `SimulatedMarket` already emits. An order matcher reads
`markets[sym].book_levels()` (best first, floats) and `now_ms()`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.config import MarketSection, SymbolSection
from gateways.market_sim import SimulatedMarket

log = logging.getLogger(__name__)


@dataclass
class FaultPlan:
    """What goes wrong, and how often: probabilities (0..1) per market-data message or per REST request.

    All off by default. `delay` is the probability that a message is held back `delay_ms`
    milliseconds (the messages behind it wait too, as on a slow link).
    """

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # hold a message back and send it after the next one
    delay: float = 0.0
    delay_ms: float = 0.0
    disconnect_after: int = 0  # close each WebSocket after this many market-data messages (0 = never)
    rest_429: float = 0.0
    rest_5xx: float = 0.0
    seed: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self.rng.seed(self.seed)
        for name in ("drop", "duplicate", "reorder", "delay", "rest_429", "rest_5xx"):
            p = getattr(self, name)
            if not (0.0 <= p <= 1.0):
                raise ValueError(f"fault {name} must be a probability in [0, 1], got {p!r}")
        if self.delay_ms < 0 or self.disconnect_after < 0:
            raise ValueError("delay_ms and disconnect_after must be >= 0")

    def roll(self, p: float) -> bool:
        return p > 0 and self.rng.random() < p

    def rest_fault(self) -> int | None:
        """HTTP status to answer this request with instead of serving it (429 or 503), or None."""
        if self.roll(self.rest_429):
            return 429
        if self.roll(self.rest_5xx):
            return 503
        return None

    @property
    def stream_faults(self) -> bool:
        return bool(self.drop or self.duplicate or self.reorder or (self.delay and self.delay_ms)
                    or self.disconnect_after)


Listener = Callable[[str, list[bytes]], None]


class SimExchange:
    """All symbols of the simulated venue; `listeners` get each tick's raw Binance-format messages.

    `source` produces the messages: by default the seeded `SimulatedMarket` of every symbol;
    any callable returning `{symbol: [raw messages]}` per tick can stand in for it (`source`).
    """

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
        self.started_ms = self.clock_ms
        self.running = False
        self.ticks = 0
        # Replaces the seeded markets when set: called with dt_s, returns {symbol: [raw messages]}.
        self.source: Callable[[float], dict[str, list[bytes]]] | None = None
        # WebSocket behaviour of the real venues, shortened by tests: server ping interval, forced reconnect.
        self.ping_interval_s = 20.0
        self.max_connection_age_s = 24 * 3600.0

    def now_ms(self) -> int:
        """The venue's clock (ms since the epoch); never goes backwards."""
        self.clock_ms = max(self.clock_ms, int(time.time() * 1000))
        return self.clock_ms

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Register a listener; returns the function that removes it."""
        self.listeners.append(listener)

        def remove() -> None:
            if listener in self.listeners:
                self.listeners.remove(listener)

        return remove

    def step(self, dt_s: float) -> dict[str, list[bytes]]:
        self.clock_ms = max(self.clock_ms + 1, int(time.time() * 1000))
        if self.source is not None:
            out = self.source(dt_s)
        else:
            out = {sym: m.step(dt_s, self.clock_ms) for sym, m in self.markets.items()}
        self.ticks += 1
        for sym, msgs in out.items():
            if msgs:
                for listener in list(self.listeners):
                    try:
                        listener(sym, msgs)
                    except Exception:  # one broken subscriber must not stop the market
                        log.exception("venue_sim: listener failed")
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
