"""Avellaneda-Stoikov market maker: two-sided quotes skewed by inventory, joined to the touch so they fill.

The model (Avellaneda & Stoikov, 2008, with a rolling horizon T):

    reservation price   r = mid - q * gamma * sigma^2 * T
    half spread         d = gamma * sigma^2 * T / 2 + ln(1 + gamma / kappa) / gamma
    quotes              bid = r - d, ask = r + d

Units. The class evaluates the formula in basis points of mid (`mid` = 0, `sigma` in bps per
sqrt(second), `gamma` and `kappa` per bp) and with inventory in lots (position / order size), so
one parameter set behaves the same on a 60 000 and a 150 instrument.

Getting filled. The paper venue fills a resting buy when the best ask comes down to its price,
so a quote far behind the touch rarely trades. The half spread is therefore clamped:

    half = min(max(d, min_spread_bps / 2), max(observed half spread, min_spread_bps / 2))

i.e. never narrower than `min_spread_bps`, and never wider than the touch: when the model asks
for more than the market's spread the quotes *join* the best bid and ask; when it asks for less,
they sit inside it. Inventory skew then moves the reducing side inside the touch. Prices are
rounded away from the mid onto the tick grid and never cross the book (a buy stays at least one
tick under the best ask), so quotes always rest as makers.

Order hygiene, because the risk actor counts working orders as if they filled (worst case):
at most one working order per side per symbol; a quote is replaced by cancelling it and placing
the new one on a later update, once the cancel is confirmed; a side whose fill would take
|position| beyond `max_position` is not quoted; after a rejection that side rests for
`reject_backoff_updates` updates instead of retrying every tick; a stale or crossed book pulls
the symbol's quotes until a good book arrives.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from cluster.messages import (
    BookUpdate,
    ExecutionReport,
    IntentAction,
    Level,
    OrderIntent,
    RejectReason,
    RiskDecision,
    Side,
)
from strategies.base import Strategy, StrategyParamError

BPS = 1e4
# Updates without exchange or receive timestamps are assumed to be this far apart (the paper feed's 20/s).
DEFAULT_DT_S = 0.05
_GRID_EPS = 1e-6  # in ticks: absorbs float error so a price that is on the grid stays where it is


def avellaneda_stoikov_quotes(mid: float, inventory: float, gamma: float, sigma: float, horizon: float,
                              kappa: float) -> tuple[float, float]:
    """(bid, ask) of the Avellaneda-Stoikov model, in the units of `mid` and `sigma`.

    The reservation price leans against inventory so that fills bring it back to zero; the spread
    widens with risk (gamma * sigma^2 * T) and with a thin book (small kappa).
    """
    if gamma <= 0 or kappa <= 0:
        raise ValueError("gamma and kappa must be > 0")
    risk = gamma * sigma * sigma * horizon
    reservation = mid - inventory * risk
    half = risk / 2.0 + math.log1p(gamma / kappa) / gamma
    return reservation - half, reservation + half


def realized_vol_bps(mids: Sequence[float], times_ns: Sequence[int] = (), default_dt_s: float = DEFAULT_DT_S) -> float:
    """Realized volatility of the mid in bps per sqrt(second): sqrt(sum r^2 / elapsed).

    Zero-mean squared log returns over elapsed time, so conflated (irregular) updates are weighed
    by the time they span. Without usable timestamps each return counts `default_dt_s`.
    """
    if len(mids) < 2:
        return 0.0
    ss = 0.0
    for a, b in zip(mids, mids[1:], strict=False):
        if a > 0 and b > 0:
            r = math.log(b / a) * BPS
            ss += r * r
    n = len(mids) - 1
    elapsed = (times_ns[-1] - times_ns[0]) / 1e9 if len(times_ns) == len(mids) and times_ns[0] > 0 else 0.0
    if elapsed <= 0:
        elapsed = n * default_dt_s
    return math.sqrt(ss / elapsed)


def infer_tick(bids: Sequence[Level], asks: Sequence[Level]) -> float:
    """Smallest gap between adjacent price levels (or the spread), cleaned of float noise; 0 if none."""
    gaps = [abs(a[0] - b[0]) for side in (bids, asks) for a, b in zip(side, side[1:], strict=False)]
    if bids and asks:
        gaps.append(asks[0][0] - bids[0][0])
    gaps = [g for g in gaps if g > 0]
    return float(f"{min(gaps):.6g}") if gaps else 0.0


def round_to_tick(price: float, tick: float, up: bool) -> float:
    """Round onto the grid, up (asks) or down (bids): rounding never makes a quote more aggressive."""
    if tick <= 0:
        return price
    n = price / tick
    n = math.ceil(n - _GRID_EPS) if up else math.floor(n + _GRID_EPS)
    decimals = max(0, -math.floor(math.log10(tick))) + 2
    return round(n * tick, decimals)


def update_ts(update: BookUpdate) -> int:
    return update.exchange_ts_ns or update.receive_ts_ns


def remaining_qty(order: ExecutionReport | OrderIntent) -> float:
    if isinstance(order, ExecutionReport):
        return max(order.order_qty - order.filled_qty, 0.0)
    return order.qty


class MarketMaker(Strategy):
    """Quotes both sides of every symbol around the A-S reservation price; see the module docstring."""

    defaults: ClassVar[dict[str, Any]] = {
        "order_qty": 1.0,  # base units per quote (used when order_qty_notional is 0)
        "order_qty_notional": 0.0,  # > 0: quote size = this / mid, so one setting fits every symbol
        "max_position": 5.0,  # base units; a side whose fill would exceed |position| is not quoted
        "max_position_notional": 0.0,  # > 0: max_position = this / mid
        "gamma": 0.1,  # risk aversion, per bp
        "sigma_window": 50,  # mids in the realized-volatility window
        "horizon_s": 5.0,  # rolling A-S horizon T
        "kappa": 1.0,  # order-book liquidity, per bp
        "min_spread_bps": 0.0,  # floor of the full quoted spread
        "requote_bps": 1.0,  # replace a working quote only when the desired price moved more than this
        "tick_size": 0.0,  # 0 = infer from the book
        "reject_backoff_updates": 20,  # after a rejected quote, leave that side alone this many updates
    }

    def __init__(self, name: str, symbols: list[str], venues: Mapping[str, str], params: Mapping[str, Any] | None = None):
        super().__init__(name, symbols, venues, params)
        self.mids: dict[str, deque[float]] = {}
        self.times: dict[str, deque[int]] = {}
        self.ticks: dict[str, float] = {}
        self.updates: dict[str, int] = dict.fromkeys(self.symbols, 0)
        self.canceling: set[str] = set()
        self.backoff: dict[tuple[str, Side], int] = {}
        self.last_quote: dict[str, tuple[float | None, float | None]] = {}

    def validate_params(self) -> None:
        p = self.params
        for key in ("gamma", "kappa", "horizon_s"):
            if not p[key] > 0:
                raise StrategyParamError(f"MarketMaker: {key} must be > 0, got {p[key]!r}")
        for key in ("order_qty", "order_qty_notional", "max_position", "max_position_notional", "min_spread_bps",
                    "requote_bps", "tick_size"):
            if not (math.isfinite(p[key]) and p[key] >= 0):
                raise StrategyParamError(f"MarketMaker: {key} must be >= 0, got {p[key]!r}")
        if not (p["order_qty"] > 0 or p["order_qty_notional"] > 0):
            raise StrategyParamError("MarketMaker: order_qty or order_qty_notional must be > 0")
        for key, low in (("sigma_window", 2), ("reject_backoff_updates", 0)):
            if not isinstance(p[key], int) or p[key] < low:
                raise StrategyParamError(f"MarketMaker: {key} must be an integer >= {low}, got {p[key]!r}")
        for sym in getattr(self, "mids", {}):  # a live change of sigma_window resizes the windows
            self.mids[sym] = deque(self.mids[sym], maxlen=p["sigma_window"])
            self.times[sym] = deque(self.times[sym], maxlen=p["sigma_window"])

    # -- sizing -----------------------------------------------------------------------------------
    def order_qty(self, mid: float) -> float:
        n = self.params["order_qty_notional"]
        return float(f"{n / mid:.8g}") if n > 0 else self.params["order_qty"]

    def max_position(self, mid: float) -> float:
        n = self.params["max_position_notional"]
        return n / mid if n > 0 else self.params["max_position"]

    def tick(self, update: BookUpdate) -> float:
        """Configured tick, else the smallest level gap seen so far on this symbol."""
        if self.params["tick_size"] > 0:
            return self.params["tick_size"]
        seen = infer_tick(update.bids, update.asks)
        prev = self.ticks.get(update.symbol, 0.0)
        tick = min(seen, prev) if seen > 0 and prev > 0 else (seen or prev)
        self.ticks[update.symbol] = tick
        return tick

    # -- quoting ----------------------------------------------------------------------------------
    def quotes(self, update: BookUpdate) -> tuple[float, float] | None:
        """Desired (bid, ask) on the tick grid, before position limits; None while warming up."""
        sym = update.symbol
        mids, times = self.mids[sym], self.times[sym]
        if len(mids) < 2:
            return None
        mid, best_bid, best_ask = update.mid, update.best_bid, update.best_ask
        assert mid is not None and best_bid is not None and best_ask is not None
        p = self.params
        sigma = realized_vol_bps(list(mids), list(times))
        lots = self.positions.get(sym, 0.0) / self.order_qty(mid)
        lo, hi = avellaneda_stoikov_quotes(0.0, lots, p["gamma"], sigma, p["horizon_s"], p["kappa"])
        reservation, model_half = (lo + hi) / 2.0, (hi - lo) / 2.0
        min_half = p["min_spread_bps"] / 2.0
        touch_half = (best_ask - best_bid) / 2.0 / mid * BPS
        half = min(max(model_half, min_half), max(touch_half, min_half))
        tick = self.tick(update)
        if tick <= 0:
            return None  # no grid to put a non-crossing quote on (a locked one-level book)
        bid = round_to_tick(mid * (1.0 + (reservation - half) / BPS), tick, up=False)
        ask = round_to_tick(mid * (1.0 + (reservation + half) / BPS), tick, up=True)
        # Rest as a maker: never at or through the opposite touch, and at least one tick wide.
        bid = min(bid, round_to_tick(best_ask - tick, tick, up=False))
        ask = max(ask, round_to_tick(best_bid + tick, tick, up=True))
        if ask - bid < tick * (1 - _GRID_EPS):
            ask = round_to_tick(bid + tick, tick, up=True)
        return bid, ask

    def on_book(self, update: BookUpdate) -> list[OrderIntent]:
        sym = update.symbol
        mid = update.mid
        if mid is None or mid <= 0:
            return []
        self.updates[sym] = self.updates.get(sym, 0) + 1
        window = self.params["sigma_window"]
        self.mids.setdefault(sym, deque(maxlen=window)).append(mid)
        self.times.setdefault(sym, deque(maxlen=window)).append(update_ts(update))
        self.canceling &= set(self.working)
        q = self.quotes(update)
        if q is None:
            return []
        bid, ask = q
        pos = self.positions.get(sym, 0.0)
        qty = self.round_qty(sym, self.order_qty(mid))
        if qty <= 0:
            return []
        limit = self.max_position(mid)
        eps = 1e-9 * max(qty, 1.0)
        want_bid = bid if bid > 0 and pos + qty <= limit + eps else None
        want_ask = ask if -(pos - qty) <= limit + eps else None
        self.last_quote[sym] = (want_bid, want_ask)
        intents: list[OrderIntent] = []
        for side, price in ((Side.BUY, want_bid), (Side.SELL, want_ask)):
            intents.extend(self._manage_side(sym, side, price, qty, pos, limit + eps, mid))
        return intents

    def _manage_side(self, sym: str, side: Side, price: float | None, qty: float, pos: float, limit: float,
                     mid: float) -> list[OrderIntent]:
        """Keep, cancel or place the one quote on this side; a replacement waits for the cancel to land."""
        live = [c for c in self.working_orders(sym, side) if c not in self.canceling]
        pending = len(self.working_orders(sym, side)) > len(live)
        out: list[OrderIntent] = []
        keep: str | None = None
        for coid in live:
            order = self.working[coid]
            after = pos + side.sign * remaining_qty(order)
            moved = (price is None or order.price is None
                     or abs(order.price - price) / mid * BPS > self.params["requote_bps"])
            if keep is None and not moved and side.sign * after <= limit:
                keep = coid
                continue
            self.canceling.add(coid)
            out.append(self.cancel(coid))
        if keep is None and not out and not pending and price is not None \
                and self.updates[sym] >= self.backoff.get((sym, side), 0):
            out.append(self.limit(sym, side, qty, price, tag="mm"))
        return out

    # -- host callbacks ---------------------------------------------------------------------------
    def handle_book(self, update: BookUpdate) -> list[OrderIntent]:
        """As the base, but a stale or crossed book pulls this symbol's quotes: their prices are blind."""
        if update.tradeable:
            return super().handle_book(update)
        super().handle_book(update)
        out = []
        for coid in self.working_orders(update.symbol):
            if coid not in self.canceling:
                self.canceling.add(coid)
                out.append(self.cancel(coid))
        return out

    def handle_decision(self, decision: RiskDecision, intent: OrderIntent) -> None:
        super().handle_decision(decision, intent)
        if decision.approved:
            return
        if intent.action is IntentAction.CANCEL:
            coid = intent.target_client_order_id or ""
            self.canceling.discard(coid)
            if decision.reason is RejectReason.UNKNOWN_ORDER:
                # Risk holds no such working order: it ended and its report is the one thing missing.
                self.working.pop(coid, None)
        else:
            key = (intent.symbol, intent.side)
            self.backoff[key] = self.updates.get(intent.symbol, 0) + self.params["reject_backoff_updates"]
