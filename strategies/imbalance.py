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

Speed. `handle_book` runs on every book (backtests replay hundreds of thousands), and almost
every book ends at the persistence test. So the base class's bookkeeping and the signal are one
function (`on_book` is the same function), the per-symbol state is one slotted object, the
parameters the hot path reads are copied into attributes by `validate_params`, and the imbalance
is a function unrolled for the configured (levels, decay) (`imbalance_function`), which reads only
the quantities of the levels it weighs. Each gives the same numbers as the plain version.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from cluster.messages import BookUpdate, IntentAction, Level, OrderIntent, RiskDecision, Side, TimeInForce
from strategies.base import Strategy, StrategyParamError
from strategies.market_maker import BPS, realized_vol_bps

MIN_PERSISTENCE = 3  # the rule: a signal only after at least 3 updates in the same direction
MAX_UNROLLED_LEVELS = 32  # deeper imbalances use the loop (the unrolled source would only grow)

Imbalance = Callable[[Sequence[Level], Sequence[Level]], float]


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


@functools.lru_cache(maxsize=64)
def imbalance_function(levels: int, decay: float) -> Imbalance:
    """`weighted_imbalance` for fixed (levels, decay) as f(bids, asks), unrolled: the same result, bit for bit.

    A loop over (level, weight) pairs spends most of its time in the loop itself; one expression
    `bids[0][1] + bids[1][1] * 0.5 + ...` adds the same products in the same order, and reads only
    the quantities (not the prices) of the levels it weighs. What it leaves out changes no result:
    the loop's start at 0.0 only turns a first product of -0.0 into 0.0, a sign of zero that cannot
    reach the result (an all-zero side either leaves the other side's value or makes the total 0),
    and the touch's weight is 1.0, by which a product is the quantity itself (an int quantity turns
    float when the next product is added; with a single level the `* 1.0` stays). A book shallower than
    `levels` on either side (an IndexError, free to guard against) goes to `weighted_imbalance`.
    """
    if levels > MAX_UNROLLED_LEVELS:
        return functools.partial(weighted_imbalance, levels=levels, decay=decay)
    weights = level_weights(levels, decay)

    def side(book: str) -> str:  # the weights as literals: repr of a float reads back as the same float
        terms = [f"{book}[{i}][1] * {w!r}" for i, w in enumerate(weights)]
        if levels > 1:
            terms[0] = f"{book}[0][1]"  # weights[0] == decay**0 == 1.0
        return " + ".join(terms)

    source = (f"def imbalance(bids, asks):\n"
              f"    try:\n"
              f"        b = {side('bids')}\n"
              f"        a = {side('asks')}\n"
              f"    except IndexError:\n"
              f"        return weighted_imbalance(bids, asks, {levels}, decay)\n"
              f"    total = a + b\n"
              f"    return (b - a) / total if total > 0.0 else 0.0\n")
    scope: dict[str, Any] = {"weighted_imbalance": weighted_imbalance, "decay": decay}
    exec(compile(source, f"<imbalance levels={levels} decay={decay!r}>", "exec"), scope)  # noqa: S102 - our own source
    fn: Imbalance = scope["imbalance"]
    return fn


class SymbolState:
    """One symbol's signal state: update count, signal run, holding time, reject backoff, windows.

    `run` is the streak signed by its direction: +k after k consecutive bid-heavy updates, -k after
    k ask-heavy ones, 0 after a neutral update or a reset (the next signal then starts a streak of 1,
    whichever its direction, exactly as a streak of 0 with a remembered direction would).
    """

    __slots__ = ("updates", "run", "held", "backoff", "imbalance", "mids", "times")

    def __init__(self, window: int) -> None:
        self.updates = 0
        self.run = 0
        self.held = 0
        self.backoff = 0  # no entry or exit before `updates` reaches this
        self.imbalance = 0.0
        self.mids: deque[float] = deque(maxlen=window)
        self.times: deque[int] = deque(maxlen=window)


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
        self.state: dict[str, SymbolState] = {}
        super().__init__(name, symbols, venues, params)

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
        # What handle_book reads on every book, copied out of `params` (a live change comes through here too).
        self._imbalance = imbalance_function(p["levels"], p["decay"])
        self._threshold = p["threshold"]
        self._persistence = p["persistence"]
        self._neg_threshold = -p["threshold"]
        self._neg_persistence = -p["persistence"]
        self._window = size = max(p["vol_window"], p["momentum_window"] + 1)
        for st in self.state.values():  # a live change resizes the windows
            st.mids = deque(st.mids, maxlen=size)
            st.times = deque(st.times, maxlen=size)

    # -- state, readable by symbol ------------------------------------------------------------------
    def _state(self, symbol: str) -> SymbolState:
        st = self.state.get(symbol)
        if st is None:
            st = self.state[symbol] = SymbolState(self._window)
        return st

    @property
    def mids(self) -> dict[str, deque[float]]:
        """symbol -> the latest mids (the momentum and volatility windows)."""
        return {sym: st.mids for sym, st in self.state.items()}

    @property
    def times(self) -> dict[str, deque[int]]:
        """symbol -> the times of `mids` (exchange time, else receive time)."""
        return {sym: st.times for sym, st in self.state.items()}

    @property
    def last_imbalance(self) -> dict[str, float]:
        """symbol -> the imbalance of its latest tradeable book."""
        return {sym: st.imbalance for sym, st in self.state.items()}

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
    def handle_book(self, update: BookUpdate) -> list[OrderIntent]:
        """`Strategy.handle_book` (lot inference, the latest book, nothing on a book that is not tradeable)
        and the signal in one frame, since this runs on every book (see `on_book` below)."""
        sym = update.symbol
        books = self.books
        if sym not in books and sym not in self.lot_sizes:
            self._infer_lot(update)
        books[sym] = update
        bids = update.bids
        asks = update.asks
        if not bids or not asks or update.crossed or update.stale:
            return []
        best_bid = bids[0][0]
        best_ask = asks[0][0]
        mid = (best_bid + best_ask) / 2.0
        if mid <= 0.0:
            return []
        st = self.state.get(sym) or self._state(sym)
        st.updates = n = st.updates + 1
        mids = st.mids
        mids.append(mid)
        st.times.append(update.exchange_ts_ns or update.receive_ts_ns)

        imbalance = self._imbalance  # an attribute, not a method: loaded as one, the call is specialized
        st.imbalance = imb = imbalance(bids, asks)
        if imb > self._threshold:
            run = st.run
            st.run = run = run + 1 if run > 0 else 1
        elif imb < self._neg_threshold:
            run = st.run
            st.run = run = run - 1 if run < 0 else -1
        else:
            st.run = run = 0

        if self.working and self.working_orders(sym):
            return []  # an IOC is in flight: its report decides what comes next
        pos = self.positions.get(sym, 0.0)
        if pos > 1e-12 or pos < -1e-12:
            st.held += 1
            return [] if n < st.backoff else self._close(update, pos, (run > 0) - (run < 0))
        st.held = 0
        if run < self._persistence and run > self._neg_persistence or n < st.backoff:  # |run| < persistence
            return []
        return self._enter(update, st, mid, 1 if run > 0 else -1)

    # The hook `Strategy.handle_book` calls, for a tradeable book it has just recorded: here the hook is
    # that same function, whose bookkeeping repeats what was done and whose tradeable test passes.
    on_book = handle_book

    def _enter(self, update: BookUpdate, st: SymbolState, mid: float, d: int) -> list[OrderIntent]:
        """A persistent signal on a flat symbol: the momentum, spread and volatility filters, then the IOC."""
        p = self.params
        mids = st.mids
        k = len(mids)
        window = p["momentum_window"] + 1  # the mid change over the last `window` mids
        momentum = mids[-1] - mids[k - window if k > window else 0]
        if momentum * d < 0 or (momentum == 0 and not p["allow_flat_momentum"]):
            return []
        best_bid, best_ask = update.bids[0][0], update.asks[0][0]
        if (best_ask - best_bid) / mid * BPS > p["max_spread_bps"]:
            return []
        vol_mids = list(mids)[-p["vol_window"]:]
        vol = realized_vol_bps(vol_mids, list(st.times)[-len(vol_mids):])
        if vol > p["max_vol_bps"]:
            return []
        sym = update.symbol
        qty = self.round_qty(sym, self.entry_qty(mid, vol))
        if qty <= 0:
            return []
        st.run = 0
        side = Side.BUY if d > 0 else Side.SELL
        price = best_ask if side is Side.BUY else best_bid
        return [self.limit(sym, side, qty, price, tag="obi-entry", tif=TimeInForce.IOC)]

    def _close(self, update: BookUpdate, pos: float, d: int) -> list[OrderIntent]:
        """Close when the signal points against the position or the holding time is up."""
        sym = update.symbol
        st = self.state[sym]
        flipped = d != 0 and d != (1 if pos > 0 else -1)
        if not flipped and st.held < self.params["hold_updates"]:
            return []
        side = Side.SELL if pos > 0 else Side.BUY
        price = update.best_bid if side is Side.SELL else update.best_ask
        assert price is not None
        st.run = 0
        return [self.limit(sym, side, abs(pos), price, tag="obi-exit", tif=TimeInForce.IOC)]

    # -- host callbacks ---------------------------------------------------------------------------
    def handle_decision(self, decision: RiskDecision, intent: OrderIntent) -> None:
        super().handle_decision(decision, intent)
        if not decision.approved and intent.action is IntentAction.NEW:
            # Retrying every update would only collect the same rejection; closes retry after the pause too.
            st = self._state(intent.symbol)
            st.backoff = st.updates + self.params["reject_backoff_updates"]
