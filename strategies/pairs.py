"""Pairs statistical arbitrage: trade the Engle-Granger spread of two symbols back to its mean.

Symbols: `symbols[0]` is y, `symbols[1]` is x. Each book of y (while x has a book) samples both mids
into a window of `window` samples. Every `refit_every` samples the pair is re-tested
(`strategies.cointegration.engle_granger`: OLS hedge ratio beta, ADF on the residual, half-life) and
is tradeable while p-value <= `max_pvalue` and `min_half_life` <= half-life <= `max_half_life`
(in samples).

Signal: z = (y - alpha - beta * x) / residual std.
* z >= `entry_z`: the spread is rich: short it (sell y, buy beta * x); z <= -`entry_z`: long it.
* Confirmation by order-book imbalance (`weighted_imbalance` over `imbalance_levels`): for a short
  spread the books should lean the spread's way, y ask-heavy and x bid-heavy. The score
  (imb_x - imb_y) / 2 (negated for a long spread) must be >= `min_confirmation`; -1 disables it.
* Exit when |z| <= `exit_z`, or stop out when |z| >= `stop_z`, or when the pair stops being tradeable.

Sizing keeps the hedge ratio after venue rounding: `hedged_quantities` picks the y quantity (a
multiple of `lot_size_y`) near `notional / mid_y` whose x leg, beta * qty_y rounded to `lot_size_x`,
is closest to the exact ratio. Both legs are sent at once as IOC limits at the touch; legs are driven
to target positions, so a partial fill is completed (or unwound) on the next updates instead of
leaving the pair unhedged.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from cluster.messages import BookUpdate, IntentAction, OrderIntent, RiskDecision, Side, TimeInForce
from strategies.base import Strategy, StrategyParamError
from strategies.cointegration import Cointegration, engle_granger
from strategies.imbalance import weighted_imbalance


def round_lot(qty: float, lot: float) -> float:
    """Nearest multiple of `lot` (lot 0: unchanged), free of float noise."""
    if lot <= 0:
        return qty
    n = round(qty / lot)
    decimals = max(0, -math.floor(math.log10(lot))) + 2
    return round(n * lot, decimals)


def hedged_quantities(beta: float, target_y: float, lot_y: float, lot_x: float, search: int = 50) -> tuple[float, float]:
    """(qty_y, qty_x >= 0) near (target_y, |beta| target_y), both on their lot grids, whose ratio is closest to |beta|.

    Candidates are the multiples of lot_y from 1/2 to 3/2 of the target (at most `search` each side of
    it); ties go to the one nearest the target. (0, 0) if not even one lot of each fits.
    """
    b = abs(beta)
    if target_y <= 0 or b == 0:
        return 0.0, 0.0
    if lot_y <= 0:
        return target_y, round_lot(b * target_y, lot_x)
    n0 = max(1, round(target_y / lot_y))
    span = min(search, max(n0 // 2, 0))
    best: tuple[float, float, int] | None = None
    for n in range(max(1, n0 - span), n0 + span + 1):
        qy = n * lot_y
        qx = round_lot(b * qy, lot_x)
        if qx <= 0:
            continue
        err = abs(qx - b * qy) / (b * qy)
        key = (round(err, 12), abs(n - n0), n)
        if best is None or key < best:
            best = key
    if best is None:
        return 0.0, 0.0
    qy = round_lot(best[2] * lot_y, lot_y)
    return qy, round_lot(b * qy, lot_x)


class PairsArbitrage(Strategy):
    """Engle-Granger pairs trading on symbols[0] (y) and symbols[1] (x); see the module docstring."""

    defaults: ClassVar[dict[str, Any]] = {
        "window": 300,  # samples in the cointegration window
        "min_samples": 100,  # no test before this many samples
        "refit_every": 50,  # samples between re-tests
        "max_pvalue": 0.05,  # Engle-Granger p-value at or below which the pair is tradeable
        "min_half_life": 1.0,  # samples
        "max_half_life": 200.0,  # samples
        "entry_z": 2.0,
        "exit_z": 0.5,
        "stop_z": 4.0,
        "imbalance_levels": 5,
        "imbalance_decay": 0.5,
        "min_confirmation": 0.0,  # -1 disables the order-book confirmation
        "order_notional": 1000.0,  # notional of the y leg per entry
        "lot_size_y": 0.0,  # venue lot of y (0: the instrument's lot, known from the host or the books)
        "lot_size_x": 0.0,  # venue lot of x (likewise)
        "reject_backoff_updates": 20,
    }

    def __init__(self, name: str, symbols: list[str], venues: Mapping[str, str], params: Mapping[str, Any] | None = None):
        if len(symbols) != 2 or symbols[0] == symbols[1]:
            raise StrategyParamError(f"PairsArbitrage reads exactly two different symbols (y, x), got {symbols}")
        super().__init__(name, symbols, venues, params)
        self.y_sym, self.x_sym = symbols
        size = self.params["window"]
        self.ys: deque[float] = deque(maxlen=size)
        self.xs: deque[float] = deque(maxlen=size)
        self.samples = 0
        self.fit: Cointegration | None = None
        self.tradeable = False
        self.spread_position = 0  # +1 long the spread (long y, short x), -1 short, 0 flat
        self.targets: dict[str, float] = {self.y_sym: 0.0, self.x_sym: 0.0}
        self.updates = 0
        self.backoff_until = 0
        self.last_z: float | None = None

    def validate_params(self) -> None:
        p = self.params
        for key, low in (("window", 20), ("min_samples", 20), ("refit_every", 1), ("imbalance_levels", 1),
                         ("reject_backoff_updates", 0)):
            if not isinstance(p[key], int) or p[key] < low:
                raise StrategyParamError(f"PairsArbitrage: {key} must be an integer >= {low}, got {p[key]!r}")
        if p["min_samples"] > p["window"]:
            raise StrategyParamError("PairsArbitrage: min_samples must be <= window")
        if not 0 < p["max_pvalue"] <= 1:
            raise StrategyParamError(f"PairsArbitrage: max_pvalue must be in (0, 1], got {p['max_pvalue']!r}")
        if not 0 <= p["exit_z"] < p["entry_z"] < p["stop_z"]:
            raise StrategyParamError("PairsArbitrage: need 0 <= exit_z < entry_z < stop_z, got "
                                     f"{p['exit_z']}, {p['entry_z']}, {p['stop_z']}")
        if not 0 < p["min_half_life"] <= p["max_half_life"]:
            raise StrategyParamError("PairsArbitrage: need 0 < min_half_life <= max_half_life")
        if not 0 < p["imbalance_decay"] <= 1:
            raise StrategyParamError(f"PairsArbitrage: imbalance_decay must be in (0, 1], got {p['imbalance_decay']!r}")
        if not -1 <= p["min_confirmation"] <= 1:
            raise StrategyParamError("PairsArbitrage: min_confirmation must be in [-1, 1]")
        for key in ("order_notional", "lot_size_y", "lot_size_x"):
            if not (math.isfinite(p[key]) and p[key] >= 0):
                raise StrategyParamError(f"PairsArbitrage: {key} must be >= 0, got {p[key]!r}")
        if not p["order_notional"] > 0:
            raise StrategyParamError("PairsArbitrage: order_notional must be > 0")
        if hasattr(self, "ys") and self.ys.maxlen != p["window"]:  # a live change resizes the window
            self.ys = deque(self.ys, maxlen=p["window"])
            self.xs = deque(self.xs, maxlen=p["window"])

    # -- model ------------------------------------------------------------------------------------
    def refit(self) -> None:
        p = self.params
        try:
            self.fit = engle_granger(np.fromiter(self.ys, float), np.fromiter(self.xs, float))
        except (ValueError, np.linalg.LinAlgError):
            self.fit, self.tradeable = None, False
            return
        f = self.fit
        self.tradeable = (f.pvalue <= p["max_pvalue"] and p["min_half_life"] <= f.half_life <= p["max_half_life"]
                          and f.resid_std > 0 and f.beta != 0)

    def zscore(self, y: float, x: float) -> float | None:
        f = self.fit
        if f is None or not f.resid_std > 0:
            return None
        return (y - f.alpha - f.beta * x) / f.resid_std

    def confirmation(self, direction: int) -> float:
        """Order-book agreement with trading the spread in `direction` (+1 long y/short x), in [-1, 1]."""
        p = self.params
        by, bx = self.books[self.y_sym], self.books[self.x_sym]
        imb_y = weighted_imbalance(by.bids, by.asks, p["imbalance_levels"], p["imbalance_decay"])
        imb_x = weighted_imbalance(bx.bids, bx.asks, p["imbalance_levels"], p["imbalance_decay"])
        return direction * (imb_y - imb_x) / 2.0

    # -- hooks ------------------------------------------------------------------------------------
    def on_book(self, update: BookUpdate) -> list[OrderIntent]:
        self.updates += 1
        other = self.books.get(self.x_sym if update.symbol == self.y_sym else self.y_sym)
        if other is None or not other.tradeable:
            return []
        by, bx = self.books[self.y_sym], self.books[self.x_sym]
        y, x = by.mid, bx.mid
        assert y is not None and x is not None
        if update.symbol == self.y_sym:
            self.ys.append(y)
            self.xs.append(x)
            self.samples += 1
            if len(self.ys) >= self.params["min_samples"] and (self.fit is None
                                                                 or self.samples % self.params["refit_every"] == 0):
                self.refit()
        self._decide(y, x)
        return self._rebalance()

    def _decide(self, y: float, x: float) -> None:
        p = self.params
        z = self.zscore(y, x)
        self.last_z = z
        if z is None or self.updates < self.backoff_until:
            return
        if self.spread_position != 0:
            if not self.tradeable or abs(z) <= p["exit_z"] or abs(z) >= p["stop_z"]:
                self._set_targets(0, y)
            return
        if not self.tradeable or abs(z) < p["entry_z"] or abs(z) >= p["stop_z"]:
            return
        direction = -1 if z > 0 else 1
        if p["min_confirmation"] > -1 and self.confirmation(direction) < p["min_confirmation"]:
            return
        self._set_targets(direction, y)

    def _set_targets(self, direction: int, y_mid: float) -> None:
        self.spread_position = direction
        if direction == 0:
            self.targets = {self.y_sym: 0.0, self.x_sym: 0.0}
            return
        assert self.fit is not None
        p = self.params
        qy, qx = hedged_quantities(self.fit.beta, p["order_notional"] / y_mid, self.leg_lot(self.y_sym),
                                   self.leg_lot(self.x_sym))
        if qy <= 0:
            self.spread_position = 0
            return
        x_sign = -1 if self.fit.beta > 0 else 1  # long y hedges with short x when they move together
        self.targets = {self.y_sym: direction * qy, self.x_sym: direction * x_sign * qx}

    def leg_lot(self, sym: str) -> float:
        """The lot of a leg: the `lot_size_y`/`lot_size_x` parameter, else the instrument's (0: none)."""
        param = self.params["lot_size_y" if sym == self.y_sym else "lot_size_x"]
        return param if param > 0 else self.lot_size(sym)

    def _rebalance(self) -> list[OrderIntent]:
        """IOCs at the touch for every leg away from its target; legs with an order in flight wait."""
        out: list[OrderIntent] = []
        for sym in (self.y_sym, self.x_sym):
            if self.working_orders(sym) or self.updates < self.backoff_until:
                continue
            lot = self.leg_lot(sym)
            diff = self.targets[sym] - self.positions.get(sym, 0.0)
            tol = lot / 2 if lot > 0 else 1e-9 * max(abs(self.targets[sym]), 1.0)
            if abs(diff) <= tol:
                continue
            book = self.books[sym]
            side = Side.BUY if diff > 0 else Side.SELL
            price = book.best_ask if side is Side.BUY else book.best_bid
            if price is None:
                continue
            qty = round_lot(abs(diff), lot)
            if qty > 0:
                out.append(self.limit(sym, side, qty, price, tag="pairs", tif=TimeInForce.IOC))
        return out

    def handle_decision(self, decision: RiskDecision, intent: OrderIntent) -> None:
        super().handle_decision(decision, intent)
        if not decision.approved and intent.action is IntentAction.NEW:
            self.backoff_until = self.updates + self.params["reject_backoff_updates"]
