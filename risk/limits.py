"""The `risk` config section: limits per scope, loss controls, schedules and the switches risk starts with.

Limits are set per scope (`defaults`, `venues.<v>`, `strategies.<s>`, `symbols.<sym>`); where several
scopes set the same limit on the same quantity the tightest wins, and `defaults` only fills in where no
other scope sets that limit (so a strategy can be given more room than the default). What a limit counts depends on the
scope (see `SCOPE_MEANING`): position limits of `defaults`/`venues`/`symbols` bound the cluster-wide
position in a symbol and those of `strategies` the strategy's own; rates and open orders of `defaults`
and `strategies` count per strategy, those of `venues` the venue's total.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from cluster.config_base import Cfg, ConfigError, check, convert
from risk.sun import MAX_ABS_LATITUDE

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


_SINGULAR = {"symbols": "symbol", "strategies": "strategy", "venues": "venue"}


class RiskLimits(Cfg):
    """Limits for one scope; None means no limit at this scope."""

    max_order_qty: float | None = None
    max_order_notional: float | None = None
    # Venue filter checked before the gateway: an order worth less is refused.
    min_order_notional: float | None = None
    # A limit price must be within this many bps of the current mid.
    price_collar_bps: float | None = None
    # A market order leaves risk as a limit IOC at mid +- this many bps; without it a market order is refused.
    max_slippage_bps: float | None = None
    max_position_qty: float | None = None
    max_position_notional: float | None = None
    # Worst-case notional over symbols (open orders counted): sum of |exposure| and |sum of exposure|.
    max_gross_exposure: float | None = None
    max_net_exposure: float | None = None
    max_orders_per_s: float | None = None
    max_orders_per_min: float | None = None
    max_cancels_per_s: float | None = None
    max_cancels_per_min: float | None = None
    max_open_orders: float | None = None
    # Same strategy, symbol, side, price and quantity within this many seconds is a duplicate.
    duplicate_window_s: float | None = None
    # Loss (realized + unrealized - fees) since the start of the trading day that trips `loss_action`.
    daily_loss_limit: float | None = None
    # Loss breakers of a venue or strategy scope (the cluster's are the top-level `risk.max_drawdown_pct`,
    # `risk.capital`, `risk.loss_action`): drawdown from the scope's peak equity, equity = `capital` (the
    # scope's equity base; default `risk.capital`) + the scope's P&L; what a breaker of this scope switches
    # it to (default `risk.loss_action`).
    max_drawdown_pct: float | None = None
    capital: float | None = None
    loss_action: Literal["reducing", "halted"] | None = None


# A larger value of these is the tighter limit; for every other field the smaller one is.
HIGHER_IS_TIGHTER = frozenset({"min_order_notional", "duplicate_window_s"})

# Fields that mean nothing at a scope (validation refuses them there, with the reason).
_CLUSTER_LOSS = "the cluster's breaker is risk.max_drawdown_pct / risk.capital / risk.loss_action (top level)"
NOT_AT_SCOPE: dict[str, dict[str, str]] = {
    "symbols": {**{f: "has no meaning per symbol; set it under defaults, venues or strategies"
                   for f in ("max_gross_exposure", "max_net_exposure", "max_orders_per_s", "max_orders_per_min",
                             "max_cancels_per_s", "max_cancels_per_min")},
                **{f: "a drawdown breaker applies to the cluster, a venue or a strategy, not a symbol"
                   for f in ("max_drawdown_pct", "capital")}},
    "defaults": {f: _CLUSTER_LOSS for f in ("max_drawdown_pct", "capital", "loss_action")},
}
# The loss-breaker fields of a scope: not limits an order is checked against.
LOSS_FIELDS = frozenset({"max_drawdown_pct", "capital", "loss_action"})

SCOPE_MEANING = {
    "defaults": "every order; position: each symbol's cluster-wide net; exposure and daily loss: the whole cluster; "
                "rates, open orders, duplicates: each strategy",
    "venues": "orders on the venue; position: cluster-wide net of its symbols; exposure, rates, open orders, "
              "daily loss, drawdown: the venue's total",
    "strategies": "the strategy's orders; position, exposure, rates, open orders, daily loss, drawdown: the "
                  "strategy's own",
    "symbols": "orders in the symbol; position, open orders, daily loss: the cluster-wide total in the symbol",
}


class DefaultLimits(RiskLimits):
    """`risk.defaults`: like any scope, with the defaults a desk starts from."""

    max_order_notional: float | None = 50_000.0
    max_slippage_bps: float | None = 50.0
    price_collar_bps: float | None = 500.0
    max_orders_per_min: float | None = 60.0
    duplicate_window_s: float | None = 0.5


class ScheduleWindow(Cfg):
    """A weekly window in a timezone, for a scope (`global`, `venue:<v>`, `strategy:<s>`, `symbol:<sym>`).

    `kind: trading`: risk-increasing orders are refused outside every trading window of the scope.
    `kind: pause`: risk-increasing orders are refused inside it. Positions are kept either way.
    Either `days` with `start`/`end` as `HH:MM` (the same hours each listed day; end before start spans
    midnight), or `start`/`end` as `<day> HH:MM` for one weekly span (e.g. `fri 18:00` to `sat 19:00`).
    A time is a local wall-clock time or a sun event computed for each date at `latitude`/`longitude`
    (NOAA's equations, `risk/sun.py`): `sunrise` or `sunset`, optionally offset in minutes, e.g.
    `fri sunset-18m` to `sat sunset+40m`.
    """

    name: str
    scope: str = "global"
    kind: Literal["trading", "pause"] = "pause"
    timezone: str = "UTC"
    days: list[str] = []
    start: str = "00:00"
    end: str = "00:00"
    # Where sunrise and sunset are computed (degrees; north and east positive); required by sun events.
    latitude: float | None = None
    longitude: float | None = None


class RiskSection(Cfg):
    kill_switch: bool = False
    defaults: DefaultLimits = DefaultLimits()
    symbols: dict[str, RiskLimits] = {}
    strategies: dict[str, RiskLimits] = {}
    venues: dict[str, RiskLimits] = {}
    # A reference price older than this cannot price an order: fail closed.
    max_mark_age_s: float = 5.0
    # Cross the cluster's own resting order? Refused (self-trade prevention) unless false.
    self_trade_prevention: bool = True
    # Equity = capital + realized - fees + unrealized; the drawdown breaker measures from its peak.
    capital: float = 100_000.0
    max_drawdown_pct: float | None = 5.0
    # What a loss breaker (drawdown, daily loss) switches its scope to.
    loss_action: Literal["reducing", "halted"] = "reducing"
    # The trading day (daily loss) starts at midnight in this timezone.
    day_timezone: str = "UTC"
    # Stop-loss exit at entry -+ stop_loss_atr x ATR (null: no stops); ATR of `atr_period` bars of `atr_bar_s`.
    stop_loss_atr: float | None = 2.0
    atr_period: int = 14
    atr_bar_s: float = 60.0
    schedules: list[ScheduleWindow] = []

    def validate(self, symbols: set[str], strategies: set[str] | None, venues: set[str]) -> None:
        """Check names and values; `strategies=None` skips the strategy-name check (the risk actor)."""
        for scope, table, known in (("symbols", self.symbols, symbols), ("strategies", self.strategies, strategies),
                                    ("venues", self.venues, venues)):
            for k in table:
                check(known is None or k in known, f"risk.{scope}.{k}", f"no such {_SINGULAR.get(scope, scope)} in this config")
        for scope, limits in [("defaults", self.defaults), *[(f"symbols.{k}", v) for k, v in self.symbols.items()],
                              *[(f"strategies.{k}", v) for k, v in self.strategies.items()],
                              *[(f"venues.{k}", v) for k, v in self.venues.items()]]:
            banned = NOT_AT_SCOPE.get(scope.split(".")[0], {})
            for field in RiskLimits.__struct_fields__:
                value = getattr(limits, field)
                if value is None:
                    continue
                check(field not in banned, f"risk.{scope}.{field}", banned.get(field, ""))
                if field == "loss_action":
                    continue  # its values are checked by type (reducing | halted)
                check(value > 0, f"risk.{scope}.{field}", "must be > 0 (or omitted for no limit)")
                check(field != "max_drawdown_pct" or value < 100, f"risk.{scope}.{field}",
                      "must be between 0 and 100 (percent), or omitted for no breaker")
        check(self.max_mark_age_s > 0, "risk.max_mark_age_s", "must be > 0")
        check(self.capital > 0, "risk.capital", "must be > 0")
        check(self.max_drawdown_pct is None or 0 < self.max_drawdown_pct < 100, "risk.max_drawdown_pct",
              "must be between 0 and 100 (percent), or null for no breaker")
        check(self.stop_loss_atr is None or self.stop_loss_atr > 0, "risk.stop_loss_atr", "must be > 0 or null")
        check(self.atr_period >= 1, "risk.atr_period", "must be >= 1")
        check(self.atr_bar_s > 0, "risk.atr_bar_s", "must be > 0")
        check(_zone_ok(self.day_timezone), "risk.day_timezone", f"unknown timezone {self.day_timezone!r}")
        names: set[str] = set()
        for i, w in enumerate(self.schedules):
            key = f"risk.schedules[{i}]"
            check(w.name not in names, f"{key}.name", f"{w.name!r} is used twice")
            names.add(w.name)
            check(_scope_ok(w.scope, symbols, strategies, venues), f"{key}.scope",
                  f"{w.scope!r} must be global, venue:<v>, strategy:<s> or symbol:<sym> of this config")
            check(_zone_ok(w.timezone), f"{key}.timezone", f"unknown timezone {w.timezone!r}")
            try:
                window_spans(w)
            except ValueError as exc:
                raise ConfigError(key, str(exc)) from None
            if uses_sun(w):
                check(w.latitude is not None and w.longitude is not None, f"{key}.latitude",
                      "sunrise/sunset need latitude and longitude")
                check(abs(w.latitude) <= MAX_ABS_LATITUDE, f"{key}.latitude",  # type: ignore[arg-type]
                      f"must be within +-{MAX_ABS_LATITUDE:g} degrees for sunrise/sunset (no polar day or night)")
                check(-180.0 <= w.longitude <= 180.0, f"{key}.longitude",  # type: ignore[operator]
                      "must be between -180 and 180 degrees")


_TIME_RE = re.compile(r"(?:(mon|tue|wed|thu|fri|sat|sun)\s+)?(?:([01]?\d|2[0-3]):([0-5]\d)|(sunrise|sunset)"
                      r"(?:\s*([+-])\s*(\d{1,3})\s*m(?:in)?)?)")


def _zone_ok(name: str) -> bool:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(name)
    except Exception:
        return False
    return True


def _scope_ok(scope: str, symbols: set[str], strategies: set[str] | None, venues: set[str]) -> bool:
    if scope == "global":
        return True
    kind, _, name = scope.partition(":")
    if kind == "venue":
        return name in venues
    if kind == "strategy":
        return strategies is None or name in strategies
    if kind == "symbol":
        return name in symbols
    return False


# A time of day: minutes after local midnight, or (sun event, offset in minutes) computed per date.
TimeSpec = int | tuple[str, int]


def _parse_time(text: str) -> tuple[int | None, TimeSpec]:
    m = _TIME_RE.fullmatch(text.strip().lower())
    if not m:
        raise ValueError(f"time {text!r} must be HH:MM, sunrise or sunset (optionally +-N m), each optionally "
                         f"after a day ('fri sunset-18m'; day one of {', '.join(DAYS)})")
    day = DAYS.index(m.group(1)) if m.group(1) else None
    if m.group(4):
        offset = int(m.group(6) or 0) * (-1 if m.group(5) == "-" else 1)
        if abs(offset) > 360:
            raise ValueError(f"time {text!r}: an offset from {m.group(4)} must be within 360 minutes")
        return day, (m.group(4), offset)
    return day, int(m.group(2)) * 60 + int(m.group(3))


def uses_sun(w: ScheduleWindow) -> bool:
    return any(not isinstance(_parse_time(t)[1], int) for t in (w.start, w.end))


class Span(msgspec.Struct, frozen=True):
    """One occurrence rule of a window: from `start` on weekday `day` to `end` `end_days` later (if that is not
    after the start on a date, the end moves on by `wrap_days`: 7 for a weekly span, 1 for a daily one)."""

    day: int
    start: TimeSpec
    end_days: int
    end: TimeSpec
    wrap_days: int


def window_spans(w: ScheduleWindow) -> list[Span]:
    """The window's occurrence rules, for windows with fixed times and with sun events alike."""
    sday, sspec = _parse_time(w.start)
    eday, espec = _parse_time(w.end)
    if sday is not None or eday is not None:
        if sday is None or eday is None or w.days:
            raise ValueError("a weekly span needs a day in both start and end, and no `days`")
        if sday == eday and sspec == espec:
            raise ValueError("start and end are the same time")
        return [Span(sday, sspec, (eday - sday) % 7, espec, 7)]
    if not w.days:
        raise ValueError("give `days` (e.g. [mon, tue, wed, thu, fri]) or days in start and end")
    for d in w.days:
        if d not in DAYS:
            raise ValueError(f"unknown day {d!r}; use {', '.join(DAYS)}")
    if sspec == espec:
        raise ValueError("start and end are the same time")
    return [Span(DAYS.index(d), sspec, 0, espec, 1) for d in w.days]


def weekly_spans(w: ScheduleWindow) -> list[tuple[int, int]]:
    """A window of fixed times as [start, end) minute-of-week spans (Monday 00:00 = 0); a span may wrap past
    Sunday. Windows with sun events have no fixed spans (see `window_spans`)."""
    if uses_sun(w):
        raise ValueError("a window with sunrise/sunset has no fixed weekly spans")
    out = []
    for sp in window_spans(w):  # validates the window
        assert isinstance(sp.start, int) and isinstance(sp.end, int)
        s = sp.day * 1440 + sp.start
        e = (sp.day + sp.end_days) * 1440 + sp.end
        out.append((s, e if e > s else e + sp.wrap_days * 1440))
    return out


# -- changing limits while running ------------------------------------------------------------------------------
OVERRIDABLE_TOP = ("max_mark_age_s", "self_trade_prevention", "capital", "max_drawdown_pct", "loss_action",
                   "stop_loss_atr")


def apply_overrides(section: RiskSection, overrides: dict[str, Any]) -> RiskSection:
    """The section with `KEY: value` overrides applied (`defaults.max_order_qty`, `symbols.BTCUSDT.max_position_qty`,
    `max_drawdown_pct`, ...). Raises ConfigError naming the key for anything that is not a limit or not valid."""
    data = msgspec.to_builtins(section)
    for key, value in overrides.items():
        parts = key.split(".")
        if len(parts) == 1:
            check(parts[0] in OVERRIDABLE_TOP, f"risk.{key}",
                  f"not a limit that can be changed while running; changeable: {', '.join(OVERRIDABLE_TOP)}, "
                  "defaults.<limit>, venues|strategies|symbols.<name>.<limit>")
            data[parts[0]] = value
        elif len(parts) == 2 and parts[0] == "defaults":
            check(parts[1] in RiskLimits.__struct_fields__, f"risk.{key}", f"unknown limit {parts[1]!r}")
            data.setdefault("defaults", {})[parts[1]] = value
        elif len(parts) == 3 and parts[0] in ("venues", "strategies", "symbols"):
            check(parts[2] in RiskLimits.__struct_fields__, f"risk.{key}", f"unknown limit {parts[2]!r}")
            data.setdefault(parts[0], {}).setdefault(parts[1], {})[parts[2]] = value
        else:
            raise ConfigError(f"risk.{key}", "expected LIMIT, defaults.LIMIT or venues|strategies|symbols.NAME.LIMIT")
    return convert(data, RiskSection, prefix="risk.")
