"""EMA grid-range predictor: trade the market back towards a price predicted from past candle moves.

Candles are built from trades (`candle_s` seconds of exchange time each). A candle's price is the
midpoint of its open and close. When a candle closes, the change ratio of its price from the previous
candle's, r = p_k / p_{k-1} - 1, falls in a grid range: index floor(r / g), g = `grid_bps` / 1e4.
An EMA of those indices (alpha = 2 / (`ema_span` + 1)) predicts the next range, and the centre of that
range the next price:

    prediction = p_last * (1 + (ema + 0.5) * g)

On each book, with dev = mid / prediction - 1: sell when dev > `min_margin_bps` (the market is above
the prediction), buy when dev < -`min_margin_bps`. How much follows `shares_amount`:

    x = CurrentRange / MaxRange, clipped to [0, 1]; CurrentRange = |dev| / g (how many grid ranges the
    market stands from the prediction), MaxRange = `max_range`
    SharesAmount(x) = (1 - (1 - x**level) ** (1/level)) * Max

level = 1 is linear; a larger level keeps the amount small until the deviation is large. The amount
is a target position (-amount above the prediction, +amount below), reached with IOC limits at the
touch, only in the signal's direction; inside the margin the position is brought back to flat when
`flatten_inside_margin` is true. One order in flight per symbol; a rejection pauses the symbol for
`reject_backoff_updates` updates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from cluster.messages import BookUpdate, IntentAction, OrderIntent, RiskDecision, Side, TimeInForce, Trade
from strategies.base import Strategy, StrategyParamError
from strategies.market_maker import BPS, update_ts


def shares_amount(x: float, level: float, max_amount: float) -> float:
    """(1 - (1 - x**level) ** (1/level)) * max_amount, x clipped to [0, 1]; level > 0."""
    if not level > 0:
        raise ValueError(f"level must be > 0, got {level!r}")
    x = min(max(x, 0.0), 1.0)
    return (1.0 - (1.0 - x**level) ** (1.0 / level)) * max_amount


def grid_index(ratio: float, grid: float) -> int:
    """The grid range a change ratio falls in: floor(ratio / grid) (range k covers [k g, (k+1) g))."""
    return math.floor(ratio / grid + 1e-9)


@dataclass
class Candle:
    start_ns: int
    open: float
    close: float
    high: float
    low: float
    volume: float

    @property
    def price(self) -> float:
        """The price the predictor uses: the midpoint of open and close."""
        return (self.open + self.close) / 2.0


class CandleBuilder:
    """Time-bucketed candles from trades; a candle closes when a trade or book of a later bucket arrives."""

    def __init__(self, interval_ns: int):
        self.interval_ns = interval_ns
        self.current: Candle | None = None

    def on_trade(self, ts_ns: int, price: float, qty: float) -> Candle | None:
        closed = self.advance(ts_ns)
        if self.current is None:
            start = ts_ns - ts_ns % self.interval_ns
            self.current = Candle(start, price, price, price, price, qty)
        else:
            c = self.current
            c.close = price
            c.high = max(c.high, price)
            c.low = min(c.low, price)
            c.volume += qty
        return closed

    def advance(self, ts_ns: int) -> Candle | None:
        """Close the current candle if `ts_ns` is past its bucket; returns it."""
        c = self.current
        if c is not None and ts_ns >= c.start_ns + self.interval_ns:
            self.current = None
            return c
        return None


class EmaGridPredictor:
    """Candle prices in, the predicted next price out; see the module docstring."""

    def __init__(self, grid: float, alpha: float):
        self.grid = grid
        self.alpha = alpha
        self.last_price: float | None = None
        self.ema: float | None = None
        self.ranges: list[int] = []

    def on_candle(self, price: float) -> None:
        if self.last_price is not None and self.last_price > 0:
            k = grid_index(price / self.last_price - 1.0, self.grid)
            self.ranges.append(k)
            self.ema = float(k) if self.ema is None else self.alpha * k + (1.0 - self.alpha) * self.ema
        self.last_price = price

    @property
    def prediction(self) -> float | None:
        if self.ema is None or self.last_price is None:
            return None
        return self.last_price * (1.0 + (self.ema + 0.5) * self.grid)


class EmaGrid(Strategy):
    """Mean reversion towards the EMA grid-range prediction, sized by `shares_amount`."""

    defaults: ClassVar[dict[str, Any]] = {
        "candle_s": 1.0,  # candle length in seconds of exchange time
        "grid_bps": 1.0,  # width of one grid range, bps of price change
        "ema_span": 10,  # EMA of past ranges, alpha = 2 / (span + 1)
        "min_margin_bps": 2.0,  # MinMargin: trade only when the market is further than this from the prediction
        "max_range": 10.0,  # MaxRange, in grid ranges: at this deviation the full amount is traded
        "level": 2.0,  # curvature of SharesAmount (1 = linear)
        "max_amount": 1.0,  # Max: the largest target position, base units (when max_amount_notional is 0)
        "max_amount_notional": 0.0,  # > 0: Max = this / mid
        "min_order_notional": 10.0,  # smaller differences to the target are not traded
        "flatten_inside_margin": True,  # inside the margin, go back to flat
        "reject_backoff_updates": 20,
    }

    def __init__(self, name: str, symbols: list[str], venues: Mapping[str, str], params: Mapping[str, Any] | None = None):
        super().__init__(name, symbols, venues, params)
        self.candles: dict[str, CandleBuilder] = {}
        self.predictors: dict[str, EmaGridPredictor] = {}
        self.updates: dict[str, int] = dict.fromkeys(self.symbols, 0)
        self.backoff: dict[str, int] = {}
        self.last_target: dict[str, float] = {}

    def validate_params(self) -> None:
        p = self.params
        for key in ("candle_s", "grid_bps", "max_range", "level"):
            if not (math.isfinite(p[key]) and p[key] > 0):
                raise StrategyParamError(f"EmaGrid: {key} must be > 0, got {p[key]!r}")
        for key in ("min_margin_bps", "max_amount", "max_amount_notional", "min_order_notional"):
            if not (math.isfinite(p[key]) and p[key] >= 0):
                raise StrategyParamError(f"EmaGrid: {key} must be >= 0, got {p[key]!r}")
        if not (p["max_amount"] > 0 or p["max_amount_notional"] > 0):
            raise StrategyParamError("EmaGrid: max_amount or max_amount_notional must be > 0")
        for key, low in (("ema_span", 1), ("reject_backoff_updates", 0)):
            if not isinstance(p[key], int) or p[key] < low:
                raise StrategyParamError(f"EmaGrid: {key} must be an integer >= {low}, got {p[key]!r}")
        for pred in getattr(self, "predictors", {}).values():  # live changes apply to the running predictors
            pred.grid = p["grid_bps"] / BPS
            pred.alpha = 2.0 / (p["ema_span"] + 1.0)

    def _state(self, sym: str) -> tuple[CandleBuilder, EmaGridPredictor]:
        if sym not in self.predictors:
            self.candles[sym] = CandleBuilder(int(self.params["candle_s"] * 1e9))
            self.predictors[sym] = EmaGridPredictor(self.params["grid_bps"] / BPS, 2.0 / (self.params["ema_span"] + 1.0))
        return self.candles[sym], self.predictors[sym]

    def on_trade(self, trade: Trade) -> list[OrderIntent]:
        builder, predictor = self._state(trade.symbol)
        closed = builder.on_trade(trade.exchange_ts_ns or trade.receive_ts_ns, trade.price, trade.qty)
        if closed is not None:
            predictor.on_candle(closed.price)
        return []

    def target_position(self, mid: float, prediction: float) -> float | None:
        """The position the deviation of `mid` from `prediction` asks for; None inside the margin."""
        p = self.params
        dev = mid / prediction - 1.0
        if abs(dev) * BPS <= p["min_margin_bps"]:
            return 0.0 if p["flatten_inside_margin"] else None
        x = abs(dev) * BPS / p["grid_bps"] / p["max_range"]
        max_amount = p["max_amount_notional"] / mid if p["max_amount_notional"] > 0 else p["max_amount"]
        amount = shares_amount(x, p["level"], max_amount)
        return -amount if dev > 0 else amount

    def on_book(self, update: BookUpdate) -> list[OrderIntent]:
        sym = update.symbol
        mid = update.mid
        if mid is None or mid <= 0:
            return []
        self.updates[sym] = n = self.updates.get(sym, 0) + 1
        builder, predictor = self._state(sym)
        closed = builder.advance(update_ts(update))
        if closed is not None:
            predictor.on_candle(closed.price)
        prediction = predictor.prediction
        if prediction is None or self.working_orders(sym) or n < self.backoff.get(sym, 0):
            return []
        target = self.target_position(mid, prediction)
        if target is None:
            return []
        self.last_target[sym] = target
        pos = self.positions.get(sym, 0.0)
        diff = target - pos
        if abs(diff) * mid < max(self.params["min_order_notional"], 1e-12):
            return []
        # Only trade in the signal's direction: above the prediction never buy, below never sell.
        if (target < 0 and diff > 0) or (target > 0 and diff < 0):
            return []
        side = Side.BUY if diff > 0 else Side.SELL
        price = update.best_ask if side is Side.BUY else update.best_bid
        qty = self.round_qty(sym, float(f"{abs(diff):.8g}"))
        if price is None or qty <= 0:
            return []
        return [self.limit(sym, side, qty, price, tag="ema-grid", tif=TimeInForce.IOC)]

    def handle_decision(self, decision: RiskDecision, intent: OrderIntent) -> None:
        super().handle_decision(decision, intent)
        if not decision.approved and intent.action is IntentAction.NEW:
            self.backoff[intent.symbol] = self.updates.get(intent.symbol, 0) + self.params["reject_backoff_updates"]
