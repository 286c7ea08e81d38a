"""Pre-trade risk checks as plain Python: the risk actor wraps this, backtests reuse it.

The engine keeps the cluster-wide view every check needs: positions (from fills),
reservations for every approved order still working (so two strategies on two
nodes can never jointly exceed a limit), reference prices and kill switches.
Checks run in a fixed order and the first refusal wins; every decision carries
the numbers that decided it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cluster.config import RiskLimits, RiskSection, SymbolSection
from cluster.messages import (
    ExecutionReport,
    IntentAction,
    Order,
    OrderIntent,
    OrderType,
    Position,
    RejectReason,
    RiskDecision,
    Side,
    now_ns,
)

GLOBAL = "global"


def kill_scope_venue(venue: str) -> str:
    return f"venue:{venue}"


def kill_scope_strategy(strategy: str) -> str:
    return f"strategy:{strategy}"


@dataclass
class Reservation:
    """The part of an approved order that could still fill."""

    strategy: str
    venue: str
    symbol: str
    side: Side
    remaining: float
    price: float | None


@dataclass
class CheckContext:
    intent: OrderIntent
    now_ns: int
    mark: float | None = None
    values: dict[str, float] = field(default_factory=dict)


Check = Callable[["RiskEngine", CheckContext], RiskDecision | None]


class RiskEngine:
    def __init__(self, limits: RiskSection, symbols: Iterable[SymbolSection], venues: Iterable[str]):
        self.limits = limits
        self.symbols = {s.symbol: s for s in symbols}
        self.venues = set(venues)
        self.kill_switches: set[str] = {GLOBAL} if limits.kill_switch else set()
        self.positions: dict[tuple[str, str], float] = {}  # (strategy, symbol) -> qty
        self.net: dict[str, float] = {}  # symbol -> qty over all strategies
        self.reservations: dict[str, Reservation] = {}  # client_order_id -> reservation
        self.marks: dict[str, tuple[float, int]] = {}  # symbol -> (mid, ts_ns)
        self.seen_fills: set[str] = set()  # "<venue>:<trade_id>": a fill is counted once, even across restarts
        self.checks: list[Check] = [
            _check_known, _check_kill_switch, _check_quantity, _check_reference_price,
            _check_order_size, _check_position,
        ]

    # -- state updates -------------------------------------------------------------------------
    def set_mark(self, symbol: str, mid: float, ts_ns: int) -> None:
        prev = self.marks.get(symbol)
        if prev is None or ts_ns >= prev[1]:
            self.marks[symbol] = (mid, ts_ns)

    def set_kill_switch(self, scope: str, on: bool) -> None:
        if on:
            self.kill_switches.add(scope)
        else:
            self.kill_switches.discard(scope)

    def reserve(self, order: Order) -> None:
        self.reservations[order.client_order_id] = Reservation(
            order.strategy, order.venue, order.symbol, order.side, order.remaining, order.price)

    def release(self, client_order_id: str) -> None:
        self.reservations.pop(client_order_id, None)

    def on_report(self, report: ExecutionReport) -> None:
        """Move filled quantity from the reservation into the position; free it when the order ends."""
        if report.fill is not None:
            f = report.fill
            fill_key = f"{f.venue}:{f.trade_id}"
            if fill_key in self.seen_fills:
                return
            self.seen_fills.add(fill_key)
            key = (f.strategy, f.symbol)
            signed = f.side.sign * f.qty
            self.positions[key] = self.positions.get(key, 0.0) + signed
            self.net[f.symbol] = self.net.get(f.symbol, 0.0) + signed
            res = self.reservations.get(report.client_order_id)
            if res is not None:
                res.remaining = max(0.0, res.remaining - f.qty)
        if report.status.is_terminal:
            self.release(report.client_order_id)

    def load(self, positions: Iterable[Position], open_orders: Iterable[Order], seen_fills: Iterable[str] = ()) -> None:
        """Rebuild from Redis after a restart: positions, the reservations of open orders, fills already counted."""
        self.seen_fills = set(seen_fills)
        self.positions.clear()
        self.net.clear()
        self.reservations.clear()
        for p in positions:
            self.positions[(p.strategy, p.symbol)] = self.positions.get((p.strategy, p.symbol), 0.0) + p.qty
            self.net[p.symbol] = self.net.get(p.symbol, 0.0) + p.qty
        for o in open_orders:
            if not o.status.is_terminal:
                self.reserve(o)

    # -- limits ----------------------------------------------------------------------------------
    def scopes(self, intent: OrderIntent) -> list[tuple[str, RiskLimits]]:
        out = [("defaults", self.limits.defaults)]
        for name, table, key in (("venue", self.limits.venues, intent.venue),
                                 ("strategy", self.limits.strategies, intent.strategy),
                                 ("symbol", self.limits.symbols, intent.symbol)):
            if key in table:
                out.append((f"{name}:{key}", table[key]))
        return out

    def limit(self, intent: OrderIntent, name: str) -> tuple[float | None, str]:
        """The tightest value of one limit over all scopes that apply, and the scope it came from."""
        best: float | None = None
        where = ""
        for scope, lim in self.scopes(intent):
            v = getattr(lim, name)
            if v is not None and (best is None or v < best):
                best, where = v, scope
        return best, where

    def open_exposure(self, symbol: str, strategy: str | None = None) -> tuple[float, float]:
        """Open (unfilled) buy and sell quantity of working orders, cluster-wide or for one strategy."""
        buys = sells = 0.0
        for r in self.reservations.values():
            if r.symbol == symbol and (strategy is None or r.strategy == strategy):
                if r.side is Side.BUY:
                    buys += r.remaining
                else:
                    sells += r.remaining
        return buys, sells

    # -- the decision ------------------------------------------------------------------------------
    def check(self, intent: OrderIntent, now: int | None = None) -> RiskDecision:
        ctx = CheckContext(intent=intent, now_ns=now if now is not None else now_ns())
        if intent.action is IntentAction.CANCEL:
            return self._check_cancel(ctx)
        for check in self.checks:
            refused = check(self, ctx)
            if refused is not None:
                return refused
        return self.decide(ctx, True, RejectReason.NONE, "approved")

    def decide(self, ctx: CheckContext, approved: bool, reason: RejectReason, detail: str) -> RiskDecision:
        i = ctx.intent
        return RiskDecision(approved=approved, reason=reason, strategy=i.strategy, venue=i.venue, symbol=i.symbol,
                            action=i.action, detail=detail, values=ctx.values, ts_ns=ctx.now_ns)

    def _check_cancel(self, ctx: CheckContext) -> RiskDecision:
        """Cancels always pass (they only lower risk) if the order is this strategy's and still working."""
        coid = ctx.intent.target_client_order_id
        res = self.reservations.get(coid or "")
        if res is None:
            return self.decide(ctx, False, RejectReason.UNKNOWN_ORDER, f"no working order {coid!r}")
        if res.strategy != ctx.intent.strategy:
            return self.decide(ctx, False, RejectReason.UNKNOWN_ORDER, f"order {coid!r} belongs to another strategy")
        return self.decide(ctx, True, RejectReason.NONE, "cancel approved")


def _check_known(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    i = ctx.intent
    if i.venue not in eng.venues:
        return eng.decide(ctx, False, RejectReason.UNKNOWN_VENUE, f"venue {i.venue!r} is not configured")
    sym = eng.symbols.get(i.symbol)
    if sym is None or sym.venue != i.venue:
        return eng.decide(ctx, False, RejectReason.UNKNOWN_SYMBOL, f"symbol {i.symbol!r} is not configured on {i.venue!r}")
    return None


def _check_kill_switch(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    i = ctx.intent
    for scope in (GLOBAL, kill_scope_venue(i.venue), kill_scope_strategy(i.strategy)):
        if scope in eng.kill_switches:
            return eng.decide(ctx, False, RejectReason.KILL_SWITCH, f"kill switch on ({scope})")
    return None


def _check_quantity(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    i = ctx.intent
    ctx.values["qty"] = i.qty
    if not (math.isfinite(i.qty) and i.qty > 0):
        return eng.decide(ctx, False, RejectReason.INVALID_ORDER, f"quantity {i.qty!r} must be a positive number")
    if i.order_type is OrderType.LIMIT:
        if i.price is None or not (math.isfinite(i.price) and i.price > 0):
            return eng.decide(ctx, False, RejectReason.INVALID_ORDER, f"limit price {i.price!r} must be a positive number")
        ctx.values["price"] = i.price
    return None


def _check_reference_price(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    """Notional limits need a fresh reference price; without one the order cannot be priced: refuse."""
    i = ctx.intent
    mark = eng.marks.get(i.symbol)
    if mark is not None:
        age_s = (ctx.now_ns - mark[1]) / 1e9
        ctx.values["mark_age_s"] = age_s
        if age_s <= eng.limits.max_mark_age_s:
            ctx.mark = mark[0]
            ctx.values["mark"] = mark[0]
    if ctx.mark is None and i.order_type is OrderType.MARKET:
        return eng.decide(ctx, False, RejectReason.NO_REFERENCE_PRICE,
                          f"no reference price for {i.symbol} younger than {eng.limits.max_mark_age_s}s")
    return None


def _order_price(ctx: CheckContext) -> float | None:
    i = ctx.intent
    if i.order_type is OrderType.LIMIT and i.price is not None:
        # A buy above the mark or a sell below it is priced at the worse of the two.
        if ctx.mark is None:
            return i.price
        return max(i.price, ctx.mark) if i.side is Side.BUY else min(i.price, ctx.mark)
    return ctx.mark


def _check_order_size(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    i = ctx.intent
    max_qty, where = eng.limit(i, "max_order_qty")
    if max_qty is not None:
        ctx.values["max_order_qty"] = max_qty
        if i.qty > max_qty:
            return eng.decide(ctx, False, RejectReason.MAX_ORDER_QTY, f"qty {i.qty} > max_order_qty {max_qty} ({where})")
    max_notional, where = eng.limit(i, "max_order_notional")
    if max_notional is not None:
        price = _order_price(ctx)
        if price is None:
            return eng.decide(ctx, False, RejectReason.NO_REFERENCE_PRICE, "no price to value the order's notional")
        notional = i.qty * price
        ctx.values["notional"] = notional
        ctx.values["max_order_notional"] = max_notional
        if notional > max_notional:
            return eng.decide(ctx, False, RejectReason.MAX_ORDER_NOTIONAL,
                              f"notional {notional:.2f} > max_order_notional {max_notional} ({where})")
    return None


def _worst_case(position: float, open_buys: float, open_sells: float, intent: OrderIntent) -> float:
    """The position if every working order on the intent's side, and the intent, filled."""
    if intent.side is Side.BUY:
        return position + open_buys + intent.qty
    return position - open_sells - intent.qty


def _check_position(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    i = ctx.intent
    cluster_scopes = [(s, lim) for s, lim in eng.scopes(i) if not s.startswith("strategy:")]
    strategy_scopes = [(s, lim) for s, lim in eng.scopes(i) if s.startswith("strategy:")]
    for scopes, position, exposure in (
        (cluster_scopes, eng.net.get(i.symbol, 0.0), eng.open_exposure(i.symbol)),
        (strategy_scopes, eng.positions.get((i.strategy, i.symbol), 0.0), eng.open_exposure(i.symbol, i.strategy)),
    ):
        if not scopes:
            continue
        worst = _worst_case(position, *exposure, i)
        reduces = abs(worst) <= abs(position)
        for scope, lim in scopes:
            if lim.max_position_qty is not None and abs(worst) > lim.max_position_qty and not reduces:
                ctx.values.update(position=position, worst_case=worst, max_position_qty=lim.max_position_qty)
                return eng.decide(ctx, False, RejectReason.POSITION_LIMIT,
                                  f"worst-case position {worst:g} would exceed max_position_qty {lim.max_position_qty} ({scope})")
            if lim.max_position_notional is not None and not reduces:
                price = _order_price(ctx)
                if price is None:
                    return eng.decide(ctx, False, RejectReason.NO_REFERENCE_PRICE, "no price to value the position")
                notional = abs(worst) * price
                if notional > lim.max_position_notional:
                    ctx.values.update(position=position, worst_case_notional=notional,
                                      max_position_notional=lim.max_position_notional)
                    return eng.decide(ctx, False, RejectReason.POSITION_NOTIONAL_LIMIT,
                                      f"worst-case position notional {notional:.2f} would exceed "
                                      f"{lim.max_position_notional} ({scope})")
        ctx.values.setdefault("position", position)
        ctx.values.setdefault("worst_case", worst)
    return None
