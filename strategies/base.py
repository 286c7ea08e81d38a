"""The strategy API: one plain class, no Ray in it.

A strategy reacts to market data and to its own orders' execution reports by
returning order intents. The generic `StrategyActor` hosts any subclass, sends
the intents to the risk actor and feeds decisions and reports back. The same
class runs in backtests unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from cluster.messages import (
    BookUpdate,
    ExecutionReport,
    IntentAction,
    OrderIntent,
    OrderType,
    RiskDecision,
    Side,
    TimeInForce,
    Trade,
    now_ns,
)


class StrategyParamError(ValueError):
    """A parameter is unknown or has a bad value; the message names it."""


class Strategy:
    """Base class. Subclasses set `defaults` and override the `on_*` hooks they need.

    State the base keeps for every strategy: the latest book per symbol, the
    net position per symbol (from fills) and the strategy's working orders
    (approved and not yet terminal), so subclasses need not track them.
    """

    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str, symbols: list[str], venues: Mapping[str, str], params: Mapping[str, Any] | None = None):
        self.name = name
        self.symbols = list(symbols)
        self.venues = dict(venues)  # symbol -> venue
        self.params: dict[str, Any] = dict(self.defaults)
        self.books: dict[str, BookUpdate] = {}
        self.positions: dict[str, float] = dict.fromkeys(self.symbols, 0.0)
        self.working: dict[str, ExecutionReport | OrderIntent] = {}
        self.rejections: dict[str, int] = {}
        # "<venue>:<trade id>" of every fill counted: a report delivered twice moves the position once.
        self.seen_fills: set[str] = set()
        # Venue lot size per symbol: set by the host (`set_instruments`) or inferred from the books.
        self.lot_sizes: dict[str, float] = {}
        self._inferred_lots: dict[str, float] = {}
        self.set_params(params or {})

    # -- instruments ------------------------------------------------------------------------------
    def set_instruments(self, lot_sizes: Mapping[str, float]) -> None:
        """Tell the strategy each symbol's lot size (order quantities are rounded down onto it)."""
        self.lot_sizes.update({s: float(v) for s, v in lot_sizes.items() if v and v > 0})

    def lot_size(self, symbol: str) -> float:
        """The known lot, else one inferred from book quantities (0: unknown, quantities are not rounded).

        Inference takes 10**-d, d the most decimals any seen quantity has: a multiple of the true lot
        whenever that lot is a power of ten. Books whose quantities are all whole numbers say nothing
        (the lot may be finer), so they leave the lot unknown.
        """
        return self.lot_sizes.get(symbol) or self._inferred_lots.get(symbol, 0.0)

    def round_qty(self, symbol: str, qty: float) -> float:
        """`qty` rounded down onto the symbol's lot (unchanged when the lot is unknown)."""
        lot = self.lot_size(symbol)
        if lot <= 0 or qty <= 0:
            return qty
        n = math.floor(qty / lot + 1e-9)
        return round(n * lot, max(0, -math.floor(math.log10(lot))) + 2)

    def _infer_lot(self, update: BookUpdate) -> None:
        decimals = 0
        for _, q in (*update.bids[:5], *update.asks[:5]):
            for d in range(decimals, 10):
                if abs(q * 10**d - round(q * 10**d)) < 1e-6:
                    decimals = max(decimals, d)
                    break
        if decimals > 0:
            lot = 10.0**-decimals
            known = self._inferred_lots.get(update.symbol)
            if known is None or lot < known:
                self._inferred_lots[update.symbol] = lot

    # -- parameters -------------------------------------------------------------------------------
    def set_params(self, params: Mapping[str, Any]) -> None:
        """Validate and apply parameters; the type of each default is the type a value must have.

        All or nothing: if any value is refused, the parameters stay as they were.
        """
        before = dict(self.params)
        try:
            self._apply_params(params)
        except StrategyParamError:
            self.params = before
            self.validate_params()
            raise

    def _apply_params(self, params: Mapping[str, Any]) -> None:
        for key, value in params.items():
            if key not in self.defaults:
                raise StrategyParamError(f"{type(self).__name__}: unknown parameter {key!r}; known: {sorted(self.defaults)}")
            default = self.defaults[key]
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise StrategyParamError(f"{type(self).__name__}: parameter {key!r} must be true or false, got {value!r}")
            elif isinstance(default, (int, float)):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise StrategyParamError(f"{type(self).__name__}: parameter {key!r} must be a number, got {value!r}")
                value = type(default)(value) if isinstance(default, float) or float(value).is_integer() else value
            self.params[key] = value
        self.validate_params()

    def validate_params(self) -> None:
        """Override to check relations between parameters (raise StrategyParamError)."""

    # -- hooks ------------------------------------------------------------------------------------
    def on_book(self, update: BookUpdate) -> list[OrderIntent]:
        return []

    def on_trade(self, trade: Trade) -> list[OrderIntent]:
        return []

    def on_fill(self, report: ExecutionReport) -> list[OrderIntent]:
        return []

    def on_timer(self, now: int) -> list[OrderIntent]:
        return []

    # -- called by the host -----------------------------------------------------------------------
    def handle_book(self, update: BookUpdate) -> list[OrderIntent]:
        if update.symbol not in self.books and update.symbol not in self.lot_sizes:
            self._infer_lot(update)  # from the first book of each symbol: cheap, and enough for a power-of-ten lot
        self.books[update.symbol] = update
        if not update.tradeable:
            return []
        return self.on_book(update)

    def handle_decision(self, decision: RiskDecision, intent: OrderIntent) -> None:
        if decision.approved and decision.client_order_id and intent.action is IntentAction.NEW:
            self.working[decision.client_order_id] = intent
        elif not decision.approved:
            self.rejections[decision.reason.value] = self.rejections.get(decision.reason.value, 0) + 1

    def handle_report(self, report: ExecutionReport) -> list[OrderIntent]:
        fill = report.fill
        if fill is not None:
            key = f"{fill.venue}:{fill.trade_id}"
            if key in self.seen_fills:
                fill = None
            else:
                self.seen_fills.add(key)
                self.positions[fill.symbol] = self.positions.get(fill.symbol, 0.0) + fill.side.sign * fill.qty
        if report.status.is_terminal:
            self.working.pop(report.client_order_id, None)
        elif report.client_order_id in self.working:
            self.working[report.client_order_id] = report
        return self.on_fill(report) if fill is not None else []

    # -- helpers for subclasses -------------------------------------------------------------------
    def working_orders(self, symbol: str, side: Side | None = None) -> list[str]:
        out = []
        for coid, o in self.working.items():
            if o.symbol == symbol and (side is None or o.side is side):
                out.append(coid)
        return out

    def limit(self, symbol: str, side: Side, qty: float, price: float, tag: str = "",
              tif: TimeInForce = TimeInForce.GTC) -> OrderIntent:
        """A limit order intent; `qty` is rounded down onto the symbol's lot (see `round_qty`)."""
        return OrderIntent(strategy=self.name, venue=self.venues[symbol], symbol=symbol, side=side,
                           qty=self.round_qty(symbol, qty), order_type=OrderType.LIMIT, price=price, tif=tif, tag=tag,
                           created_ts_ns=now_ns())

    def market(self, symbol: str, side: Side, qty: float, tag: str = "") -> OrderIntent:
        return OrderIntent(strategy=self.name, venue=self.venues[symbol], symbol=symbol, side=side,
                           qty=self.round_qty(symbol, qty),
                           order_type=OrderType.MARKET, tif=TimeInForce.IOC, tag=tag, created_ts_ns=now_ns())

    def cancel(self, client_order_id: str) -> OrderIntent:
        o = self.working[client_order_id]
        return OrderIntent(strategy=self.name, venue=o.venue, symbol=o.symbol, action=IntentAction.CANCEL,
                           side=o.side, target_client_order_id=client_order_id, created_ts_ns=now_ns())
