"""A seeded, deterministic market for one symbol that speaks Binance's spot wire format.

The paper cluster runs the same bytes -> parser -> `BinanceDepthSync` -> `OrderBook` path it
runs against the venue, so the simulator emits what Binance emits on a combined stream:
`depthUpdate` diff events (only the changed levels, absolute quantities, "0" for removed
levels, contiguous update ids) and `trade` events, plus REST `GET /api/v3/depth` snapshot
bodies.

Model, per `step(dt_s, ...)`:
- the mid follows a geometric random walk, sigma = annualized volatility * sqrt(dt in years);
- the touch is placed around the mid with a spread of `spread_ticks` (+/- 1 tick of noise, at
  least 1), so the book is never crossed;
- each side keeps up to `depth` levels on the tick grid: levels that the new touch passed are
  removed, some levels are cancelled or re-sized, holes near the touch are filled first;
  quantities are lognormal and grow with the distance from the touch;
- a Poisson(`trade_rate`) number of trades hit the touch (buyers lift the ask when the mid went
  up more often than not), consuming the traded size from the book.

Prices and quantities are held as integer ticks and lots, so rounding is exact and the decimal
strings have the precision implied by `tick_size` / `lot_size`. Everything random comes from one
`numpy.random.Generator(PCG64)` seeded from (seed, symbol) with BLAKE2b: the same seed and the
same calls give byte-identical output, in any process.
"""

from __future__ import annotations

import hashlib
import math
from decimal import Decimal

import msgspec
import numpy as np

_SECONDS_PER_YEAR = 365.0 * 24.0 * 3600.0

# Per-step level dynamics (probabilities per level per step).
_P_CANCEL = 0.04
_P_RESIZE = 0.15
_P_FILL = 0.7  # chance an empty tick near the touch gets a level when a side is short of `depth`
_QTY_SIGMA = 0.6
_BASE_NOTIONAL = 2_000.0  # quote value of a touch level on average
_DEPTH_GROWTH = 0.12  # quantity grows by this fraction per level away from the touch
_FMT_CACHE = 50_000  # decimal strings a grid keeps


def derive_seed(seed: int, symbol: str) -> int:
    """Stable per-symbol seed (Python's `hash` is salted per process, so it would break replay)."""
    digest = hashlib.blake2b(f"{int(seed)}:{symbol.upper()}".encode(), digest_size=16).digest()
    return int.from_bytes(digest, "little")


def _decimals(step: float) -> int:
    """Decimal places a step size implies: 0.01 -> 2, 1e-05 -> 5, 0.5 -> 1, 10 -> 0."""
    exp = Decimal(repr(float(step))).normalize().as_tuple().exponent
    return max(-int(exp), 0)


class _Grid:
    """Integer multiples of a step size <-> exact decimal strings.

    `fmt` runs for every level of every simulated update, and the same few hundred ticks and lot counts come
    back again and again, so each string is made once (the cache starts over past `_FMT_CACHE` entries).
    """

    __slots__ = ("step", "decimals", "unit", "scale", "_strings")

    def __init__(self, step: float, what: str) -> None:
        if not (0.0 < step < math.inf):
            raise ValueError(f"{what} must be finite and > 0, got {step!r}")
        self.step = step
        self.decimals = _decimals(step)
        self.scale = 10 ** self.decimals
        self.unit = round(step * self.scale)  # the step in units of 10**-decimals
        if self.unit <= 0:
            raise ValueError(f"{what} {step!r} is too small")
        self._strings: dict[int, str] = {}

    def fmt(self, n: int) -> str:
        text = self._strings.get(n)
        if text is None:
            v = n * self.unit
            text = str(v) if not self.decimals else f"{v // self.scale}.{v % self.scale:0{self.decimals}d}"
            if len(self._strings) >= _FMT_CACHE:
                self._strings.clear()
            self._strings[n] = text
        return text

    def value(self, n: int) -> float:
        return n * self.unit / self.scale


class _DepthData(msgspec.Struct):
    e: str
    E: int
    s: str
    U: int
    u: int
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]


class _TradeData(msgspec.Struct):
    e: str
    E: int
    s: str
    t: int
    p: str
    q: str
    T: int
    m: bool
    M: bool = True  # "ignore" field Binance still sends


class _Wrapped(msgspec.Struct):
    stream: str
    data: msgspec.Struct  # _DepthData or _TradeData


class _Snapshot(msgspec.Struct):
    lastUpdateId: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


_encode = msgspec.json.Encoder().encode


class SimulatedMarket:
    """One symbol's simulated Binance spot market; see the module docstring for the model."""

    def __init__(self, symbol: str, seed: int, price: float, tick_size: float, lot_size: float,
                 volatility: float = 0.5, depth: int = 20, spread_ticks: int = 2, trade_rate: float = 2.0) -> None:
        if not (0.0 < price < math.inf):
            raise ValueError(f"price must be finite and > 0, got {price!r}")
        if not (0.0 <= volatility < math.inf):
            raise ValueError(f"volatility must be finite and >= 0, got {volatility!r}")
        if depth < 1:
            raise ValueError("depth must be >= 1")
        if spread_ticks < 1:
            raise ValueError("spread_ticks must be >= 1")
        if not (0.0 <= trade_rate < math.inf):
            raise ValueError(f"trade_rate must be finite and >= 0, got {trade_rate!r}")
        self.symbol = symbol.upper()
        self.seed = seed
        self.price_grid = _Grid(tick_size, "tick_size")
        self.qty_grid = _Grid(lot_size, "lot_size")
        self.tick_size = tick_size
        self.lot_size = lot_size
        self.volatility = volatility
        self.depth = depth
        self.spread_ticks = spread_ticks
        self.trade_rate = trade_rate
        self._depth_stream = f"{symbol.lower()}@depth@100ms"
        self._trade_stream = f"{symbol.lower()}@trade"
        self._rng = np.random.Generator(np.random.PCG64(derive_seed(seed, self.symbol)))

        self._mid = float(price)
        self._base_lots = max(1.0, _BASE_NOTIONAL / price / lot_size)
        # Binance ids are large and do not start at 0; start somewhere deterministic.
        self._update_id = int(self._rng.integers(1_000_000, 1_000_000_000))
        self._trade_id = int(self._rng.integers(1_000_000, 1_000_000_000))
        self._bids: dict[int, int] = {}  # price tick -> lots
        self._asks: dict[int, int] = {}
        self._bid_touch, self._ask_touch = self._touch()
        self._reshape()

    # ------------------------------------------------------------------ model

    @property
    def mid(self) -> float:
        """The model's (unrounded) mid price."""
        return self._mid

    @property
    def update_id(self) -> int:
        """Last update id emitted (the `u` of the latest depthUpdate, the snapshot's `lastUpdateId`)."""
        return self._update_id

    def _touch(self) -> tuple[int, int]:
        spread = max(1, self.spread_ticks + int(self._rng.integers(-1, 2)))
        center = self._mid / self.price_grid.step
        bid = max(1, math.floor(center - spread / 2.0))
        return bid, bid + spread

    def _qty(self, level: int) -> int:
        mean = self._base_lots * (1.0 + _DEPTH_GROWTH * level)
        return max(1, round(mean * float(self._rng.lognormal(-0.5 * _QTY_SIGMA**2, _QTY_SIGMA))))

    def _reshape_side(self, levels: dict[int, int], touch: int, direction: int) -> dict[int, int]:
        # direction -1: bids (prices go down from the touch), +1: asks.
        rng = self._rng
        kept = sorted((t for t in levels if (t - touch) * direction >= 0), key=lambda t: (t - touch) * direction)
        out: dict[int, int] = {}
        if kept:
            draws = rng.random((len(kept), 2)).tolist()  # plain floats: indexing an array per level costs more
            for t, (cancel, resize) in zip(kept, draws, strict=True):
                if t != touch and cancel < _P_CANCEL:
                    continue
                out[t] = self._qty(abs(t - touch)) if resize < _P_RESIZE else levels[t]
        if touch not in out:
            out[touch] = self._qty(0)
        # Walk out from the touch: keep surviving levels, fill empty ticks (nearest first) until the side has
        # `depth` levels; whatever lies beyond is dropped. After a large move this rebuilds the book around the
        # new touch instead of leaving a hole between it and the old levels.
        result: dict[int, int] = {}
        t = touch
        while len(result) < self.depth and t >= 1:
            if t in out:
                result[t] = out[t]
            elif rng.random() < _P_FILL:
                result[t] = self._qty(abs(t - touch))
            t += direction
        return result

    def _reshape(self) -> None:
        self._bids = self._reshape_side(self._bids, self._bid_touch, -1)
        self._asks = self._reshape_side(self._asks, self._ask_touch, 1)

    def _trades(self, n: int, move_z: float, event_time_ms: int, dt_ms: int) -> list[bytes]:
        rng = self._rng
        # Buyers dominate when the mid went up this step (move_z: the step's return in standard deviations).
        p_buy = 0.5 + 0.3 * math.tanh(move_z)
        offsets = np.sort(rng.integers(0, max(dt_ms, 1), size=n))[::-1]
        out: list[bytes] = []
        for k in range(n):
            buy = bool(rng.random() < p_buy)
            side = self._asks if buy else self._bids
            if len(side) <= 1:
                continue  # never empty a side
            touch = min(side) if buy else max(side)
            avail = side[touch]
            lots = max(1, min(avail, round(avail * float(rng.beta(1.2, 3.0)) * 1.5)))
            if lots >= avail:
                del side[touch]
            else:
                side[touch] = avail - lots
            self._trade_id += 1
            ts = event_time_ms - int(offsets[k])
            out.append(_encode(_Wrapped(self._trade_stream, _TradeData(
                e="trade", E=ts, s=self.symbol, t=self._trade_id, p=self.price_grid.fmt(touch),
                q=self.qty_grid.fmt(lots), T=ts, m=not buy))))
        return out

    def step(self, dt_s: float, event_time_ms: int) -> list[bytes]:
        """Advance by `dt_s` seconds; return the trades and the depth diff of the interval as raw combined-stream messages.

        Trades come first (they happened during the interval); the `depthUpdate` carries the net level
        changes, trades' consumption included. No depthUpdate is sent when no level changed, as on Binance.
        """
        if not (0.0 <= dt_s < math.inf):
            raise ValueError(f"dt_s must be finite and >= 0, got {dt_s!r}")
        rng = self._rng
        old_bids = self._bids
        old_asks = self._asks
        # Mid: geometric Brownian motion without drift.
        sigma = self.volatility * math.sqrt(dt_s / _SECONDS_PER_YEAR)
        ret = float(rng.normal(-0.5 * sigma * sigma, sigma)) if sigma > 0.0 else 0.0
        self._mid *= math.exp(ret)
        self._bid_touch, self._ask_touch = self._touch()
        self._reshape()
        n_trades = int(rng.poisson(self.trade_rate)) if self.trade_rate > 0.0 else 0
        move_z = ret / sigma if sigma > 0.0 else 0.0
        out = self._trades(n_trades, move_z, event_time_ms, round(dt_s * 1000.0)) if n_trades else []

        bid_changes = self._diff(old_bids, self._bids, reverse=True)
        ask_changes = self._diff(old_asks, self._asks, reverse=False)
        n_changes = len(bid_changes) + len(ask_changes)
        if n_changes:
            first = self._update_id + 1
            # Each changed level counts as one venue update, so an event spans several ids.
            self._update_id += n_changes
            fmt_p = self.price_grid.fmt
            fmt_q = self.qty_grid.fmt
            out.append(_encode(_Wrapped(self._depth_stream, _DepthData(
                e="depthUpdate", E=event_time_ms, s=self.symbol, U=first, u=self._update_id,
                b=[(fmt_p(t), fmt_q(q)) for t, q in bid_changes], a=[(fmt_p(t), fmt_q(q)) for t, q in ask_changes]))))
        return out

    @staticmethod
    def _diff(old: dict[int, int], new: dict[int, int], reverse: bool) -> list[tuple[int, int]]:
        changed = {t: q for t, q in new.items() if old.get(t) != q}
        for t in old:
            if t not in new:
                changed[t] = 0
        return sorted(changed.items(), reverse=reverse)

    # ------------------------------------------------------------------ REST

    def snapshot(self, limit: int = 1000) -> bytes:
        """`GET /api/v3/depth?limit=...` body for the current book, `lastUpdateId` = the last emitted `u`."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        fmt_p = self.price_grid.fmt
        fmt_q = self.qty_grid.fmt
        bids = sorted(self._bids.items(), reverse=True)[:limit]
        asks = sorted(self._asks.items())[:limit]
        return _encode(_Snapshot(lastUpdateId=self._update_id, bids=[(fmt_p(t), fmt_q(q)) for t, q in bids],
                                 asks=[(fmt_p(t), fmt_q(q)) for t, q in asks]))

    def book_levels(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The model's own book as floats, best first (for tests and diagnostics)."""
        pv = self.price_grid.value
        qv = self.qty_grid.value
        return ([(pv(t), qv(q)) for t, q in sorted(self._bids.items(), reverse=True)],
                [(pv(t), qv(q)) for t, q in sorted(self._asks.items())])
