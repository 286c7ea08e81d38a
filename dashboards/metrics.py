"""Cluster metrics: one catalog of names, cheap recorders the actors call, exported by Ray.

Every metric is declared once in `CATALOG` (name, kind, tags); the Grafana
dashboards are generated from the same names, and the Prometheus test checks
every panel against them. Metrics go through `ray.util.metrics`, so Ray's
metrics agent exports them on its Prometheus endpoint (and the Ray dashboard's
Metrics tab shows them). Ray prefixes custom metrics with `ray_` and counters
get `_total`: `rsc_fills` is scraped as `ray_rsc_fills_total` (see `prom_name`).

Cheap on the trading path: counters and gauges are accumulated in plain dicts
and pushed to Ray at most once per `flush_interval_s` (one dict update per
event otherwise); histograms are observed directly. A recorder never raises:
a metrics fault is logged once and counted, trading goes on. Outside a Ray
worker (tests, tools) the recorders write to a `MemorySink` instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cluster.messages import BookUpdate, ExecutionReport, IntentAction, Order, OrderIntent, RiskDecision

log = logging.getLogger(__name__)

PREFIX = "rsc_"
RAY_PREFIX = "ray_"

Kind = Literal["counter", "gauge", "histogram"]

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    description: str
    tags: tuple[str, ...]
    boundaries: tuple[float, ...] = ()

    @property
    def prom_name(self) -> str:
        """The series name as scraped from Ray's endpoint (histograms add _bucket/_sum/_count)."""
        return RAY_PREFIX + self.name + ("_total" if self.kind == "counter" else "")


def _spec(name: str, kind: Kind, description: str, *tags: str, boundaries: tuple[float, ...] = ()) -> MetricSpec:
    if kind == "histogram" and not boundaries:
        boundaries = LATENCY_BUCKETS_S
    return MetricSpec(PREFIX + name, kind, description, tuple(tags), boundaries)


_SPECS = [
    # feeds and books
    _spec("book_updates", "counter", "Depth events applied to the L2 book", "venue", "symbol"),
    _spec("market_trades", "counter", "Market trades received", "venue", "symbol"),
    _spec("feed_resyncs", "counter", "Order-book resyncs (gap or stale snapshot: book rebuilt)", "venue", "symbol"),
    _spec("feed_snapshots", "counter", "Book snapshots fetched", "venue", "symbol"),
    _spec("feed_dropped", "counter", "Feed messages dropped, by reason (malformed, gap, stale, overflow)",
          "venue", "symbol", "reason"),
    _spec("feed_exchange_lag_seconds", "gauge", "Receive time minus exchange time of the latest book", "venue", "symbol"),
    _spec("book_age_seconds", "gauge", "Age of the latest book the feed holds", "venue", "symbol"),
    _spec("mid_price", "gauge", "Mid price of the latest book", "venue", "symbol"),
    _spec("spread", "gauge", "Best ask minus best bid of the latest book", "venue", "symbol"),
    _spec("conflated_skipped", "counter", "Book updates conflated away before a subscriber saw them",
          "feed", "subscriber"),
    _spec("feed_delivery_errors", "counter", "Deliveries to a subscriber that failed", "feed", "subscriber"),
    # strategies
    _spec("strategy_books", "counter", "Book updates a strategy processed", "strategy", "symbol"),
    _spec("strategy_skipped", "counter", "Book updates a strategy never saw (conflated)", "strategy"),
    _spec("strategy_delivery_lag_seconds", "histogram", "Feed receive time to strategy processing",
          "strategy", "symbol"),
    _spec("strategy_intents", "counter", "Order intents sent to risk", "strategy", "symbol", "action"),
    _spec("strategy_decisions", "counter", "Risk answers seen by the strategy, by reason", "strategy", "reason"),
    _spec("risk_roundtrip_seconds", "histogram", "Strategy to risk and back", "strategy"),
    _spec("tick_to_order_seconds", "histogram", "Feed receive time of the book to the approved order", "strategy",
          "symbol"),
    # risk
    _spec("risk_decisions", "counter", "Risk decisions by reason (none = approved)", "strategy", "venue", "symbol",
          "action", "reason"),
    _spec("risk_check_seconds", "histogram", "Time risk spent on one decision (incl. forwarding)", "action",
          boundaries=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 2.5)),
    _spec("kill_switch", "gauge", "1 while a kill switch is on", "scope"),
    _spec("risk_reservations", "gauge", "Open order reservations held by risk"),
    _spec("risk_pending_writes", "gauge", "Risk's audit and state writes queued for Redis (grows while Redis is away)"),
    _spec("risk_dropped_writes", "gauge",
          "Audit entries risk dropped since it started because its write queue was full (trading state never is)"),
    _spec("mark_price", "gauge", "Reference price risk uses", "symbol"),
    # gateways, orders and positions
    _spec("orders", "counter", "Order state changes by resulting state", "venue", "strategy", "symbol", "state"),
    _spec("open_orders", "gauge", "Orders not yet terminal", "venue"),
    _spec("fills", "counter", "Fills recorded", "venue", "strategy", "symbol", "liquidity"),
    _spec("fill_notional", "counter", "Traded notional (turnover)", "venue", "strategy", "symbol"),
    _spec("fees", "counter", "Fees paid", "venue", "strategy", "symbol"),
    _spec("position_qty", "gauge", "Net position", "venue", "strategy", "symbol"),
    _spec("position_notional", "gauge", "Net position at the mark", "venue", "strategy", "symbol"),
    _spec("realized_pnl", "gauge", "Realized P&L, gross of fees", "venue", "strategy", "symbol"),
    _spec("unrealized_pnl", "gauge", "Unrealized P&L at the mark", "venue", "strategy", "symbol"),
    _spec("net_pnl", "gauge", "Realized + unrealized - fees", "venue", "strategy", "symbol"),
    _spec("gateway_backlog", "gauge", "Redis writes queued while Redis is away", "venue"),
]

CATALOG: dict[str, MetricSpec] = {s.name: s for s in _SPECS}


def spec(name: str) -> MetricSpec:
    """Look up by full (`rsc_fills`) or short (`fills`) name."""
    return CATALOG[name if name.startswith(PREFIX) else PREFIX + name]


# -- sinks --------------------------------------------------------------------------------------------
class Sink(Protocol):
    def inc(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None: ...
    def set(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None: ...
    def observe(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None: ...


@dataclass
class MemorySink:
    """Keeps what would have been exported: for tests and for processes without Ray."""

    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    observations: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = field(default_factory=dict)

    def inc(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        k = (spec.name, tuple(sorted(tags.items())))
        self.counters[k] = self.counters.get(k, 0.0) + value

    def set(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self.gauges[(spec.name, tuple(sorted(tags.items())))] = value

    def observe(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self.observations.setdefault((spec.name, tuple(sorted(tags.items()))), []).append(value)

    def value(self, name: str, **tags: str) -> float | None:
        """Sum of a counter, or the gauge value, over series matching the given tags."""
        full = spec(name).name
        src = self.counters if spec(name).kind == "counter" else self.gauges
        hits = [v for (n, t), v in src.items() if n == full and tags.items() <= dict(t).items()]
        return sum(hits) if hits else None

    def samples(self, name: str, **tags: str) -> list[float]:
        full = spec(name).name
        return [x for (n, t), xs in self.observations.items() if n == full and tags.items() <= dict(t).items()
                for x in xs]


class RaySink:
    """`ray.util.metrics` objects, created once per process and metric."""

    _metrics: dict[str, Any] = {}

    def _get(self, spec: MetricSpec) -> Any:
        m = self._metrics.get(spec.name)
        if m is None:
            from ray.util import metrics as rm

            if spec.kind == "counter":
                m = rm.Counter(spec.name, description=spec.description, tag_keys=spec.tags)
            elif spec.kind == "gauge":
                m = rm.Gauge(spec.name, description=spec.description, tag_keys=spec.tags)
            else:
                m = rm.Histogram(spec.name, description=spec.description, boundaries=list(spec.boundaries),
                                 tag_keys=spec.tags)
            self._metrics[spec.name] = m
        return m

    def inc(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        if value > 0:
            self._get(spec).inc(value, tags=tags)

    def set(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self._get(spec).set(value, tags=tags)

    def observe(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self._get(spec).observe(value, tags=tags)


def default_sink() -> Sink:
    """Ray's metrics inside a connected Ray process, else an in-memory sink."""
    try:
        import ray

        if ray.is_initialized():
            return RaySink()
    except Exception:  # pragma: no cover - ray missing or broken: metrics must not stop trading
        pass
    return MemorySink()


# -- the batching recorder ------------------------------------------------------------------------------
TagKey = tuple[str, tuple[str, ...]]


class Recorder:
    """Accumulates counters and gauges, flushes them to the sink at most every `flush_interval_s`."""

    def __init__(self, sink: Sink | None = None, flush_interval_s: float = 1.0,
                 clock: Any = time.monotonic):
        self.sink: Sink = sink if sink is not None else default_sink()
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self._next_flush = clock() + flush_interval_s
        self._counts: dict[TagKey, float] = {}
        self._gauges: dict[TagKey, float] = {}
        self.errors = 0

    def inc(self, name: str, value: float = 1.0, *tag_values: str) -> None:
        k = (name, tag_values)
        self._counts[k] = self._counts.get(k, 0.0) + value

    def set(self, name: str, value: float, *tag_values: str) -> None:
        self._gauges[(name, tag_values)] = value

    def observe(self, name: str, value: float, *tag_values: str) -> None:
        s = CATALOG[name]
        try:
            self.sink.observe(s, value, dict(zip(s.tags, tag_values, strict=True)))
        except Exception as exc:
            self._failed(exc)

    def due(self) -> bool:
        return self.clock() >= self._next_flush

    def maybe_flush(self) -> None:
        if self.clock() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        self._next_flush = self.clock() + self.flush_interval_s
        counts, self._counts = self._counts, {}
        gauges, self._gauges = self._gauges, {}
        try:
            for (name, tv), v in counts.items():
                s = CATALOG[name]
                self.sink.inc(s, v, dict(zip(s.tags, tv, strict=True)))
            for (name, tv), v in gauges.items():
                s = CATALOG[name]
                self.sink.set(s, v, dict(zip(s.tags, tv, strict=True)))
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if self.errors <= 3:
            log.warning("metrics: export failed (%s: %s); trading continues", type(exc).__name__, exc)


# -- one facade per actor role: what the actors call ------------------------------------------------------
_FEED_DROP_REASONS = {"malformed": "malformed", "malformed_messages": "malformed", "gaps": "gap",
                      "stale_dropped": "stale", "overflows": "overflow"}


class FeedMetrics:
    """For `actors/feed.py`: call `update(service)` once per loop iteration (it does nothing until due)."""

    def __init__(self, feed_name: str, venue: str, recorder: Recorder | None = None):
        self.feed_name = feed_name
        self.venue = venue
        self.rec = recorder or Recorder()
        self._last: dict[tuple[str, str], int] = {}
        self._last_skipped: dict[str, int] = {}

    def update(self, service: Any, now_ns: int | None = None) -> None:
        """Read the feed service's cumulative counters and latest books; cheap unless a flush is due."""
        if not self.rec.due():
            return
        now_ns = now_ns if now_ns is not None else time.time_ns()
        self.counters(service.stats())
        for book in service.latest.values():
            self.book(book, now_ns)
        self.rec.flush()

    def counters(self, by_symbol: Mapping[str, Mapping[str, int]]) -> None:
        """Turn the depth sync's cumulative counters into counter increments."""
        v = self.venue
        for symbol, c in by_symbol.items():
            for key, value in c.items():
                last = self._last.get((symbol, key), 0)
                delta = value - last
                if delta <= 0:
                    continue
                self._last[(symbol, key)] = value
                if key == "applied":
                    self.rec.inc("rsc_book_updates", delta, v, symbol)
                elif key == "trades":
                    self.rec.inc("rsc_market_trades", delta, v, symbol)
                elif key == "resyncs":
                    self.rec.inc("rsc_feed_resyncs", delta, v, symbol)
                elif key == "snapshots":
                    self.rec.inc("rsc_feed_snapshots", delta, v, symbol)
                elif key in _FEED_DROP_REASONS:
                    self.rec.inc("rsc_feed_dropped", delta, v, symbol, _FEED_DROP_REASONS[key])

    def book(self, b: BookUpdate, now_ns: int) -> None:
        v, s = self.venue, b.symbol
        if b.receive_ts_ns:
            self.rec.set("rsc_book_age_seconds", max(now_ns - b.receive_ts_ns, 0) / 1e9, v, s)
            # Only a wall-clock exchange time gives a lag (the built-in market's clock starts at 0).
            if b.exchange_ts_ns and abs(b.receive_ts_ns - b.exchange_ts_ns) < 3_600_000_000_000:
                self.rec.set("rsc_feed_exchange_lag_seconds", (b.receive_ts_ns - b.exchange_ts_ns) / 1e9, v, s)
        if b.mid is not None:
            self.rec.set("rsc_mid_price", b.mid, v, s)
            self.rec.set("rsc_spread", b.spread or 0.0, v, s)

    def conflation(self, subscriber: str, skipped: int) -> None:
        """A subscriber's delivery carried `skipped` conflated updates."""
        if skipped > 0:
            self.rec.inc("rsc_conflated_skipped", skipped, self.feed_name, subscriber)

    def delivery_error(self, subscriber: str) -> None:
        self.rec.inc("rsc_feed_delivery_errors", 1, self.feed_name, subscriber)


class StrategyMetrics:
    """For `actors/strategy.py`: `on_market` per delivery, `on_decision` per risk answer."""

    def __init__(self, strategy: str, recorder: Recorder | None = None):
        self.strategy = strategy
        self.rec = recorder or Recorder()
        self.last_book_ns: dict[str, int] = {}

    def on_market(self, books: Iterable[BookUpdate], skipped: int, now_ns: int | None = None) -> None:
        now_ns = now_ns if now_ns is not None else time.time_ns()
        st = self.strategy
        for b in books:
            self.rec.inc("rsc_strategy_books", 1, st, b.symbol)
            if b.receive_ts_ns:
                self.last_book_ns[b.symbol] = b.receive_ts_ns
                self.rec.observe("rsc_strategy_delivery_lag_seconds", max(now_ns - b.receive_ts_ns, 0) / 1e9,
                                 st, b.symbol)
        if skipped:
            self.rec.inc("rsc_strategy_skipped", skipped, st)
        self.rec.maybe_flush()

    def on_decision(self, intent: OrderIntent, decision: RiskDecision, asked_ns: int,
                    now_ns: int | None = None) -> None:
        """One intent answered: counts by reason, the round trip, and tick-to-order for approved new orders."""
        now_ns = now_ns if now_ns is not None else time.time_ns()
        st = self.strategy
        self.rec.inc("rsc_strategy_intents", 1, st, intent.symbol, intent.action.value)
        self.rec.inc("rsc_strategy_decisions", 1, st, decision.reason.value)
        self.rec.observe("rsc_risk_roundtrip_seconds", max(now_ns - asked_ns, 0) / 1e9, st)
        tick = self.last_book_ns.get(intent.symbol)
        if decision.approved and intent.action is IntentAction.NEW and tick:
            self.rec.observe("rsc_tick_to_order_seconds", max(now_ns - tick, 0) / 1e9, st, intent.symbol)
        self.rec.maybe_flush()


class RiskMetrics:
    """For `actors/risk.py`: `on_decision` per decision; `state(...)` from the kill-switch watch loop."""

    def __init__(self, recorder: Recorder | None = None):
        self.rec = recorder or Recorder()
        self._scopes: set[str] = set()

    def on_decision(self, decision: RiskDecision, seconds: float) -> None:
        d = decision
        self.rec.inc("rsc_risk_decisions", 1, d.strategy, d.venue, d.symbol, d.action.value, d.reason.value)
        self.rec.observe("rsc_risk_check_seconds", seconds, d.action.value)
        self.rec.maybe_flush()

    def state(self, kill_switches: Iterable[str], reservations: int, marks: Mapping[str, float],
              pending_writes: int = 0, dropped_writes: int = 0) -> None:
        current = set(kill_switches)
        for scope in self._scopes | current | {"global"}:
            self.rec.set("rsc_kill_switch", 1.0 if scope in current else 0.0, scope)
        self._scopes |= current
        self.rec.set("rsc_risk_reservations", float(reservations))
        self.rec.set("rsc_risk_pending_writes", float(pending_writes))
        self.rec.set("rsc_risk_dropped_writes", float(dropped_writes))
        for sym, px in marks.items():
            self.rec.set("rsc_mark_price", px, sym)
        self.rec.maybe_flush()


class GatewayMetrics:
    """For `actors/gateway.py`: `on_order` when an order is accepted, `on_reports` for applied reports,
    `state(service)` from the flush loop (positions, P&L, open orders, backlog)."""

    def __init__(self, venue: str, recorder: Recorder | None = None):
        self.venue = venue
        self.rec = recorder or Recorder()
        self.marks: dict[str, float] = {}

    def on_books(self, books: Iterable[BookUpdate]) -> None:
        """Remember mids to value positions (one dict write per book)."""
        for b in books:
            mid = b.mid
            if mid is not None:
                self.marks[b.symbol] = mid

    def on_order(self, order: Order) -> None:
        self.rec.inc("rsc_orders", 1, self.venue, order.strategy, order.symbol, order.status.value)

    def on_reports(self, reports: Iterable[ExecutionReport]) -> None:
        v = self.venue
        for r in reports:
            self.rec.inc("rsc_orders", 1, v, r.strategy, r.symbol, r.status.value)
            f = r.fill
            if f is not None:
                self.rec.inc("rsc_fills", 1, v, f.strategy, f.symbol, f.liquidity.value)
                self.rec.inc("rsc_fill_notional", f.price * f.qty, v, f.strategy, f.symbol)
                if f.fee > 0:
                    self.rec.inc("rsc_fees", f.fee, v, f.strategy, f.symbol)
        self.rec.maybe_flush()

    def state(self, positions: Iterable[Any], open_orders: int, backlog: int,
              marks: Mapping[str, float] | None = None) -> None:
        """Positions are `cluster.messages.Position`s, valued at `marks` (default: the mids seen by `on_books`);
        a symbol without a mark is valued at its average price."""
        v = self.venue
        marks = self.marks if marks is None else marks
        for p in positions:
            mark = marks.get(p.symbol)
            unreal = p.unrealized(mark)
            self.rec.set("rsc_position_qty", p.qty, v, p.strategy, p.symbol)
            self.rec.set("rsc_position_notional", p.qty * (mark if mark is not None else p.avg_price),
                         v, p.strategy, p.symbol)
            self.rec.set("rsc_realized_pnl", p.realized_pnl, v, p.strategy, p.symbol)
            self.rec.set("rsc_unrealized_pnl", unreal, v, p.strategy, p.symbol)
            self.rec.set("rsc_net_pnl", p.realized_pnl + unreal - p.fees, v, p.strategy, p.symbol)
        self.rec.set("rsc_open_orders", float(open_orders), v)
        self.rec.set("rsc_gateway_backlog", float(backlog), v)
        self.rec.flush()
