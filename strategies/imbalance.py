"""Order-book imbalance, first version: follow persistent book pressure, briefly, with an IOC.

Signal. `weighted_imbalance` compares resting size on the two sides over the top `levels` levels,
each level weighted `decay**distance` from the touch, because size near the touch is what the next
trades will eat. The direction (+1 bid-heavy, -1 ask-heavy, 0 inside +-`threshold`) must hold for
`persistence` (at least 3) consecutive updates, so one flickering snapshot does not trade.

Confirmation. The mid change over the last `momentum_window` updates must not oppose the signal.
A flat mid is accepted when `allow_flat_momentum` is true (the default): on a two-tick book the
mid often does not move for several updates while pressure builds, and requiring a strict move
would mostly enter after the move. Set it false to demand a move in the signal's direction.

Filters. No entry when the spread is wider than `max_spread_bps` (crossing it costs more than
the signal is worth) or realized volatility exceeds `max_vol_bps` (bps per sqrt(second), see
`realized_vol_bps`). Size is `order_qty * min(1, vol_ref_bps / vol)`, capped by `max_position`.

Execution. Entries are IOC limits at the opposite touch, so they fill against the book or expire,
never rest. Only a flat symbol enters. A position is closed the same way, reduce-only in size,
when the imbalance points the other way beyond the threshold or after `hold_updates` updates;
the streak is then reset so a re-entry needs a fresh persistent signal. A symbol with an order
in flight sends nothing else, so there is never more than one working order per symbol.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from cluster.messages import BookUpdate, IntentAction, Level, OrderIntent, RiskDecision, Side, TimeInForce
from strategies.base import Strategy, StrategyParamError
from strategies.market_maker import BPS, realized_vol_bps

MIN_PERSISTENCE = 3  # the rule: a signal only after at least 3 updates in the same direction


@functools.lru_cache(maxsize=64)
def level_weights(levels: int, decay: float) -> tuple[float, ...]:
    """decay**i for i in 0..levels-1: the weight of the level i steps from the touch."""
    return tuple(decay**i for i in range(levels))


def weighted_imbalance(bids: Sequence[Level], asks: Sequence[Level], levels: int, decay: float) -> float:
    """(B - A) / (B + A) in [-1, 1], B and A the size of the top `levels` levels weighted decay**i.

    Positive means more size to buy than to sell near the touch; 0 for an empty book.
    """
    w = level_weights(levels, decay)
    b = 0.0
    for (_, qty), wi in zip(bids, w):  # noqa: B905 - the shorter of book and weights decides
        b += qty * wi
    a = 0.0
    for (_, qty), wi in zip(asks, w):  # noqa: B905
        a += qty * wi
    total = a + b
    return (b - a) / total if total > 0 else 0.0


class OrderBookImbalance(Strategy):
    """Takes liquidity in the direction of persistent, momentum-confirmed book imbalance."""

    defaults: ClassVar[dict[str, Any]] = {
        "levels": 5,  # book levels per side in the imbalance
        "decay": 0.5,  # weight of level i is decay**i (touch = 0)
        "threshold": 0.2,  # |imbalance| beyond this is a signal
        "persistence": 3,  # consecutive updates in one direction before entering
        "momentum_window": 5,  # updates over which the mid change must not oppose the signal
        "allow_flat_momentum": True,  # an unchanged mid confirms (see module docstring)
        "max_spread_bps": 20.0,  # no entry when the spread is wider
        "vol_window": 50,  # mids in the realized-volatility window
        "max_vol_bps": 200.0,  # no entry above this realized vol (bps per sqrt(second))
        "vol_ref_bps": 20.0,  # full size at or below this vol, scaled down as vol / vol_ref above it
        "order_qty": 1.0,  # base units per entry (used when order_qty_notional is 0)
        "order_qty_notional": 0.0,  # > 0: entry size = this / mid
        "max_position": 1.0,  # base units; caps the entry size
        "max_position_notional": 0.0,  # > 0: max_position = this / mid
        "hold_updates": 20,  # close after this many updates in a position
        "reject_backoff_updates": 20,  # after a rejected entry, wait this many updates on that symbol
    }

    def __init__(self, name: str, symbols: list[str], venues: Mapping[str, str], params: Mapping[str, Any] | None = None):
        super().__init__(name, symbols, venues, params)
        self.mids: dict[str, deque[float]] = {}
        self.times: dict[str, deque[int]] = {}
        self.direction: dict[str, int] = dict.fromkeys(self.symbols, 0)
        self.streak: dict[str, int] = dict.fromkeys(self.symbols, 0)
        self.held: dict[str, int] = dict.fromkeys(self.symbols, 0)
        self.updates: dict[str, int] = dict.fromkeys(self.symbols, 0)
        self.backoff: dict[str, int] = {}
        self.last_imbalance: dict[str, float] = {}

    def validate_params(self) -> None:
        p = self.params
        for key, low in (("levels", 1), ("persistence", MIN_PERSISTENCE), ("momentum_window", 1), ("vol_window", 2),
                         ("hold_updates", 1), ("reject_backoff_updates", 0)):
            if not isinstance(p[key], int) or p[key] < low:
                raise StrategyParamError(f"OrderBookImbalance: {key} must be an integer >= {low}, got {p[key]!r}")
        if not 0 < p["decay"] <= 1:
            raise StrategyParamError(f"OrderBookImbalance: decay must be in (0, 1], got {p['decay']!r}")
        if not 0 <= p["threshold"] < 1:
            raise StrategyParamError(f"OrderBookImbalance: threshold must be in [0, 1), got {p['threshold']!r}")
        for key in ("max_spread_bps", "max_vol_bps", "vol_ref_bps"):
            if not p[key] > 0:
                raise StrategyParamError(f"OrderBookImbalance: {key} must be > 0, got {p[key]!r}")
        for key in ("order_qty", "order_qty_notional", "max_position", "max_position_notional"):
            if not (math.isfinite(p[key]) and p[key] >= 0):
                raise StrategyParamError(f"OrderBookImbalance: {key} must be >= 0, got {p[key]!r}")
        if not (p["order_qty"] > 0 or p["order_qty_notional"] > 0):
            raise StrategyParamError("OrderBookImbalance: order_qty or order_qty_notional must be > 0")
        if not (p["max_position"] > 0 or p["max_position_notional"] > 0):
            raise StrategyParamError("OrderBookImbalance: max_position or max_position_notional must be > 0")
        size = max(p["vol_window"], p["momentum_window"] + 1)
        for sym in getattr(self, "mids", {}):  # a live change resizes the windows
            self.mids[sym] = deque(self.mids[sym], maxlen=size)
            self.times[sym] = deque(self.times[sym], maxlen=size)

    # -- sizing -----------------------------------------------------------------------------------
    def entry_qty(self, mid: float, vol_bps: float) -> float:
        """order_qty scaled by min(1, vol_ref / vol) and capped by max_position."""
        p = self.params
        base = p["order_qty_notional"] / mid if p["order_qty_notional"] > 0 else p["order_qty"]
        cap = p["max_position_notional"] / mid if p["max_position_notional"] > 0 else p["max_position"]
        if vol_bps > p["vol_ref_bps"]:
            base *= p["vol_ref_bps"] / vol_bps
        return float(f"{min(base, cap):.8g}")

    # -- signal -----------------------------------------------------------------------------------
    def on_book(self, update: BookUpdate) -> list[OrderIntent]:
        sym = update.symbol
        bids, asks = update.bids, update.asks
        if not bids or not asks:
            return []
        best_bid, best_ask = bids[0][0], asks[0][0]
        mid = (best_bid + best_ask) / 2.0
        if mid <= 0:
            return []
        p = self.params
        self.updates[sym] = n = self.updates.get(sym, 0) + 1
        mids = self.mids.get(sym)
        if mids is None:
            size = max(p["vol_window"], p["momentum_window"] + 1)
            mids = self.mids[sym] = deque(maxlen=size)
            self.times[sym] = deque(maxlen=size)
        mids.append(mid)
        self.times[sym].append(update.exchange_ts_ns or update.receive_ts_ns)

        imb = weighted_imbalance(bids, asks, p["levels"], p["decay"])
        self.last_imbalance[sym] = imb
        d = 1 if imb > p["threshold"] else -1 if imb < -p["threshold"] else 0
        self.streak[sym] = (self.streak.get(sym, 0) + 1 if d == self.direction.get(sym) else 1) if d else 0
        self.direction[sym] = d

        if self.working and self.working_orders(sym):
            return []  # an IOC is in flight: its report decides what comes next
        pos = self.positions.get(sym, 0.0)
        if abs(pos) > 1e-12:
            self.held[sym] = self.held.get(sym, 0) + 1
            return [] if n < self.backoff.get(sym, 0) else self._close(update, pos, d)
        self.held[sym] = 0
        if self.streak[sym] < p["persistence"] or n < self.backoff.get(sym, 0):
            return []
        window = list(mids)[-(p["momentum_window"] + 1):]
        momentum = window[-1] - window[0]
        if momentum * d < 0 or (momentum == 0 and not p["allow_flat_momentum"]):
            return []
        if (best_ask - best_bid) / mid * BPS > p["max_spread_bps"]:
            return []
        vol_mids = list(mids)[-p["vol_window"]:]
        vol = realized_vol_bps(vol_mids, list(self.times[sym])[-len(vol_mids):])
        if vol > p["max_vol_bps"]:
            return []
        qty = self.round_qty(sym, self.entry_qty(mid, vol))
        if qty <= 0:
            return []
        self.streak[sym] = 0
        side = Side.BUY if d > 0 else Side.SELL
        price = best_ask if side is Side.BUY else best_bid
        return [self.limit(sym, side, qty, price, tag="obi-entry", tif=TimeInForce.IOC)]

    def _close(self, update: BookUpdate, pos: float, d: int) -> list[OrderIntent]:
        """Close when the signal points against the position or the holding time is up."""
        sym = update.symbol
        flipped = d != 0 and d != (1 if pos > 0 else -1)
        if not flipped and self.held[sym] < self.params["hold_updates"]:
            return []
        side = Side.SELL if pos > 0 else Side.BUY
        price = update.best_bid if side is Side.SELL else update.best_ask
        assert price is not None
        self.streak[sym] = 0
        return [self.limit(sym, side, abs(pos), price, tag="obi-exit", tif=TimeInForce.IOC)]

    # -- host callbacks ---------------------------------------------------------------------------
    def handle_decision(self, decision: RiskDecision, intent: OrderIntent) -> None:
        super().handle_decision(decision, intent)
        if not decision.approved and intent.action is IntentAction.NEW:
            # Retrying every update would only collect the same rejection; closes retry after the pause too.
            self.backoff[intent.symbol] = self.updates.get(intent.symbol, 0) + self.params["reject_backoff_updates"]
