"""Loss controls: equity and P&L from fills and marks, the drawdown and daily-loss breakers, ATR stops.

Risk sees every fill (with its fee) and every mark, so it keeps its own average-cost
books (`cluster.portfolio.Portfolio`) per (strategy, symbol). From them:

* equity = capital + realized - fees + unrealized (the whole cluster); the drawdown breaker trips
  when equity falls `max_drawdown_pct` below its peak (the peak is persisted in Redis);
* the same breaker per venue and per strategy (`risk.venues.<v>.max_drawdown_pct`,
  `risk.strategies.<s>.max_drawdown_pct`): the scope's equity is its `capital` (default the cluster's)
  plus the scope's P&L, measured from the scope's own peak (persisted too);
* daily loss per scope = P&L at the start of the trading day - P&L now; each scope with a
  `daily_loss_limit` trips when it is exceeded, and is re-armed at the next day;
* a trip switches its scope to the scope's `loss_action` (default `risk.loss_action`);
* a position whose mark crossed entry -+ `stop_loss_atr` x ATR gets an exit intent (the owning
  strategy's name, tag `risk-stop`, market, reduce only) that the risk actor submits through its
  own decision path.

`evaluate` runs on marks and fills (not per decision) and is O(positions).
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from cluster.messages import Fill, IntentAction, OrderIntent, OrderType, Position, Side, TimeInForce
from cluster.portfolio import Portfolio
from risk.limits import RiskLimits, RiskSection
from risk.trading_state import TradingState

STOP_TAG = "risk-stop"
STOP_COOLDOWN_NS = 5_000_000_000


class AtrTracker:
    """Average true range of `period` completed bars of `bar_ns`, built from reference prices."""

    def __init__(self, bar_ns: int, period: int):
        self.bar_ns = bar_ns
        self.period = period
        self.bars: dict[str, list[float]] = {}  # symbol -> [bar_index, open, high, low, close]
        self.prev_close: dict[str, float] = {}
        self.ranges: dict[str, deque[float]] = {}

    def on_price(self, symbol: str, price: float, ts_ns: int) -> None:
        idx = ts_ns // self.bar_ns
        bar = self.bars.get(symbol)
        if bar is None or idx > bar[0]:
            if bar is not None:
                self._close(symbol, bar)
            self.bars[symbol] = [idx, price, price, price, price]
        elif idx == bar[0]:  # high = max(high, price), low = min(low, price), without two calls per mark
            if price > bar[2]:
                bar[2] = price
            if price < bar[3]:
                bar[3] = price
            bar[4] = price

    def _close(self, symbol: str, bar: list[float]) -> None:
        high, low, close = bar[2], bar[3], bar[4]
        prev = self.prev_close.get(symbol)
        tr = high - low if prev is None else max(high - low, abs(high - prev), abs(low - prev))
        self.prev_close[symbol] = close
        q = self.ranges.setdefault(symbol, deque(maxlen=self.period))
        q.append(tr)

    def atr(self, symbol: str) -> float | None:
        q = self.ranges.get(symbol)
        if q is None or len(q) < self.period:
            return None
        return sum(q) / len(q)


@dataclass
class Trip:
    """A breaker switching a scope, with the numbers that tripped it."""

    scope: str
    state: TradingState
    source: str
    reason: str
    values: dict[str, float]


class LossMonitor:
    def __init__(self, section: RiskSection, symbol_venues: dict[str, str]):
        self.section = section
        self.symbol_venues = symbol_venues
        self.portfolio = Portfolio()
        self.peak_equity = section.capital
        self.scope_peaks: dict[str, float] = {}  # "venue:<v>" / "strategy:<s>" -> peak equity of the scope
        self.day = ""
        self.day_start: dict[str, float] = {}  # scope -> P&L at the start of the day
        self.atr = AtrTracker(int(section.atr_bar_s * 1e9), section.atr_period)
        self.stop_sent: dict[tuple[str, str], int] = {}
        self.zone = ZoneInfo(section.day_timezone)

    def set_section(self, section: RiskSection) -> None:
        self.section = section
        self.zone = ZoneInfo(section.day_timezone)

    # -- inputs --------------------------------------------------------------------------------------
    def on_fill(self, fill: Fill) -> None:
        self.portfolio.record_fill(fill)

    def set_mark(self, symbol: str, price: float, ts_ns: int) -> None:
        self.portfolio.set_mark(symbol, price)
        if ts_ns:
            self.atr.on_price(symbol, price, ts_ns)

    def load(self, positions: Iterable[Position]) -> None:
        self.portfolio.load(positions)

    # -- numbers -------------------------------------------------------------------------------------
    def pnl_by_scope(self) -> dict[str, float]:
        """Realized - fees + unrealized for global and every venue, strategy and symbol with a position."""
        out: dict[str, float] = {"global": 0.0}
        for p in self.portfolio.positions():
            v = p.realized_pnl - p.fees + p.unrealized(self.portfolio.mark(p.symbol))
            venue = self.symbol_venues.get(p.symbol, p.venue)
            for scope in ("global", f"venue:{venue}", f"strategy:{p.strategy}", f"symbol:{p.symbol}"):
                out[scope] = out.get(scope, 0.0) + v
        return out

    def equity(self, pnl: dict[str, float] | None = None) -> float:
        return self.section.capital + (pnl or self.pnl_by_scope())["global"]

    def day_key(self, now_ns: int) -> str:
        return dt.datetime.fromtimestamp(now_ns / 1e9, self.zone).date().isoformat()

    # -- breakers ------------------------------------------------------------------------------------
    def evaluate(self, now_ns: int) -> tuple[list[Trip], bool]:
        """Trips for every breached breaker, and whether a new trading day began (daily trips re-arm)."""
        pnl = self.pnl_by_scope()
        new_day = False
        day = self.day_key(now_ns)
        if day != self.day:
            new_day = bool(self.day)
            self.day = day
            self.day_start = dict(pnl)
        sec = self.section
        trips: list[Trip] = []
        equity = sec.capital + pnl["global"]
        if equity > self.peak_equity:
            self.peak_equity = equity
        if sec.max_drawdown_pct is not None and self.peak_equity > 0:
            dd = (self.peak_equity - equity) / self.peak_equity * 100.0
            if dd >= sec.max_drawdown_pct:
                trips.append(Trip("global", self.action("global"), "drawdown",
                                  f"drawdown {dd:.2f}% from peak equity {self.peak_equity:.2f} (equity {equity:.2f}) "
                                  f">= max_drawdown_pct {sec.max_drawdown_pct}",
                                  {"drawdown_pct": dd, "peak_equity": self.peak_equity, "equity": equity,
                                   "max_drawdown_pct": sec.max_drawdown_pct}))
        for scope, pct, base in self._scope_drawdowns():
            eq = base + pnl.get(scope, 0.0)
            peak = self.scope_peaks.get(scope, base)
            if eq > peak:
                peak = eq
            self.scope_peaks[scope] = peak
            dd = (peak - eq) / peak * 100.0 if peak > 0 else 100.0
            if dd >= pct:
                trips.append(Trip(scope, self.action(scope), "drawdown",
                                  f"drawdown {dd:.2f}% from the peak equity {peak:.2f} of {scope} (equity {eq:.2f}) "
                                  f">= max_drawdown_pct {pct} ({scope})",
                                  {"drawdown_pct": dd, "peak_equity": peak, "equity": eq, "max_drawdown_pct": pct}))
        for scope, limit in self._daily_limits():
            loss = self.day_start.get(scope, 0.0) - pnl.get(scope, 0.0)
            if loss >= limit:
                trips.append(Trip(scope, self.action(scope), "daily_loss",
                                  f"daily loss {loss:.2f} >= daily_loss_limit {limit} ({scope})",
                                  {"daily_loss": loss, "daily_loss_limit": limit}))
        return trips, new_day

    def _scope_limits(self, scope: str) -> RiskLimits | None:
        kind, _, name = scope.partition(":")
        table = {"venue": self.section.venues, "strategy": self.section.strategies,
                 "symbol": self.section.symbols}.get(kind)
        return None if table is None else table.get(name)

    def action(self, scope: str) -> TradingState:
        """What a breaker of `scope` switches it to: the scope's `loss_action`, else the cluster's."""
        lim = self._scope_limits(scope)
        return TradingState(lim.loss_action if lim is not None and lim.loss_action else self.section.loss_action)

    def _scope_drawdowns(self) -> list[tuple[str, float, float]]:
        """(scope, max_drawdown_pct, capital) of every venue and strategy with a drawdown breaker."""
        sec = self.section
        out = []
        for kind, table in (("venue", sec.venues), ("strategy", sec.strategies)):
            for name, lim in table.items():
                if lim.max_drawdown_pct is not None:
                    out.append((f"{kind}:{name}", lim.max_drawdown_pct, lim.capital or sec.capital))
        return out

    def drawdowns(self, pnl: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
        """Equity, peak and drawdown of the cluster and of every scope with a drawdown breaker (for status)."""
        pnl = pnl if pnl is not None else self.pnl_by_scope()
        eq = self.section.capital + pnl["global"]
        peak = max(self.peak_equity, eq)
        out = {"global": {"equity": eq, "peak_equity": peak, "drawdown_pct": (peak - eq) / peak * 100.0}}
        for scope, pct, base in self._scope_drawdowns():
            eq = base + pnl.get(scope, 0.0)
            peak = max(self.scope_peaks.get(scope, base), eq)
            out[scope] = {"equity": eq, "peak_equity": peak, "drawdown_pct": (peak - eq) / peak * 100.0 if peak else 0.0,
                          "max_drawdown_pct": pct}
        return out

    def _daily_limits(self) -> list[tuple[str, float]]:
        sec = self.section
        out = []
        if sec.defaults.daily_loss_limit is not None:
            out.append(("global", sec.defaults.daily_loss_limit))
        for kind, table in (("venue", sec.venues), ("strategy", sec.strategies), ("symbol", sec.symbols)):
            for name, lim in table.items():
                if lim.daily_loss_limit is not None:
                    out.append((f"{kind}:{name}", lim.daily_loss_limit))
        return out

    def rearm(self, scope: str, source: str) -> None:
        """An operator set a tripped scope active again: drawdown measures from today's equity, daily loss from now."""
        pnl = self.pnl_by_scope()
        if source == "drawdown" and scope == "global":
            self.peak_equity = self.section.capital + pnl["global"]
        elif source == "drawdown":
            lim = self._scope_limits(scope)
            base = lim.capital if lim is not None and lim.capital else self.section.capital
            self.scope_peaks[scope] = base + pnl.get(scope, 0.0)
        elif source == "daily_loss":
            self.day_start[scope] = pnl.get(scope, 0.0)

    # -- stops ---------------------------------------------------------------------------------------
    def stop_exits(self, now_ns: int) -> list[OrderIntent]:
        """Exit intents for positions whose mark crossed entry -+ k x ATR (once per cooldown per position)."""
        k = self.section.stop_loss_atr
        if k is None:
            return []
        out = []
        for p in self.portfolio.positions():
            if p.qty == 0.0:
                continue
            mark = self.portfolio.mark(p.symbol)
            atr = self.atr.atr(p.symbol)
            if mark is None or atr is None or atr <= 0:
                continue
            key = (p.strategy, p.symbol)
            if now_ns - self.stop_sent.get(key, -STOP_COOLDOWN_NS) < STOP_COOLDOWN_NS:
                continue
            long = p.qty > 0
            stop = p.avg_price - k * atr if long else p.avg_price + k * atr
            if (long and mark <= stop) or (not long and mark >= stop):
                self.stop_sent[key] = now_ns
                out.append(OrderIntent(strategy=p.strategy, venue=self.symbol_venues.get(p.symbol, p.venue),
                                       symbol=p.symbol, action=IntentAction.NEW,
                                       side=Side.SELL if long else Side.BUY, qty=abs(p.qty),
                                       order_type=OrderType.MARKET, tif=TimeInForce.IOC, tag=STOP_TAG,
                                       created_ts_ns=now_ns))
        return out
