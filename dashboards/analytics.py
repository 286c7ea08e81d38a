"""Performance analytics from the fill journal: equity curve, P&L, Sharpe, Sortino, drawdown, win rate.

Conventions (stated once, used everywhere: status, API, report, Grafana):

* P&L is in the quote currency. Realized P&L is average-cost and gross of fees
  (as `cluster.portfolio`); `net_pnl = realized - fees + unrealized`.
* Equity curve: net P&L after every fill, open positions marked at the last
  fill price of their symbol (any strategy's), starting at 0 before the first
  fill; its last point is at `as_of` with positions at the given marks (a
  symbol without a mark keeps its last fill price).
* Returns are the equity changes over fixed bars of `bar_s` seconds (the
  first bar starts at the first fill). No capital is assumed, so ratios are
  of P&L changes; volatility is in currency per year.
* Annualization: crypto trades 24/7, a year is 365 days; periods per year =
  365 * 86400 / bar_s. Risk-free rate 0.
  Sharpe = mean(r) / std(r, ddof=1) * sqrt(periods per year);
  Sortino = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(periods per year);
  volatility = std(r, ddof=1) * sqrt(periods per year).
  Each is None with fewer than 2 bars or a zero denominator.
* Max drawdown: the largest fall of the equity curve from its running peak
  (currency, >= 0); its duration is the longest time from a peak to the
  point the curve regains it (or to `as_of` if it never does), in seconds.
* Win rate: closing fills (fills that reduce a position) with positive
  realized P&L, divided by all closing fills. None without closing fills.
* Turnover: traded notional, sum(price * qty).
* `bar_s=None` picks the largest of 1 s, 5 s, 15 s, 1 min, 5 min, 15 min,
  1 h, 4 h, 1 d giving at least 30 bars (else 1 s); a bar giving more than
  200,000 bars is widened to the first of those that fits. The result states it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from cluster.messages import Fill
from cluster.portfolio import Portfolio

YEAR_S = 365 * 86400
NICE_BARS_S = (1, 5, 15, 60, 300, 900, 3600, 14400, 86400)
MIN_BARS = 30
MAX_BARS = 200_000


@dataclass(frozen=True)
class PerformanceStats:
    fills: int
    turnover: float
    realized_pnl: float
    fees: float
    unrealized_pnl: float
    net_pnl: float
    sharpe: float | None
    sortino: float | None
    volatility: float | None
    max_drawdown: float
    max_drawdown_duration_s: float
    win_rate: float | None
    wins: int
    losses: int
    closing_fills: int
    bars: int
    bar_s: float

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


@dataclass
class EquityCurve:
    """Net P&L at each point; `ts_ns[0]` is the baseline (0 before the first fill)."""

    ts_ns: np.ndarray
    equity: np.ndarray

    def drawdown(self) -> np.ndarray:
        return np.maximum.accumulate(self.equity) - self.equity


@dataclass
class Performance:
    total: PerformanceStats
    by_strategy: dict[str, PerformanceStats]
    by_symbol: dict[str, PerformanceStats]
    curves: dict[str, EquityCurve] = field(default_factory=dict)  # "total", "strategy:<s>", "symbol:<sym>"
    fills: pl.DataFrame = field(default_factory=pl.DataFrame)
    as_of_ns: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"as_of_ns": self.as_of_ns, "conventions": CONVENTIONS, "total": self.total.to_dict(),
                "by_strategy": {k: v.to_dict() for k, v in self.by_strategy.items()},
                "by_symbol": {k: v.to_dict() for k, v in self.by_symbol.items()}}


CONVENTIONS = ("P&L in quote currency, average cost, realized gross of fees; net = realized - fees + unrealized. "
               "Returns = equity change per bar; annualized with 365*86400/bar_s periods per year, risk-free 0; "
               "Sharpe = mean/std(ddof=1)*sqrt(N); Sortino = mean/sqrt(mean(min(r,0)^2))*sqrt(N); "
               "volatility = std(ddof=1)*sqrt(N) in currency per year; max drawdown from the running peak "
               "(currency), duration peak to recovery (s); win rate = closing fills with positive realized P&L "
               "/ closing fills; turnover = sum(price*qty).")

_SCHEMA = {"ts_ns": pl.Int64, "strategy": pl.Utf8, "symbol": pl.Utf8, "venue": pl.Utf8, "side": pl.Utf8,
           "price": pl.Float64, "qty": pl.Float64, "fee": pl.Float64, "signed_qty": pl.Float64,
           "notional": pl.Float64, "realized": pl.Float64, "closing": pl.Boolean}


def fills_frame(fills: Sequence[Fill]) -> pl.DataFrame:
    """Fills in time order with the realized P&L each one produced (average cost, per strategy and symbol)."""
    ordered = sorted((f for f in fills if f.qty > 0), key=lambda f: f.ts_ns)
    pf = Portfolio()
    realized: list[float] = []
    closing: list[bool] = []
    held: dict[tuple[str, str], tuple[float, float]] = {}  # (qty, realized) before the fill
    for f in ordered:
        key = (f.strategy, f.symbol)
        qty0, real0 = held.get(key, (0.0, 0.0))
        pos = pf.apply_fill(f)
        held[key] = (pos.qty, pos.realized_pnl)
        realized.append(pos.realized_pnl - real0)
        closing.append(qty0 != 0.0 and (qty0 > 0.0) != (f.side.sign > 0))
    return pl.DataFrame({
        "ts_ns": [f.ts_ns for f in ordered], "strategy": [f.strategy for f in ordered],
        "symbol": [f.symbol for f in ordered], "venue": [f.venue for f in ordered],
        "side": [f.side.value for f in ordered], "price": [f.price for f in ordered],
        "qty": [f.qty for f in ordered], "fee": [f.fee for f in ordered],
        "signed_qty": [f.side.sign * f.qty for f in ordered], "notional": [f.price * f.qty for f in ordered],
        "realized": realized, "closing": closing,
    }, schema=_SCHEMA)


def analyze(fills: Sequence[Fill], marks: Mapping[str, float] | None = None, as_of_ns: int | None = None,
            bar_s: float | None = None) -> Performance:
    """Stats in total, per strategy and per symbol, with their equity curves."""
    df = fills_frame(fills)
    marks = dict(marks or {})
    n = df.height
    if n == 0:
        empty = _stats(df, np.zeros(1), np.zeros(1, dtype=np.int64), 0.0, bar_s or 1.0)
        return Performance(empty, {}, {}, {"total": EquityCurve(np.zeros(1, dtype=np.int64), np.zeros(1))}, df,
                           as_of_ns or 0)
    ts = df["ts_ns"].to_numpy()
    t_end = max(int(ts[-1]), as_of_ns or 0)
    grid = np.concatenate([[ts[0]], ts, [t_end]]).astype(np.int64)  # baseline, each fill, as_of
    span_s = (t_end - int(ts[0])) / 1e9
    bar = float(bar_s) if bar_s else _auto_bar(span_s)
    if span_s / bar > MAX_BARS:  # a bar too short for the span: the next nice bar that fits
        bar = next((float(b) for b in NICE_BARS_S if span_s / b <= MAX_BARS), math.ceil(span_s / MAX_BARS))

    sym = df["symbol"].to_numpy()
    px = df["price"].to_numpy()
    signed = df["signed_qty"].to_numpy()
    fee = df["fee"].to_numpy()
    symbols = sorted(set(sym.tolist()))
    last_px = {s: _ffill(np.where(sym == s, px, np.nan)) for s in symbols}
    final_px = {s: float(marks.get(s, last_px[s][-1])) for s in symbols}

    def curve(mask: np.ndarray) -> np.ndarray:
        eq = -np.cumsum(np.where(mask, fee, 0.0))
        final = float(eq[-1])
        for s in symbols:
            m = mask & (sym == s)
            if not m.any():
                continue
            cash = np.cumsum(np.where(m, -signed * px, 0.0))
            q = np.cumsum(np.where(m, signed, 0.0))
            eq = eq + cash + q * np.nan_to_num(last_px[s])
            final += float(cash[-1] + q[-1] * final_px[s])
        return np.concatenate([[0.0], eq, [final]])

    curves: dict[str, EquityCurve] = {}
    all_rows = np.ones(n, dtype=bool)
    total_eq = curve(all_rows)
    curves["total"] = EquityCurve(grid, total_eq)
    total = _stats(df, total_eq, grid, span_s, bar)
    by_strategy: dict[str, PerformanceStats] = {}
    strat = df["strategy"].to_numpy()
    for name in sorted(set(strat.tolist())):
        mask = strat == name
        eq = curve(mask)
        curves[f"strategy:{name}"] = EquityCurve(grid, eq)
        by_strategy[name] = _stats(df.filter(pl.Series(mask)), eq, grid, span_s, bar)
    by_symbol: dict[str, PerformanceStats] = {}
    for s in symbols:
        mask = sym == s
        eq = curve(mask)
        curves[f"symbol:{s}"] = EquityCurve(grid, eq)
        by_symbol[s] = _stats(df.filter(pl.Series(mask)), eq, grid, span_s, bar)
    return Performance(total, by_strategy, by_symbol, curves, df, t_end)


def _auto_bar(span_s: float) -> float:
    fitting = [b for b in NICE_BARS_S if span_s / b >= MIN_BARS]
    return float(fitting[-1]) if fitting else float(NICE_BARS_S[0])


def _ffill(a: np.ndarray) -> np.ndarray:
    idx = np.where(np.isnan(a), 0, np.arange(a.size))
    np.maximum.accumulate(idx, out=idx)
    out = a[idx]
    return out


def bar_returns(grid: np.ndarray, equity: np.ndarray, bar_s: float) -> np.ndarray:
    """Equity change over each bar of `bar_s` seconds from the first point; the last bar holds the last point."""
    span = int(grid[-1] - grid[0])
    bar_ns = int(bar_s * 1e9)
    if span <= 0 or bar_ns <= 0:
        return np.zeros(0)
    nbars = math.ceil(span / bar_ns)
    edges = grid[0] + bar_ns * np.arange(1, nbars + 1, dtype=np.int64)
    at = np.searchsorted(grid, edges, side="right") - 1
    ends = equity[at]
    return np.diff(np.concatenate([[equity[0]], ends]))


def _stats(df: pl.DataFrame, equity: np.ndarray, grid: np.ndarray, span_s: float, bar: float) -> PerformanceStats:
    realized = float(df["realized"].sum()) if df.height else 0.0
    fees = float(df["fee"].sum()) if df.height else 0.0
    net = float(equity[-1])
    r = bar_returns(grid, equity, bar)
    ppy = YEAR_S / bar
    sharpe = sortino = vol = None
    if r.size >= 2:
        sd = float(np.std(r, ddof=1))
        mean = float(np.mean(r))
        if sd > 0:
            sharpe = mean / sd * math.sqrt(ppy)
            vol = sd * math.sqrt(ppy)
        else:
            vol = 0.0
        down = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
        if down > 0:
            sortino = mean / down * math.sqrt(ppy)
    dd_amount, dd_duration = max_drawdown(grid, equity)
    closing = df.filter(pl.col("closing")) if df.height else df
    wins = int((closing["realized"] > 0).sum()) if closing.height else 0
    losses = int((closing["realized"] < 0).sum()) if closing.height else 0
    return PerformanceStats(
        fills=df.height, turnover=float(df["notional"].sum()) if df.height else 0.0, realized_pnl=realized,
        fees=fees, unrealized_pnl=net - realized + fees, net_pnl=net, sharpe=sharpe, sortino=sortino, volatility=vol,
        max_drawdown=dd_amount, max_drawdown_duration_s=dd_duration,
        win_rate=(wins / closing.height) if closing.height else None, wins=wins, losses=losses,
        closing_fills=closing.height, bars=int(r.size), bar_s=bar)


def max_drawdown(ts_ns: np.ndarray, equity: np.ndarray) -> tuple[float, float]:
    """(largest fall from the running peak, longest peak-to-recovery time in seconds)."""
    if equity.size < 2:
        return 0.0, 0.0
    peak = np.maximum.accumulate(equity)
    dd = peak - equity
    tol = 1e-9 * max(1.0, float(np.max(np.abs(equity))))
    under = dd > tol
    idx = np.arange(equity.size)
    peak_idx = np.maximum.accumulate(np.where(~under, idx, 0))
    t = ts_ns.astype(np.float64)
    # Point i underwater: spell so far = t[i] - t[its peak]; point i right after an underwater point
    # (a recovery, or still underwater): t[i] - t[peak of i-1].
    cont = np.where(under, t - t[peak_idx], 0.0)
    rec = np.where(under[:-1], t[1:] - t[peak_idx[:-1]], 0.0)
    duration = max(float(cont.max()), float(rec.max()) if rec.size else 0.0) / 1e9
    return float(dd.max()), duration
