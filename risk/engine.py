"""Pre-trade risk checks as plain Python: the risk actor wraps this, backtests reuse it.

The engine keeps the cluster-wide view every check needs: positions (from fills),
reservations for every approved order still working (so two strategies on two
nodes can never jointly exceed a limit), reference prices, kill switches, trading
states, rate windows and loss breakers. Checks are a list of functions run in a
fixed order; the first refusal wins; every decision carries the numbers that
decided it.

Per-decision work is O(1): the limits that apply to a (strategy, venue, symbol) are
resolved once and cached, with the plan of checks that can refuse its orders (a check
with nothing configured for it is left out of the plan, never run to find nothing);
open quantity, open-order counts, exposure sums and rate windows are kept
incrementally as orders are reserved, filled and released.

Notional intents (`notional` set, `qty` 0, market orders only) are checked as
qty = notional / the fresh mid the collar uses, in every check; the order carries
that estimate and the notional.

State changes come in three calls: `check` (decide, no state change except cancel
rates), `reserve` (an approved order is sent: reserve its limits and count its use),
`on_report` (fills move quantity from the reservation into the position; a
terminal report releases what is left).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedList

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
    TimeInForce,
    now_ns,
)
from risk.exposure import CLUSTER, ExposureBook
from risk.limits import HIGHER_IS_TIGHTER
from risk.losses import LossMonitor, Trip
from risk.rates import MINUTE_NS, SECOND_NS, DuplicateFilter, RateBook
from risk.schedule import Schedule
from risk.trading_state import TradingState, TradingStatus, auto_allowed

GLOBAL = "global"
EPS = 1e-9
INF = math.inf
# Members the decision path compares with on every order, as module names: in Python 3.11 `Side.BUY` costs
# a metaclass lookup (~0.2 us) each time.
_BUY = Side.BUY
_LIMIT, _MARKET = OrderType.LIMIT, OrderType.MARKET
_CANCEL = IntentAction.CANCEL
_NO_REASON = RejectReason.NONE


def kill_scope_venue(venue: str) -> str:
    return f"venue:{venue}"


def kill_scope_strategy(strategy: str) -> str:
    return f"strategy:{strategy}"


@dataclass(slots=True)
class Reservation:
    """The part of an approved order that could still fill."""

    strategy: str
    venue: str
    symbol: str
    side: Side
    remaining: float
    price: float | None


class Resolved:
    """The limits that apply to one (strategy, venue, symbol): the tightest value and the scope it came from."""

    def __init__(self, section: RiskSection, strategy: str, venue: str, symbol: str, sym: SymbolSection | None):
        d = section.defaults
        v = section.venues.get(venue)
        st = section.strategies.get(strategy)
        sy = section.symbols.get(symbol)
        every = [("defaults", d), (f"venue:{venue}", v), (f"strategy:{strategy}", st), (f"symbol:{symbol}", sy)]
        cluster_pos = [("defaults", d), (f"venue:{venue}", v), (f"symbol:{symbol}", sy)]
        per_strategy = [("defaults", d), (f"strategy:{strategy}", st)]
        self.where: dict[str, str] = {}
        self.order_qty = self._tight("max_order_qty", every)
        self.order_notional = self._tight("max_order_notional", every)
        self.min_notional = self._tight("min_order_notional", every)
        self.collar_bps = self._tight("price_collar_bps", every)
        self.slippage_bps = self._tight("max_slippage_bps", every)
        self.dup_window_ns = _ns(self._tight("duplicate_window_s", every))
        self.cl_pos_qty = self._tight("max_position_qty", cluster_pos, "cluster_")
        self.cl_pos_notional = self._tight("max_position_notional", cluster_pos, "cluster_")
        self.st_pos_qty = self._tight("max_position_qty", [(f"strategy:{strategy}", st)], "strategy_")
        self.st_pos_notional = self._tight("max_position_notional", [(f"strategy:{strategy}", st)], "strategy_")
        self.st_orders_s = self._tight("max_orders_per_s", per_strategy, "strategy_")
        self.st_orders_m = self._tight("max_orders_per_min", per_strategy, "strategy_")
        self.st_cancels_s = self._tight("max_cancels_per_s", per_strategy, "strategy_")
        self.st_cancels_m = self._tight("max_cancels_per_min", per_strategy, "strategy_")
        self.st_open = self._tight("max_open_orders", per_strategy, "strategy_")
        vonly = [(f"venue:{venue}", v)]
        self.v_orders_s = self._tight("max_orders_per_s", vonly, "venue_")
        self.v_orders_m = self._tight("max_orders_per_min", vonly, "venue_")
        self.v_cancels_s = self._tight("max_cancels_per_s", vonly, "venue_")
        self.v_cancels_m = self._tight("max_cancels_per_min", vonly, "venue_")
        self.v_open = self._tight("max_open_orders", vonly, "venue_")
        self.sym_open = self._tight("max_open_orders", [(f"symbol:{symbol}", sy)], "symbol_")
        self.has_rates = any(x is not None for x in (self.st_orders_s, self.st_orders_m, self.v_orders_s,
                                                     self.v_orders_m))
        self.has_open = any(x is not None for x in (self.st_open, self.v_open, self.sym_open))
        # (bucket, max_gross, max_net, scope) for each scope that sets an exposure limit.
        self.exposure: list[tuple[str, float | None, float | None, str]] = []
        for bucket, scope, lim in ((CLUSTER, "defaults", d), (f"venue:{venue}", f"venue:{venue}", v),
                                   (f"strategy:{strategy}", f"strategy:{strategy}", st)):
            if lim is not None and (lim.max_gross_exposure is not None or lim.max_net_exposure is not None):
                self.exposure.append((bucket, lim.max_gross_exposure, lim.max_net_exposure, scope))
        self.k_strategy, self.k_venue, self.k_symbol = f"strategy:{strategy}", f"venue:{venue}", f"symbol:{symbol}"
        # Only the limits that are set, so a check loops over what applies.
        self.rates = [(k, ps, pm) for k, ps, pm in ((self.k_strategy, self.st_orders_s, self.st_orders_m),
                                                    (self.k_venue, self.v_orders_s, self.v_orders_m))
                      if ps is not None or pm is not None]
        self.open_limits = [(k, lim) for k, lim in ((self.k_strategy, self.st_open), (self.k_venue, self.v_open),
                                                    (self.k_symbol, self.sym_open)) if lim is not None]
        self.positions = [(bucket, q, n, self.where.get(prefix + "max_position_qty", ""),
                           self.where.get(prefix + "max_position_notional", ""))
                          for bucket, q, n, prefix in ((CLUSTER, self.cl_pos_qty, self.cl_pos_notional, "cluster_"),
                                                       (self.k_strategy, self.st_pos_qty, self.st_pos_notional,
                                                        "strategy_"))
                          if q is not None or n is not None]
        self.kill_scopes = frozenset({GLOBAL, f"venue:{venue}", f"strategy:{strategy}"})
        self.state_scopes = (GLOBAL, f"venue:{venue}", f"strategy:{strategy}", f"symbol:{symbol}")
        self.venue = venue
        self.symbol = symbol
        self.rest_vs_buy = (symbol, Side.SELL)  # the resting orders a buy could cross
        self.rest_vs_sell = (symbol, Side.BUY)
        self.pos_checks: list[tuple[Any, float | None, float | None, str, str]] = []
        self.exp_checks: list[tuple[Any, Any, float | None, float | None, str]] = []
        self.sched_scopes: tuple[str, ...] = ()
        self.sched_second = -1
        self.sched_result: tuple[str, str] | None = None
        self.rate_checks: list[tuple[Any, str, float | None, float | None]] = []  # (RateCounter, key, /s, /min)
        self.plan: tuple[Check, ...] = ()  # the checks after `_check_known` that can refuse this triple's orders
        self.lot = sym.lot_size if sym is not None else 0.0
        self.lot_ok_qty = -1.0  # the last quantity found on the lot grid
        self.tick = sym.tick_size if sym is not None else 0.0

    def _tight(self, name: str, scopes: list[tuple[str, RiskLimits | None]], prefix: str = "") -> float | None:
        """The tightest value over the scopes that set it; `defaults` counts only where no other scope does,
        so a strategy (venue, symbol) can be given more room than the desk's default."""
        best: float | None = None
        higher = name in HIGHER_IS_TIGHTER
        specific = any(lim is not None and scope != "defaults" and getattr(lim, name) is not None
                       for scope, lim in scopes)
        for scope, lim in scopes:
            if lim is None or (specific and scope == "defaults"):
                continue
            v = getattr(lim, name)
            if v is not None and (best is None or (v > best if higher else v < best)):
                best = v
                self.where[prefix + name] = scope
        return best


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1e9)


class CheckContext:
    __slots__ = ("intent", "now_ns", "qty", "mark", "price", "order_price", "res", "values", "_reduces")

    def __init__(self, intent: OrderIntent, now: int, res: Resolved | None):
        self.intent = intent
        self.now_ns = now
        self.qty = intent.qty  # what every check counts: the intent's qty, or notional / mid for a notional intent
        self.mark: float | None = None  # a fresh reference price, if there is one
        self.price: float | None = None  # the price the order is valued (and, for market orders, protected) at
        self.order_price: float | None = intent.price  # the limit price, or a market order's protection price
        self.res = res
        self.values: dict[str, float] = {}
        self._reduces: bool | None = None


def dup_key(strategy: str, symbol: str, side: Side, price: float | None, qty: float,
            notional: float | None = None) -> tuple:
    """What makes two orders duplicates: a notional order is keyed by its notional, not its estimated qty."""
    if notional is not None:
        return (strategy, symbol, side, "notional", notional)
    return (strategy, symbol, side, price, qty)


Check = Callable[["RiskEngine", CheckContext], RiskDecision | None]


@dataclass
class RiskEvents:
    """What `evaluate` found: scopes to switch, exits to submit, whether a new trading day began."""

    trips: list[Trip] = field(default_factory=list)
    exits: list[OrderIntent] = field(default_factory=list)
    rearmed: list[str] = field(default_factory=list)


class RiskEngine:
    def __init__(self, limits: RiskSection, symbols: Iterable[SymbolSection], venues: Iterable[str]):
        self.limits = limits
        self.symbols = {s.symbol: s for s in symbols}
        self.venues = set(venues)
        self.kill_switches: set[str] = {GLOBAL} if limits.kill_switch else set()
        # Scopes that are not active (reducing or halted), with why.
        self.trading_states: dict[str, TradingStatus] = {}
        self.positions: dict[tuple[str, str], float] = {}  # (strategy, symbol) -> qty
        self.net: dict[str, float] = {}  # symbol -> qty over all strategies
        self.reservations: dict[str, Reservation] = {}  # client_order_id -> reservation
        self.marks: dict[str, tuple[float, int]] = {}  # symbol -> (mid, ts_ns)
        self.seen_fills: set[str] = set()  # "<venue>:<trade_id>": a fill is counted once, even across restarts
        self.exposure = ExposureBook()
        self.open_counts: dict[str, int] = {}  # "strategy:<s>" | "venue:<v>" | "symbol:<sym>" -> working orders
        self.resting: dict[tuple[str, Side], SortedList] = {}  # (symbol, side) -> prices of working orders
        self.order_rates = RateBook()  # keyed "strategy:<s>" / "venue:<v>"
        self.cancel_rates = RateBook()
        self.duplicates = DuplicateFilter()
        self.losses = LossMonitor(limits, {s.symbol: s.venue for s in self.symbols.values()})
        self.schedule = Schedule(limits.schedules)
        self._resolved: dict[str, dict[str, Resolved]] = {}  # strategy -> symbol -> resolved limits
        self.max_mark_age_ns = int(limits.max_mark_age_s * 1e9)
        self.checks: tuple[Check, ...] = CHECKS

    # -- limits ----------------------------------------------------------------------------------
    def set_limits(self, limits: RiskSection) -> None:
        """Apply changed limits (a `limits set` override); resolved limits are rebuilt on next use."""
        self.limits = limits
        self._resolved.clear()
        self.max_mark_age_ns = int(limits.max_mark_age_s * 1e9)
        self.losses.set_section(limits)
        self.schedule = Schedule(limits.schedules)

    def resolved(self, strategy: str, venue: str, symbol: str) -> Resolved:
        by_symbol = self._resolved.get(strategy)
        if by_symbol is None:
            by_symbol = self._resolved[strategy] = {}
        r = by_symbol.get(symbol)
        if r is None or r.venue != venue:
            r = by_symbol[symbol] = self._resolve(strategy, venue, symbol)
        return r

    def _resolve(self, strategy: str, venue: str, symbol: str) -> Resolved:
        """Resolve the limits and bind the exposure entries and schedule scopes they are checked against."""
        r = Resolved(self.limits, strategy, venue, symbol, self.symbols.get(symbol))
        book = self.exposure
        r.pos_checks = [(book.entry(bucket, symbol), q, n, wq, wn) for bucket, q, n, wq, wn in r.positions]
        r.exp_checks = [(book.bucket(bucket), book.entry(bucket, symbol), g, n, scope)
                        for bucket, g, n, scope in r.exposure]
        r.sched_scopes = tuple(sc for sc in r.state_scopes if sc in self.schedule.by_scope)
        r.rate_checks = [(self.order_rates.get(k), k, ps, pm) for k, ps, pm in r.rates]
        r.plan = tuple(c for c in self.checks[1:] if _applies(c, r, self))
        return r

    def scopes(self, intent: OrderIntent) -> list[tuple[str, RiskLimits]]:
        out: list[tuple[str, RiskLimits]] = [("defaults", self.limits.defaults)]
        for name, table, key in (("venue", self.limits.venues, intent.venue),
                                 ("strategy", self.limits.strategies, intent.strategy),
                                 ("symbol", self.limits.symbols, intent.symbol)):
            if key in table:
                out.append((f"{name}:{key}", table[key]))
        return out

    def limit(self, intent: OrderIntent, name: str) -> tuple[float | None, str]:
        """The tightest value of one limit over the scopes that apply (`defaults` only where no other
        scope sets it), and the scope it came from."""
        best: float | None = None
        where = ""
        scopes = self.scopes(intent)
        if any(getattr(lim, name) is not None for scope, lim in scopes if scope != "defaults"):
            scopes = [(scope, lim) for scope, lim in scopes if scope != "defaults"]
        for scope, lim in scopes:
            v = getattr(lim, name)
            if v is not None and (best is None or v < best):
                best, where = v, scope
        return best, where

    # -- state updates -------------------------------------------------------------------------
    def set_mark(self, symbol: str, mid: float, ts_ns: int) -> None:
        prev = self.marks.get(symbol)
        if prev is None or ts_ns >= prev[1]:
            self.marks[symbol] = (mid, ts_ns)
            self.exposure.set_price(symbol, mid)
            self.losses.set_mark(symbol, mid, ts_ns)

    def set_kill_switch(self, scope: str, on: bool) -> None:
        if on:
            self.kill_switches.add(scope)
        else:
            self.kill_switches.discard(scope)

    def set_trading_state(self, scope: str, status: TradingStatus | None) -> None:
        if status is None or status.state is TradingState.ACTIVE:
            self.trading_states.pop(scope, None)
        else:
            self.trading_states[scope] = status

    def reserve(self, order: Order, now: int | None = None) -> None:
        """An approved order is going to the gateway: reserve its limits and count it in rates and duplicates."""
        ts = now if now is not None else (order.created_ts_ns or now_ns())
        r = self._reserve(order)
        rates = self.order_rates
        if r is not None:  # the resolved limits' keys are the same strings, built once
            rates.add(r.k_strategy, ts)
            rates.add(r.k_venue, ts)
        else:
            rates.add(f"strategy:{order.strategy}", ts)
            rates.add(f"venue:{order.venue}", ts)
        self.duplicates.add(dup_key(order.strategy, order.symbol, order.side, order.price, order.qty,
                                    order.notional), ts)

    def reserve_open(self, order: Order) -> None:
        """Reserve the limits of a live order already counted in rates and duplicates when it was approved (an
        open order rebuilt after a restart or found at the gateway, or one risk gave up on that its gateway took
        after all); a terminal order has nothing to reserve."""
        if not order.status.is_terminal:
            self._reserve(order)

    def _reserve(self, order: Order) -> Resolved | None:
        """Reserve a working order's limits; its resolved limits, or None if it was reserved already."""
        coid = order.client_order_id
        reservations = self.reservations
        if coid in reservations:
            return None
        strategy, venue, symbol, side, price = order.strategy, order.venue, order.symbol, order.side, order.price
        remaining = order.remaining
        reservations[coid] = Reservation(strategy, venue, symbol, side, remaining, price)
        exposure = self.exposure
        if symbol not in exposure.prices and price:
            exposure.set_price(symbol, price)
        exposure.add_open(strategy, venue, symbol, side, remaining)
        r = self.resolved(strategy, venue, symbol)
        counts = self.open_counts
        for key in (r.k_strategy, r.k_venue, r.k_symbol):
            counts[key] = counts.get(key, 0) + 1
        if price is not None:
            book = self.resting.get((symbol, side))
            if book is None:
                book = self.resting[(symbol, side)] = SortedList()
            book.add(price)
        return r

    def release(self, client_order_id: str) -> None:
        res = self.reservations.pop(client_order_id, None)
        if res is None:
            return
        if res.remaining:  # a filled order has nothing open left, and removing -0.0 would change no sum
            self.exposure.add_open(res.strategy, res.venue, res.symbol, res.side, -res.remaining)
        r = self.resolved(res.strategy, res.venue, res.symbol)
        counts = self.open_counts
        for key in (r.k_strategy, r.k_venue, r.k_symbol):
            counts[key] = counts.get(key, 1) - 1
        if res.price is not None:
            book = self.resting.get((res.symbol, res.side))
            if book is not None:
                book.discard(res.price)  # removes one occurrence, if there is one

    def on_report(self, report: ExecutionReport) -> None:
        """Move filled quantity from the reservation into the position; free it when the order ends."""
        f = report.fill
        if f is not None and (seen := f"{f.venue}:{f.trade_id}") not in self.seen_fills:
            self.seen_fills.add(seen)
            key = (f.strategy, f.symbol)
            signed = f.side.sign * f.qty
            self.positions[key] = self.positions.get(key, 0.0) + signed
            self.net[f.symbol] = self.net.get(f.symbol, 0.0) + signed
            self.exposure.add_position(f.strategy, f.venue, f.symbol, signed)
            res = self.reservations.get(report.client_order_id)
            if res is not None:
                used = min(res.remaining, f.qty)
                res.remaining -= used
                self.exposure.add_open(res.strategy, res.venue, res.symbol, res.side, -used)
            self.losses.on_fill(f)
        if report.status.is_terminal:
            self.release(report.client_order_id)

    def load(self, positions: Iterable[Position], open_orders: Iterable[Order], seen_fills: Iterable[str] = ()) -> None:
        """Rebuild from Redis after a restart: positions, the reservations of open orders, fills already counted."""
        positions = list(positions)
        self.seen_fills = set(seen_fills)
        self.positions.clear()
        self.net.clear()
        self.reservations.clear()
        self.open_counts.clear()
        self.resting.clear()
        self.exposure.clear()
        self._resolved.clear()  # it holds references to exposure entries
        for p in positions:
            self.positions[(p.strategy, p.symbol)] = self.positions.get((p.strategy, p.symbol), 0.0) + p.qty
            self.net[p.symbol] = self.net.get(p.symbol, 0.0) + p.qty
            venue = self.symbols[p.symbol].venue if p.symbol in self.symbols else p.venue
            self.exposure.add_position(p.strategy, venue, p.symbol, p.qty)
        self.losses.load(positions)
        for o in open_orders:
            self.reserve_open(o)

    def restore_usage(self, approved: Iterable[tuple[str, str, str, Side, float | None, float, int, float | None]],
                      cancels: Iterable[tuple[str, str, int]]) -> None:
        """Refill rate windows and the duplicate filter from what was approved in the last minute.

        `approved`: (strategy, venue, symbol, side, price, qty, ts_ns, notional) of approved new orders, oldest
        first; `cancels`: (strategy, venue, ts_ns) of approved cancels."""
        for strategy, venue, symbol, side, price, qty, ts, notional in sorted(approved, key=lambda a: a[6]):
            self.order_rates.add(f"strategy:{strategy}", ts)
            self.order_rates.add(f"venue:{venue}", ts)
            self.duplicates.add(dup_key(strategy, symbol, side, price, qty, notional), ts)
        for strategy, venue, ts in cancels:
            self.cancel_rates.add(f"strategy:{strategy}", ts)
            self.cancel_rates.add(f"venue:{venue}", ts)

    def open_exposure(self, symbol: str, strategy: str | None = None) -> tuple[float, float]:
        """Open (unfilled) buy and sell quantity of working orders, cluster-wide or for one strategy."""
        e = self.exposure.peek(CLUSTER if strategy is None else f"strategy:{strategy}", symbol)
        return (0.0, 0.0) if e is None else (e.buys, e.sells)

    # -- loss breakers and stops ---------------------------------------------------------------
    def evaluate(self, now: int | None = None) -> RiskEvents:
        """Run the loss breakers and stops (on marks and fills, not per decision).

        Trips are applied here (only tightening a scope's state); exits are returned for the caller to submit
        through `check`/`reserve` like any order."""
        now = now if now is not None else now_ns()
        trips, new_day = self.losses.evaluate(now)
        events = RiskEvents()
        if new_day:
            for scope, st in list(self.trading_states.items()):
                if st.source == "daily_loss":
                    self.trading_states.pop(scope)
                    events.rearmed.append(scope)
        for t in trips:
            current = self.trading_states.get(t.scope)
            if auto_allowed(current, t.state):
                self.trading_states[t.scope] = TradingStatus(state=t.state, reason=t.reason, source=t.source,
                                                             ts_ns=now)
                events.trips.append(t)
        events.exits = self.losses.stop_exits(now)
        return events

    # -- the decision ------------------------------------------------------------------------------
    def check(self, intent: OrderIntent, now: int | None = None) -> RiskDecision:
        ctx = CheckContext(intent, now if now is not None else now_ns(), None)
        if intent.action is _CANCEL:
            return self._check_cancel(ctx)
        by_symbol = self._resolved.get(intent.strategy)
        r = by_symbol.get(intent.symbol) if by_symbol is not None else None
        if r is not None and r.venue == intent.venue:  # resolved before: venue and symbol are known
            ctx.res = r
        else:
            refused = _check_known(self, ctx)
            if refused is not None:
                return refused
            r = ctx.res
        for check in r.plan:  # type: ignore[union-attr]
            refused = check(self, ctx)
            if refused is not None:
                return refused
        return RiskDecision(approved=True, reason=_NO_REASON, strategy=intent.strategy, venue=intent.venue,
                            symbol=intent.symbol, action=intent.action, detail="approved", values=ctx.values,
                            ts_ns=ctx.now_ns)

    def decide(self, ctx: CheckContext, approved: bool, reason: RejectReason, detail: str) -> RiskDecision:
        i = ctx.intent
        return RiskDecision(approved=approved, reason=reason, strategy=i.strategy, venue=i.venue, symbol=i.symbol,
                            action=i.action, detail=detail, values=ctx.values, ts_ns=ctx.now_ns)

    def make_order(self, intent: OrderIntent, decision: RiskDecision, client_order_id: str, ts_ns: int) -> Order:
        """The order an approved intent becomes; a market order leaves as a limit IOC at its protection price.

        A notional intent stays a market order (venues take a quote amount only on market orders) carrying the
        notional and risk's estimate of its quantity."""
        protect = decision.values.get("protection_price")
        if intent.notional is not None:
            return Order(client_order_id=client_order_id, strategy=intent.strategy, venue=intent.venue,
                         symbol=intent.symbol, side=intent.side, qty=decision.values["qty"],
                         order_type=OrderType.MARKET, tif=intent.tif, created_ts_ns=ts_ns,
                         trigger_ts_ns=intent.trigger_ts_ns, notional=intent.notional)
        if intent.order_type is OrderType.MARKET and protect is not None:
            return Order(client_order_id=client_order_id, strategy=intent.strategy, venue=intent.venue,
                         symbol=intent.symbol, side=intent.side, qty=intent.qty, order_type=OrderType.LIMIT,
                         price=protect, tif=TimeInForce.IOC, created_ts_ns=ts_ns,
                         trigger_ts_ns=intent.trigger_ts_ns)
        return Order(client_order_id=client_order_id, strategy=intent.strategy, venue=intent.venue,
                     symbol=intent.symbol, side=intent.side, qty=intent.qty, order_type=intent.order_type,
                     price=intent.price, tif=intent.tif, created_ts_ns=ts_ns,
                     trigger_ts_ns=intent.trigger_ts_ns)

    def _check_cancel(self, ctx: CheckContext) -> RiskDecision:
        """Cancels pass (they only lower risk) if the order is this strategy's, still working, and within cancel rates."""
        i = ctx.intent
        coid = i.target_client_order_id
        res = self.reservations.get(coid or "")
        if res is None:
            return self.decide(ctx, False, RejectReason.UNKNOWN_ORDER, f"no working order {coid!r}")
        if res.strategy != i.strategy:
            return self.decide(ctx, False, RejectReason.UNKNOWN_ORDER, f"order {coid!r} belongs to another strategy")
        r = self.resolved(i.strategy, res.venue, res.symbol)
        now = ctx.now_ns
        for key, per_s, per_m in ((f"strategy:{i.strategy}", r.st_cancels_s, r.st_cancels_m),
                                  (f"venue:{res.venue}", r.v_cancels_s, r.v_cancels_m)):
            if per_s is None and per_m is None:
                continue
            n_s, n_m = self.cancel_rates.counts(key, now)
            for n, lim, unit in ((n_s, per_s, "s"), (n_m, per_m, "min")):
                if lim is not None and n + 1 > lim:
                    ctx.values.update(cancels=float(n), limit=lim)
                    return self.decide(ctx, False, RejectReason.CANCEL_RATE,
                                       f"{n} cancels in the last {unit} + 1 > max_cancels_per_{unit} {lim:g} ({key})")
        self.cancel_rates.add(f"strategy:{i.strategy}", now)
        self.cancel_rates.add(f"venue:{res.venue}", now)
        return self.decide(ctx, True, RejectReason.NONE, "cancel approved")


# -- the checks, in order ------------------------------------------------------------------------------
def _check_known(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    i = ctx.intent
    by_symbol = eng._resolved.get(i.strategy)
    r = by_symbol.get(i.symbol) if by_symbol is not None else None
    if r is not None and r.venue == i.venue:  # resolved before: venue and symbol are known
        ctx.res = r
        return None
    if i.venue not in eng.venues:
        return eng.decide(ctx, False, RejectReason.UNKNOWN_VENUE, f"venue {i.venue!r} is not configured")
    sym = eng.symbols.get(i.symbol)
    if sym is None or sym.venue != i.venue:
        return eng.decide(ctx, False, RejectReason.UNKNOWN_SYMBOL, f"symbol {i.symbol!r} is not configured on {i.venue!r}")
    ctx.res = eng.resolved(i.strategy, i.venue, i.symbol)
    return None


def _check_kill_switch(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    ks = eng.kill_switches
    if ks and not ks.isdisjoint(ctx.res.kill_scopes):  # type: ignore[union-attr]
        i = ctx.intent
        for scope in (GLOBAL, kill_scope_venue(i.venue), kill_scope_strategy(i.strategy)):
            if scope in ks:
                return eng.decide(ctx, False, RejectReason.KILL_SWITCH, f"kill switch on ({scope})")
    return None


def _fresh_mark(eng: RiskEngine, ctx: CheckContext) -> float | None:
    """The symbol's reference price if it is younger than max_mark_age_s (noted in the decision's values)."""
    mark = eng.marks.get(ctx.intent.symbol)
    if mark is not None:
        if ctx.now_ns - mark[1] <= eng.max_mark_age_ns:
            ctx.mark = mark[0]
            ctx.values["mark"] = mark[0]
        else:
            ctx.values["mark_age_s"] = (ctx.now_ns - mark[1]) / 1e9
    return ctx.mark


def _check_quantity(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    i = ctx.intent
    if i.notional is not None:
        return _notional_quantity(eng, ctx)
    qty = i.qty
    ctx.values["qty"] = qty
    if not 0.0 < qty < INF:  # NaN fails every comparison
        return eng.decide(ctx, False, RejectReason.INVALID_ORDER, f"quantity {qty!r} must be a positive number")
    if i.order_type is _LIMIT:
        price = i.price
        if price is None or not 0.0 < price < INF:
            return eng.decide(ctx, False, RejectReason.INVALID_ORDER, f"limit price {price!r} must be a positive number")
        ctx.values["price"] = price
    return None


def _notional_quantity(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    """A notional intent: a market order for an amount of quote currency, checked as notional / fresh mid."""
    i = ctx.intent
    notional = i.notional
    ctx.values["notional"] = notional  # type: ignore[assignment]
    if i.order_type is not OrderType.MARKET:
        return eng.decide(ctx, False, RejectReason.INVALID_ORDER,
                          f"a notional order must be a market order (got {i.order_type.value}): "
                          "venues take an amount of quote currency only on market orders")
    if i.qty != 0.0:
        return eng.decide(ctx, False, RejectReason.INVALID_ORDER,
                          f"a notional order carries qty 0 (risk estimates it from the mid), got qty {i.qty!r}")
    if not 0.0 < notional < INF:  # type: ignore[operator]
        return eng.decide(ctx, False, RejectReason.INVALID_ORDER, f"notional {notional!r} must be a positive number")
    mark = _fresh_mark(eng, ctx)
    if mark is None:
        return eng.decide(ctx, False, RejectReason.NO_REFERENCE_PRICE,
                          f"no reference price for {i.symbol} younger than {eng.limits.max_mark_age_s}s "
                          f"to turn notional {notional:g} into a quantity")
    ctx.qty = notional / mark  # type: ignore[operator]
    ctx.values["qty"] = ctx.qty
    return None


def reduces_own_position(eng: RiskEngine, ctx: CheckContext) -> bool:
    """Does the order shrink its strategy's position without flipping it, counting same-side working orders?"""
    if ctx._reduces is None:
        i = ctx.intent
        e = eng.exposure.peek(f"strategy:{i.strategy}", i.symbol)
        if e is None:
            ctx._reduces = False
        elif i.side is _BUY:
            ctx._reduces = e.pos < 0 and e.buys + ctx.qty <= -e.pos + EPS
        else:
            ctx._reduces = e.pos > 0 and e.sells + ctx.qty <= e.pos + EPS
    return ctx._reduces


def _check_trading_state(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    states = eng.trading_states
    scopes = ctx.res.state_scopes  # type: ignore[union-attr]
    if not states or states.keys().isdisjoint(scopes):
        return None
    for scope in scopes:
        st = states.get(scope)
        if st is None:
            continue
        if st.state is TradingState.HALTED:
            return eng.decide(ctx, False, RejectReason.TRADING_HALTED, f"trading halted ({scope}): {st.reason}")
        if st.state is TradingState.REDUCING and not reduces_own_position(eng, ctx):
            return eng.decide(ctx, False, RejectReason.REDUCE_ONLY,
                              f"reducing only ({scope}): {st.reason}; the order does not shrink a position")
    return None


def _check_schedule(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    r = ctx.res
    second = ctx.now_ns // 1_000_000_000
    if second != r.sched_second:  # type: ignore[union-attr]
        r.sched_second = second  # type: ignore[union-attr]
        r.sched_result = eng.schedule.blocked(r.sched_scopes, ctx.now_ns)  # type: ignore[union-attr]
    blocked = r.sched_result  # type: ignore[union-attr]
    if blocked is None or reduces_own_position(eng, ctx):
        return None
    kind, detail = blocked
    reason = RejectReason.TRADING_PAUSED if kind == "pause" else RejectReason.OUTSIDE_TRADING_HOURS
    return eng.decide(ctx, False, reason, f"{detail}: only orders that shrink a position")


def _check_reference_price(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    """Collars, notional limits and market orders need a fresh reference price; without one: refuse."""
    i = ctx.intent
    r = ctx.res
    if i.notional is None:
        mark = eng.marks.get(i.symbol)  # `_fresh_mark`, inlined: this runs on every order
        if mark is not None:
            if ctx.now_ns - mark[1] <= eng.max_mark_age_ns:
                ctx.mark = mark[0]
                ctx.values["mark"] = mark[0]
            else:
                ctx.values["mark_age_s"] = (ctx.now_ns - mark[1]) / 1e9
    mark_px = ctx.mark  # a notional intent found it in `_check_quantity`
    if i.order_type is _MARKET:
        if mark_px is None:
            return eng.decide(ctx, False, RejectReason.NO_REFERENCE_PRICE,
                              f"no reference price for {i.symbol} younger than {eng.limits.max_mark_age_s}s")
        slip = r.slippage_bps  # type: ignore[union-attr]
        if slip is None:
            return eng.decide(ctx, False, RejectReason.PRICE_COLLAR,
                              "a market order needs max_slippage_bps (none configured for its scopes)")
        buy = i.side is _BUY
        raw = mark_px * (1 + slip / 1e4) if buy else mark_px * (1 - slip / 1e4)
        tick = r.tick  # type: ignore[union-attr]
        if tick > 0:  # round inward, so the protection never allows more than the slippage
            raw = math.floor(raw / tick + EPS) * tick if buy else math.ceil(raw / tick - EPS) * tick
        ctx.price = ctx.order_price = raw
        values = ctx.values
        values["protection_price"] = raw
        values["max_slippage_bps"] = slip
        return None
    price = i.price  # limit order: valued at the worse of its price and the mark
    if mark_px is None:
        ctx.price = price
    else:
        ctx.price = (price if price > mark_px else mark_px) if i.side is _BUY else (  # type: ignore[operator]
            price if price < mark_px else mark_px)  # type: ignore[operator]
    collar = r.collar_bps  # type: ignore[union-attr]
    if collar is not None:
        if mark_px is None:
            return eng.decide(ctx, False, RejectReason.NO_REFERENCE_PRICE,
                              f"no reference price for {i.symbol} younger than {eng.limits.max_mark_age_s}s "
                              "to check the price collar")
        off = abs(price - mark_px) / mark_px * 1e4  # type: ignore[operator]
        if off > collar:
            ctx.values.update(off_mid_bps=off, price_collar_bps=collar)
            return eng.decide(ctx, False, RejectReason.PRICE_COLLAR,
                              f"price {price} is {off:.1f} bps from mid {mark_px} > price_collar_bps {collar:g} "
                              f"({r.where['price_collar_bps']})")  # type: ignore[union-attr]
    return None


def _check_order_size(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    i = ctx.intent
    r = ctx.res
    qty = ctx.qty
    lot = r.lot  # type: ignore[union-attr]
    # A notional order's qty is an estimate the venue sizes, so it is not held to the lot grid.
    if lot > 0 and qty != r.lot_ok_qty and i.notional is None:  # type: ignore[union-attr]
        steps = qty / lot
        if abs(steps - round(steps)) > 1e-6:
            ctx.values["lot_size"] = lot
            return eng.decide(ctx, False, RejectReason.LOT_SIZE, f"qty {qty} is not a multiple of the lot size {lot}")
        r.lot_ok_qty = qty  # type: ignore[union-attr]
    max_qty = r.order_qty  # type: ignore[union-attr]
    if max_qty is not None and qty > max_qty:
        ctx.values["max_order_qty"] = max_qty
        return eng.decide(ctx, False, RejectReason.MAX_ORDER_QTY,
                          f"qty {qty:g} > max_order_qty {max_qty} ({r.where['max_order_qty']})")  # type: ignore[union-attr]
    max_notional = r.order_notional  # type: ignore[union-attr]
    min_notional = r.min_notional  # type: ignore[union-attr]
    if max_notional is not None or min_notional is not None:
        if i.notional is not None:
            notional = i.notional  # exactly what the venue will trade
        elif ctx.price is None:
            return eng.decide(ctx, False, RejectReason.NO_REFERENCE_PRICE, "no price to value the order's notional")
        else:
            notional = qty * ctx.price
        values = ctx.values
        values["notional"] = notional
        if max_notional is not None:
            values["max_order_notional"] = max_notional
            if notional > max_notional:
                return eng.decide(ctx, False, RejectReason.MAX_ORDER_NOTIONAL,
                                  f"notional {notional:.2f} > max_order_notional {max_notional} "
                                  f"({r.where['max_order_notional']})")  # type: ignore[union-attr]
        if min_notional is not None and notional < min_notional:
            values["min_order_notional"] = min_notional
            return eng.decide(ctx, False, RejectReason.MIN_NOTIONAL,
                              f"notional {notional:.2f} < min_order_notional {min_notional} "
                              f"({r.where['min_order_notional']})")  # type: ignore[union-attr]
    return None


def _check_duplicate(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    window = ctx.res.dup_window_ns  # type: ignore[union-attr]
    i = ctx.intent
    if i.notional is None:
        key: tuple = (i.strategy, i.symbol, i.side, ctx.order_price, i.qty)
    else:
        key = dup_key(i.strategy, i.symbol, i.side, None, 0.0, i.notional)
    ts = eng.duplicates.last.get(key)
    if ts is not None and ctx.now_ns - ts < window:  # type: ignore[operator]
        age = ctx.now_ns - ts
        ctx.values.update(age_s=age / 1e9, duplicate_window_s=window / 1e9)  # type: ignore[operator]
        what = "notional" if i.notional is not None else "price and qty"
        return eng.decide(ctx, False, RejectReason.DUPLICATE_ORDER,
                          f"same strategy, side, {what} approved {age / 1e9:.3f}s ago "
                          f"< duplicate_window_s {window / 1e9:g}")  # type: ignore[operator]
    return None


def _check_rates(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    now = ctx.now_ns
    for counter, key, per_s, per_m in ctx.res.rate_checks:  # type: ignore[union-attr]
        sec, mnt = counter.second, counter.minute  # RateCounter.counts, inlined: this runs on every order
        lo = now - SECOND_NS
        while sec and sec[0] <= lo:
            sec.popleft()
        lo = now - MINUTE_NS
        while mnt and mnt[0] <= lo:
            mnt.popleft()
        n_s, n_m = len(sec), len(mnt)
        if per_s is not None and n_s + 1 > per_s:
            ctx.values.update(orders_last_s=float(n_s), max_orders_per_s=per_s)
            return eng.decide(ctx, False, RejectReason.ORDER_RATE,
                              f"{n_s} orders in the last second + 1 > max_orders_per_s {per_s:g} ({key})")
        if per_m is not None and n_m + 1 > per_m:
            ctx.values.update(orders_last_min=float(n_m), max_orders_per_min=per_m)
            return eng.decide(ctx, False, RejectReason.ORDER_RATE,
                              f"{n_m} orders in the last minute + 1 > max_orders_per_min {per_m:g} ({key})")
    return None


def _check_open_orders(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    counts = eng.open_counts
    for key, lim in ctx.res.open_limits:  # type: ignore[union-attr]
        n = counts.get(key, 0)
        if n + 1 > lim:
            ctx.values.update(open_orders=float(n), max_open_orders=lim)
            return eng.decide(ctx, False, RejectReason.MAX_OPEN_ORDERS,
                              f"{n} working orders + 1 > max_open_orders {lim:g} ({key})")
    return None


def _check_self_trade(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    price = ctx.order_price
    if price is None:
        return None
    i = ctx.intent
    buy = i.side is _BUY
    book = eng.resting.get(ctx.res.rest_vs_buy if buy else ctx.res.rest_vs_sell)  # type: ignore[union-attr]
    if not book:
        return None
    if buy:
        best = book[0]
        crosses = price >= best
    else:
        best = book[-1]
        crosses = price <= best
    if crosses:
        ctx.values["own_resting_price"] = best
        return eng.decide(ctx, False, RejectReason.SELF_TRADE,
                          f"{i.side.value} at {price} would cross the cluster's own resting "
                          f"{i.side.opposite.value} at {best}")
    return None


def _check_position(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    buy = ctx.intent.side is _BUY
    qty = ctx.qty
    for e, max_qty, max_notional, where_qty, where_notional in ctx.res.pos_checks:  # type: ignore[union-attr]
        position = e.pos
        worst = position + e.buys + qty if buy else position - e.sells - qty
        aw = -worst if worst < 0 else worst
        if aw <= (-position if position < 0 else position):
            continue  # reduces: allowed even over a limit
        if max_qty is not None and aw > max_qty + EPS:
            ctx.values.update(position=position, worst_case=worst, max_position_qty=max_qty)
            return eng.decide(ctx, False, RejectReason.POSITION_LIMIT,
                              f"worst-case position {worst:g} would exceed max_position_qty {max_qty} ({where_qty})")
        if max_notional is not None:
            if ctx.price is None:
                return eng.decide(ctx, False, RejectReason.NO_REFERENCE_PRICE, "no price to value the position")
            notional = aw * ctx.price
            if notional > max_notional + EPS:
                ctx.values.update(position=position, worst_case_notional=notional, max_position_notional=max_notional)
                return eng.decide(ctx, False, RejectReason.POSITION_NOTIONAL_LIMIT,
                                  f"worst-case position notional {notional:.2f} would exceed {max_notional} "
                                  f"({where_notional})")
        ctx.values["worst_case"] = worst
    return None


def _check_exposure(eng: RiskEngine, ctx: CheckContext) -> RiskDecision | None:
    """Gross and net worst-case notional across symbols, per bucket, counting the order."""
    if ctx.price is None:
        return eng.decide(ctx, False, RejectReason.NO_REFERENCE_PRICE, "no price to value the exposure")
    i = ctx.intent
    px = eng.exposure.prices.get(i.symbol, ctx.price)
    qty = ctx.qty
    add = qty * px
    buy = i.side is _BUY
    for b, e, max_gross, max_net, scope in ctx.res.exp_checks:  # type: ignore[union-attr]
        g_total = b.gross
        pos = e.pos
        if buy:
            net_old = b.long
            lg, sh = (pos + e.buys + qty) * px, (pos - e.sells) * px
            net_new = net_old + add
        else:
            net_old = b.short
            lg, sh = (pos + e.buys) * px, (pos - e.sells - qty) * px
            net_new = net_old - add
        lg = -lg if lg < 0 else lg
        sh = -sh if sh < 0 else sh
        g_new = g_total - e.gross + (lg if lg > sh else sh)
        if max_gross is not None and g_new > max_gross + EPS and g_new > g_total + EPS:
            ctx.values.update(gross_exposure=g_new, max_gross_exposure=max_gross)
            return eng.decide(ctx, False, RejectReason.GROSS_EXPOSURE,
                              f"worst-case gross exposure {g_new:.2f} would exceed max_gross_exposure {max_gross} "
                              f"({scope})")
        if max_net is not None and abs(net_new) > max_net + EPS and abs(net_new) > abs(net_old) + EPS:
            ctx.values.update(net_exposure=net_new, max_net_exposure=max_net)
            return eng.decide(ctx, False, RejectReason.NET_EXPOSURE,
                              f"worst-case net exposure {net_new:.2f} would exceed max_net_exposure {max_net} ({scope})")
    return None


CHECKS: tuple[Check, ...] = (
    _check_known, _check_kill_switch, _check_quantity, _check_trading_state, _check_schedule,
    _check_reference_price, _check_order_size, _check_duplicate, _check_rates, _check_open_orders,
    _check_self_trade, _check_position, _check_exposure,
)

# When a check can refuse a (strategy, venue, symbol)'s orders; the others always run (what they read changes
# while running: kill switches, trading states, marks). A limits change rebuilds every plan.
_APPLIES: dict[Check, Callable[[Resolved, RiskEngine], bool]] = {
    _check_schedule: lambda r, eng: bool(r.sched_scopes),
    _check_order_size: lambda r, eng: (r.lot > 0 or r.order_qty is not None or r.order_notional is not None
                                       or r.min_notional is not None),
    _check_duplicate: lambda r, eng: r.dup_window_ns is not None,
    _check_rates: lambda r, eng: bool(r.rate_checks),
    _check_open_orders: lambda r, eng: bool(r.open_limits),
    _check_self_trade: lambda r, eng: eng.limits.self_trade_prevention,
    _check_position: lambda r, eng: bool(r.pos_checks),
    _check_exposure: lambda r, eng: bool(r.exp_checks),
}


def _applies(check: Check, r: Resolved, eng: RiskEngine) -> bool:
    rule = _APPLIES.get(check)
    return rule is None or rule(r, eng)
