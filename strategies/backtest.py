"""The backtest engine: the cluster's order path in one event loop, no Ray, no wall clock.

    book / trade event -> strategy (the same class the cluster hosts) -> intents
      -> RiskEngine check (optional; the same engine the risk actor runs)
      -> PaperVenue (the same fill model the paper gateway runs), after the venue's latency
      -> execution reports -> risk, Portfolio, the strategy's `handle_report`

Time is the events' `ts_ns`; an order sent at t reaches the venue at the first event at or after
t + `latency_ms` and trades against the book the venue holds then. Everything is deterministic: the
same events and config give the same fills (client order ids are a counter, trade ids the venue's).

Results are polars DataFrames: `fills`, `decisions` (every intent and the risk answer) and `equity`
(long format: one row per strategy and "ALL" each `equity_interval_s` of event time). Conventions:
equity = realized P&L - fees + unrealized P&L at the latest mid (quote currency, no capital base);
Sharpe = mean / std (ddof 1) of the equity increments per interval, times sqrt(seconds per 365-day
year / interval), risk-free rate 0; max drawdown = the largest fall of equity from its running peak
(starting at 0), in quote currency.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import polars as pl

from cluster.config import ClusterConfig
from cluster.messages import (
    BookUpdate,
    ExecutionReport,
    IntentAction,
    Order,
    OrderIntent,
    RejectReason,
    RiskDecision,
    Trade,
)
from cluster.portfolio import Portfolio
from gateways.paper import PaperVenue
from risk.engine import RiskEngine
from strategies import create_strategy
from strategies.base import Strategy

SECONDS_PER_YEAR = 365.0 * 24.0 * 3600.0
ALL = "ALL"
_NEW = IntentAction.NEW  # a module name: in Python 3.11 `IntentAction.NEW` costs a metaclass lookup (~0.2 us)
# Fields of the per-position rows `_sample` sums: (strategy, realized, fees, unrealized, gross notional).
_REALIZED, _FEES, _UNREALIZED, _GROSS = (itemgetter(i) for i in range(1, 5))


def _mark(book: BookUpdate) -> tuple[float, int]:
    """(mid, time) of a good book: the mark the engine gives risk and the portfolio."""
    return ((book.bids[0][0] + book.asks[0][0]) / 2.0, book.receive_ts_ns or book.exchange_ts_ns)


def _frame(rows: list[tuple], schema: dict[str, Any]) -> pl.DataFrame:
    """The rows as a frame, built column by column (several times faster in polars than row by row)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pl.DataFrame({name: list(col) for name, col in zip(schema, columns, strict=True)}, schema=schema)


def _equity_row(rows: list[tuple[str, float, float, float, float]]) -> tuple[float, ...]:
    """(equity, realized_net, unrealized, fees, gross) from (strategy, realized, fees, unrealized, gross) rows.

    Each field is `sum` over the rows in portfolio order (over `map(itemgetter)`: no frame per value);
    for a single row `0 + value` is exactly what `sum` returns.
    """
    if len(rows) == 1:
        _, realized, fees, unreal, gross = rows[0]
        realized, fees, unreal, gross = 0 + realized, 0 + fees, 0 + unreal, 0 + gross
    else:
        realized = sum(map(_REALIZED, rows))
        fees = sum(map(_FEES, rows))
        unreal = sum(map(_UNREALIZED, rows))
        gross = sum(map(_GROSS, rows))
    return realized - fees + unreal, realized - fees, unreal, fees, gross


def sharpe_ratio(equity: list[float], interval_s: float) -> float:
    """Annualized Sharpe of equity increments per `interval_s` (see the module docstring); 0 if undefined."""
    if len(equity) < 3:
        return 0.0
    inc = [b - a for a, b in zip(equity, equity[1:], strict=False)]
    mean = sum(inc) / len(inc)
    var = sum([(x - mean) ** 2 for x in inc]) / (len(inc) - 1)
    if var <= 0:
        return 0.0
    return mean / math.sqrt(var) * math.sqrt(SECONDS_PER_YEAR / interval_s)


def max_drawdown(equity: list[float]) -> float:
    """Largest drop from a running peak (the peak starts at 0), >= 0."""
    peak = 0.0
    worst = 0.0
    for e in equity:  # max(peak, e) and max(worst, drop), without a call per point
        if e > peak:
            peak = e
        drop = peak - e
        if drop > worst:
            worst = drop
    return worst


@dataclass
class BacktestResult:
    fills: pl.DataFrame
    decisions: pl.DataFrame
    equity: pl.DataFrame
    summary: dict[str, Any]

    def write(self, folder: str | Path) -> Path:
        """fills.parquet, decisions.parquet, equity.parquet and summary.json in `folder` (created)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.fills.write_parquet(out / "fills.parquet")
        self.decisions.write_parquet(out / "decisions.parquet")
        self.equity.write_parquet(out / "equity.parquet")
        (out / "summary.json").write_text(json.dumps(self.summary, indent=2, sort_keys=True))
        return out


class _Pending(NamedTuple):
    """An order or cancel on its way to the venue; the heap orders them by (due_ns, n), n being unique."""

    due_ns: int
    n: int
    order: Order | None = None
    cancel_coid: str = ""
    venue: str = ""


@dataclass
class BacktestEngine:
    """One backtest over the strategies of `cfg` (or those given); call `run(events)` once."""

    cfg: ClusterConfig
    strategies: list[Strategy] = field(default_factory=list)
    use_risk: bool = True
    latency_ms: float | None = None  # None: each venue's configured latency
    equity_interval_s: float = 1.0

    def __post_init__(self) -> None:
        cfg = self.cfg
        if not self.strategies:
            self.strategies = strategies_from_config(cfg)
        self.by_name = {s.name: s for s in self.strategies}
        self.by_symbol: dict[str, list[Strategy]] = {}
        for s in self.strategies:
            for sym in s.symbols:
                self.by_symbol.setdefault(sym, []).append(s)
        self.venues = {name: PaperVenue(v.maker_fee_bps, v.taker_fee_bps, trade_id_prefix=f"{name}-bt")
                       for name, v in cfg.venues.items()}
        self.latency_ns = {name: int((v.latency_ms if self.latency_ms is None else self.latency_ms) * 1e6)
                           for name, v in cfg.venues.items()}
        self.risk = RiskEngine(cfg.risk, cfg.symbols, list(cfg.venues)) if self.use_risk else None
        self.portfolio = Portfolio()
        self.timers = {s.name: st.timer_interval_ms * 1e6 for st in cfg.strategies for s in self.strategies
                       if st.name == s.name and st.timer_interval_ms > 0}
        self.next_timer: dict[str, float] = {}
        self.owner: dict[str, Strategy] = {}
        self.open: set[str] = set()
        # Resting orders by symbol, and the books the venue has not been shown yet (see _flush_book).
        self.resting: dict[str, set[str]] = {}  # symbol -> ids of its resting orders (never an empty set)
        self.held: dict[str, BookUpdate] = {}  # symbol -> latest book not shown to the venue
        self.differing: dict[str, BookUpdate] = {}  # symbol -> latest held book whose seq is not the shown one
        self.shown_seq: dict[str, int] = {}
        # symbol -> the latest good book: its mid and time are the symbol's mark (see `marks`), worked out
        # only when risk or the equity curve reads them, not on every book.
        self.mark_books: dict[str, BookUpdate] = {}
        self.pending: list[_Pending] = []
        self.n_orders = 0
        self.n_pending = 0
        self.now = 0
        self.events = {"books": 0, "trades": 0}
        self._fills: list[tuple] = []
        self._decisions: list[tuple] = []
        self._equity: list[tuple] = []
        self._interval_ns = int(self.equity_interval_s * 1e9)
        self._next_sample: int | None = None
        self._first_ts = 0

    # -- the loop ---------------------------------------------------------------------------------
    # The loop runs once per event, so it is written for speed: locals instead of attributes, bound
    # methods looked up once, strategies that keep the base class's no-op `on_trade` not called for
    # trades, the venue's view of a book kept as one dict store (see _flush_book), the mark as the
    # book itself (see `marks`) and `self.now` stored only before a call that reads it. None of it
    # changes what happens, in what order, or any number.
    def run(self, events: Iterable[BookUpdate | Trade]) -> BacktestResult:
        on_books: dict[str, list[tuple[Strategy, Any]]] = {}
        on_trades: dict[str, list[tuple[Strategy, Any]]] = {}
        for sym, subs in self.by_symbol.items():
            on_books[sym] = [(s, s.handle_book) for s in subs]
            handlers = [(s, s.on_trade) for s in subs if getattr(s.on_trade, "__func__", None) is not Strategy.on_trade]
            if handlers:
                on_trades[sym] = handlers
        venues = self.venues
        mark_books = self.mark_books
        resting = self.resting
        held = self.held
        differing = self.differing
        shown_seq = self.shown_seq
        pending = self.pending
        submit = self._submit
        timers = self.timers
        interval = self._interval_ns
        unset = -math.inf
        nxt = unset if self._next_sample is None else self._next_sample
        no_handlers: list[tuple[Strategy, Any]] = []
        books = trades = 0
        ts = self.now
        try:
            for ev in events:
                ts = ev.receive_ts_ns or ev.exchange_ts_ns
                if ts >= nxt:
                    if nxt == unset:
                        self._first_ts = ts
                        nxt = ts + interval
                    else:
                        self._sample(nxt)
                        nxt += interval * ((ts - nxt) // interval + 1)
                # `self.now` (the time orders, reports and fills get) is set before whatever reads it.
                if pending and pending[0].due_ns <= ts:
                    self.now = ts
                    self._release(ts)
                if type(ev) is BookUpdate:
                    books += 1
                    sym = ev.symbol
                    if ev.bids and ev.asks and not ev.crossed and not ev.stale:
                        mark_books[sym] = ev
                    if ev.venue in venues:
                        if sym in resting:
                            self.now = ts
                            self._deliver_book(ev)
                        else:
                            # Held until an order needs it (see _flush_book).
                            if ev.seq != shown_seq.get(sym):
                                differing[sym] = ev
                            held[sym] = ev
                    for s, handle in on_books.get(sym, no_handlers):
                        intents = handle(ev)
                        if intents:
                            self.now = ts
                            submit(s, intents)
                else:
                    trades += 1
                    if on_trades:
                        for s, handle in on_trades.get(ev.symbol, no_handlers):
                            intents = handle(ev)
                            if intents:
                                self.now = ts
                                submit(s, intents)
                if timers:
                    self.now = ts
                    self._timers(ts)
        finally:
            self.now = ts
            self._next_sample = None if nxt == unset else int(nxt)
            self.events = {"books": books, "trades": trades}
        if self._next_sample is not None and self.now > self._next_sample - self._interval_ns:
            self._sample(self.now)  # the end, unless a regular sample was taken at this very time
        return self._result()

    @property
    def marks(self) -> dict[str, tuple[float, int]]:
        """symbol -> (mid, ts) of the latest good book (not crossed, not stale, both sides)."""
        return {sym: _mark(b) for sym, b in self.mark_books.items()}

    def _timers(self, ts: int) -> None:
        for name, interval in self.timers.items():
            due = self.next_timer.setdefault(name, ts + interval)
            if ts >= due:
                self.next_timer[name] = ts + interval
                s = self.by_name[name]
                intents = s.on_timer(ts)
                if intents:
                    self._submit(s, intents)

    # -- the venue's view of the books --------------------------------------------------------------
    # PaperVenue.on_book matches the symbol's resting orders and otherwise only stores the book (and
    # frees the liquidity taken from the previous seq). With nothing resting on a symbol, the engine
    # therefore shows the venue only the latest book, just before an order needs it: the same state,
    # for a fraction of the calls. If the seq went away and came back meanwhile, the book in between
    # is shown first, so the venue frees the used liquidity exactly as it would have. `run` holds the
    # books: `held` keeps the latest, `differing` the latest whose seq is not the shown one (when the
    # latest has the shown seq, that is the book in between).
    def _deliver_book(self, book: BookUpdate) -> None:
        self._flush_book(book.symbol)
        self._show(book)

    def _flush_book(self, symbol: str) -> None:
        latest = self.held.pop(symbol, None)
        if latest is None:
            return
        between = self.differing.pop(symbol, None)
        if between is not None and latest.seq == self.shown_seq.get(symbol):
            self._show(between)
        self._show(latest)

    def _show(self, book: BookUpdate) -> None:
        self.shown_seq[book.symbol] = book.seq
        reports = self.venues[book.venue].on_book(book)
        if reports:
            self._dispatch(reports)

    def _sync_marks(self) -> None:
        risk = self.risk
        set_mark = self.portfolio.set_mark
        for sym, book in self.mark_books.items():
            mid = (book.bids[0][0] + book.asks[0][0]) / 2.0  # `_mark`, inlined: this runs every sample
            set_mark(sym, mid)
            if risk is not None:
                risk.set_mark(sym, mid, book.receive_ts_ns or book.exchange_ts_ns)

    # -- orders -----------------------------------------------------------------------------------
    # Enum values below are read as `_value_` (the member's value, as the enum docs name it): the `value`
    # property costs ~0.3 us per read in Python 3.11, and these rows are built for every decision and fill.
    def _submit(self, strategy: Strategy, intents: list[OrderIntent]) -> None:
        risk = self.risk
        for intent in intents:
            ts = self.now
            decision = self._check(intent, ts)
            approved = decision.approved
            order: Order | None = None
            action = intent.action
            if approved and action is _NEW:
                self.n_orders += 1
                coid = f"bt-{self.n_orders}"
                order = Order(client_order_id=coid, strategy=intent.strategy, venue=intent.venue, symbol=intent.symbol,
                              side=intent.side, qty=intent.qty, order_type=intent.order_type, price=intent.price,
                              tif=intent.tif, created_ts_ns=ts)
                if risk is not None:
                    risk.reserve(order)
                self.owner[coid] = strategy
                self.open.add(coid)
                decision = msgspec.structs.replace(decision, client_order_id=coid)
            elif approved:
                decision = msgspec.structs.replace(decision, client_order_id=intent.target_client_order_id)
            self._decisions.append((ts, intent.strategy, intent.symbol, action._value_, intent.side._value_,
                                    intent.qty, intent.price, intent.tif._value_, approved,
                                    decision.reason._value_, decision.client_order_id or "", intent.tag))
            strategy.handle_decision(decision, intent)
            if not approved:
                continue
            self.n_pending += 1
            p = _Pending(ts + self.latency_ns[intent.venue], self.n_pending, order=order, venue=intent.venue,
                         cancel_coid="" if order is not None else intent.target_client_order_id or "")
            if p.due_ns <= ts:
                self._execute(p)
            else:
                heapq.heappush(self.pending, p)

    def _check(self, intent: OrderIntent, ts: int) -> RiskDecision:
        risk = self.risk
        if risk is not None:
            book = self.mark_books.get(intent.symbol)
            if book is not None:  # `_mark`, inlined: this runs on every intent
                risk.set_mark(intent.symbol, (book.bids[0][0] + book.asks[0][0]) / 2.0,
                              book.receive_ts_ns or book.exchange_ts_ns)
            return risk.check(intent, ts)
        ok = intent.action is IntentAction.NEW or intent.target_client_order_id in self.open
        return RiskDecision(approved=ok, reason=RejectReason.NONE if ok else RejectReason.UNKNOWN_ORDER,
                            strategy=intent.strategy, venue=intent.venue, symbol=intent.symbol, action=intent.action,
                            ts_ns=ts)

    def _release(self, ts: int) -> None:
        while self.pending and self.pending[0].due_ns <= ts:
            self._execute(heapq.heappop(self.pending))

    def _execute(self, p: _Pending) -> None:
        venue = self.venues[p.venue]
        if p.order is not None:
            self._flush_book(p.order.symbol)
            reports = venue.submit(p.order)
            if reports and not reports[-1].status.is_terminal:
                self.resting.setdefault(p.order.symbol, set()).add(p.order.client_order_id)
            self._dispatch(reports)
        elif p.cancel_coid in self.open:
            self._dispatch(venue.cancel(p.cancel_coid))

    def _dispatch(self, reports: list[ExecutionReport]) -> None:
        risk = self.risk
        owner = self.owner
        for r in reports:
            strategy = owner.get(r.client_order_id)
            if strategy is None or not r.strategy:
                continue  # a cancel that lost the race with a fill: the order's own report already went out
            if risk is not None:
                risk.on_report(r)
            f = r.fill
            if f is not None:
                self.portfolio.record_fill(f)
                self._fills.append((self.now, f.strategy, f.venue, f.symbol, f.side._value_, f.price, f.qty, f.fee,
                                    f.liquidity._value_, f.client_order_id, f.trade_id))
            if r.status.is_terminal:
                self.open.discard(r.client_order_id)
                resting = self.resting.get(r.symbol)
                if resting:
                    resting.discard(r.client_order_id)
                    if not resting:
                        del self.resting[r.symbol]
            intents = strategy.handle_report(r)
            if intents:
                self._submit(strategy, intents)

    # -- results ----------------------------------------------------------------------------------
    def _sample(self, ts: int) -> None:
        self._sync_marks()
        pf = self.portfolio
        mark = pf.mark
        rows = []
        for p in pf.live_positions():
            m = mark(p.symbol)
            rows.append((p.strategy, p.realized_pnl, p.fees, p.unrealized(m), abs(p.qty) * (m or p.avg_price)))
        append = self._equity.append
        every = _equity_row(rows)
        append((ts, ALL, *every))
        for name in self.by_name:
            mine = [r for r in rows if r[0] == name]
            append((ts, name, *(every if len(mine) == len(rows) else _equity_row(mine))))

    def _result(self) -> BacktestResult:
        fills = _frame(self._fills, {
            "ts_ns": pl.Int64, "strategy": pl.String, "venue": pl.String, "symbol": pl.String, "side": pl.String,
            "price": pl.Float64, "qty": pl.Float64, "fee": pl.Float64, "liquidity": pl.String,
            "client_order_id": pl.String, "trade_id": pl.String})
        decisions = _frame(self._decisions, {
            "ts_ns": pl.Int64, "strategy": pl.String, "symbol": pl.String, "action": pl.String, "side": pl.String,
            "qty": pl.Float64, "price": pl.Float64, "tif": pl.String, "approved": pl.Boolean, "reason": pl.String,
            "client_order_id": pl.String, "tag": pl.String})
        equity = _frame(self._equity, {
            "ts_ns": pl.Int64, "strategy": pl.String, "equity": pl.Float64, "realized_net": pl.Float64,
            "unrealized": pl.Float64, "fees": pl.Float64, "gross_notional": pl.Float64})
        return BacktestResult(fills=fills, decisions=decisions, equity=equity, summary=self._summary(fills, equity))

    def _summary(self, fills: pl.DataFrame, equity: pl.DataFrame) -> dict[str, Any]:
        per: dict[str, Any] = {}
        for name in [ALL, *self.by_name]:
            mine = equity.filter(pl.col("strategy") == name)
            curve = mine["equity"].to_list()
            f = fills if name == ALL else fills.filter(pl.col("strategy") == name)
            d = [row for row in self._decisions if name == ALL or row[1] == name]
            last = mine.tail(1)
            per[name] = {
                "pnl": round(curve[-1], 6) if curve else 0.0,
                "realized_net": round(float(last["realized_net"][0]), 6) if last.height else 0.0,
                "unrealized": round(float(last["unrealized"][0]), 6) if last.height else 0.0,
                "fees": round(float(f["fee"].sum()), 6) if f.height else 0.0,
                "sharpe": round(sharpe_ratio(curve, self.equity_interval_s), 4),
                "max_drawdown": round(max_drawdown(curve), 6),
                "trades": f.height,
                "volume": round(float((f["price"] * f["qty"]).sum()), 6) if f.height else 0.0,
                "orders": sum(1 for row in d if row[3] == "new" and row[8]),
                "rejected": sum(1 for row in d if not row[8]),
            }
        duration = (self.now - self._first_ts) / 1e9 if self._next_sample is not None else 0.0
        return {"events": dict(self.events), "duration_s": round(duration, 3),
                "equity_interval_s": self.equity_interval_s, "strategies": per,
                "positions": {f"{p.strategy}:{p.symbol}": p.qty for p in self.portfolio.positions()},
                "open_orders": len(self.open)}


def strategies_from_config(cfg: ClusterConfig, only: list[str] | None = None,
                           overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[Strategy]:
    """The config's strategies (or those named in `only`), with parameter overrides {name: {key: value}}."""
    sym = cfg.symbol_map
    names = {st.name for st in cfg.strategies}
    for n in [*(only or []), *(overrides or {})]:
        if n not in names:
            raise ValueError(f"unknown strategy {n!r}; configured: {sorted(names)}")
    out = []
    for st in cfg.strategies:
        if only and st.name not in only:
            continue
        params = {**st.params, **dict((overrides or {}).get(st.name, {}))}
        s = create_strategy(st.type, st.name, st.symbols, {s: sym[s].venue for s in st.symbols}, params)
        s.set_instruments({x: sym[x].lot_size for x in st.symbols})
        out.append(s)
    return out


def strategy_symbols(strategies: list[Strategy]) -> list[str]:
    seen: dict[str, None] = {}
    for s in strategies:
        for sym in s.symbols:
            seen.setdefault(sym)
    return list(seen)

