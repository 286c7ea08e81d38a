"""The actor-facing metric recorders, without Ray (an in-memory sink and a fake clock)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cluster.messages import (
    BookUpdate,
    ExecutionReport,
    Fill,
    IntentAction,
    Liquidity,
    OrderIntent,
    OrderStatus,
    Position,
    RejectReason,
    RiskDecision,
    Side,
)
from dashboards.metrics import (
    CATALOG,
    FeedMetrics,
    GatewayMetrics,
    MemorySink,
    Recorder,
    RiskMetrics,
    StrategyMetrics,
    spec,
)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def rec() -> tuple[Recorder, MemorySink, Clock]:
    sink, clock = MemorySink(), Clock()
    return Recorder(sink, flush_interval_s=1.0, clock=clock), sink, clock


def book(symbol: str = "BTCUSDT", receive: int = 0, exchange: int = 0) -> BookUpdate:
    return BookUpdate(venue="paper", symbol=symbol, seq=1, bids=[(99.0, 1.0)], asks=[(101.0, 1.0)],
                      receive_ts_ns=receive, exchange_ts_ns=exchange)


def test_catalog_names_are_prefixed_and_prometheus_names_follow_ray() -> None:
    assert all(n.startswith("rsc_") for n in CATALOG)
    assert spec("fills").prom_name == "ray_rsc_fills_total"
    assert spec("position_qty").prom_name == "ray_rsc_position_qty"
    assert spec("tick_to_order_seconds").boundaries


def test_counters_are_batched_until_the_flush_interval(rec) -> None:
    r, sink, clock = rec
    feed = FeedMetrics("feed:paper:BTCUSDT", "paper", r)
    service = SimpleNamespace(stats=lambda: {"BTCUSDT": {"applied": 5, "resyncs": 1, "malformed": 2, "gaps": 1}},
                              latest={"BTCUSDT": book(receive=10**18, exchange=10**18 - 5_000_000)})
    feed.update(service, now_ns=10**18 + 1_000_000)
    assert sink.counters == {}  # not due yet
    clock.t = 1.0
    feed.update(service, now_ns=10**18 + 1_000_000)
    assert sink.value("book_updates", symbol="BTCUSDT") == 5
    assert sink.value("feed_resyncs") == 1
    assert sink.value("feed_dropped", reason="malformed") == 2 and sink.value("feed_dropped", reason="gap") == 1
    assert sink.value("feed_exchange_lag_seconds") == pytest.approx(0.005)
    assert sink.value("book_age_seconds") == pytest.approx(0.001)
    assert sink.value("mid_price") == 100.0 and sink.value("spread") == 2.0
    # cumulative counters become increments: a second flush adds only the change
    service.stats = lambda: {"BTCUSDT": {"applied": 8, "resyncs": 1}}
    clock.t = 2.0
    feed.update(service)
    assert sink.value("book_updates") == 8 and sink.value("feed_resyncs") == 1


def test_simulated_exchange_clock_gives_no_lag(rec) -> None:
    r, sink, _ = rec
    feed = FeedMetrics("f", "paper", r)
    feed.book(book(receive=10**18, exchange=40_000_000), now_ns=10**18)
    r.flush()
    assert sink.value("feed_exchange_lag_seconds") is None


def test_strategy_decisions_roundtrip_and_tick_to_order(rec) -> None:
    r, sink, _ = rec
    m = StrategyMetrics("mm", r)
    m.on_market([book(receive=1_000_000_000)], skipped=3, now_ns=1_002_000_000)
    intent = OrderIntent(strategy="mm", venue="paper", symbol="BTCUSDT", qty=1.0, price=100.0)
    ok = RiskDecision(approved=True, reason=RejectReason.NONE, strategy="mm", venue="paper", symbol="BTCUSDT")
    no = RiskDecision(approved=False, reason=RejectReason.POSITION_LIMIT, strategy="mm", venue="paper",
                      symbol="BTCUSDT")
    m.on_decision(intent, ok, asked_ns=1_003_000_000, now_ns=1_004_000_000)
    m.on_decision(intent, no, asked_ns=1_004_000_000, now_ns=1_006_000_000)
    r.flush()
    assert sink.value("strategy_skipped", strategy="mm") == 3
    assert sink.value("strategy_decisions", reason="position_limit") == 1
    assert sink.value("strategy_decisions", reason="none") == 1
    assert sink.value("strategy_intents", action="new") == 2
    assert sink.samples("strategy_delivery_lag_seconds") == pytest.approx([0.002])
    assert sink.samples("risk_roundtrip_seconds") == pytest.approx([0.001, 0.002])
    assert sink.samples("tick_to_order_seconds", symbol="BTCUSDT") == pytest.approx([0.004])  # approved only


def test_risk_decisions_and_kill_switch_gauges(rec) -> None:
    r, sink, _ = rec
    m = RiskMetrics(r)
    d = RiskDecision(approved=False, reason=RejectReason.KILL_SWITCH, strategy="mm", venue="paper", symbol="ETHUSDT",
                     action=IntentAction.NEW)
    m.on_decision(d, 0.0002)
    m.state({"global"}, reservations=4, marks={"ETHUSDT": 3000.0})
    m.state(set(), reservations=0, marks={}, pending_writes=12, dropped_writes=3)
    r.flush()
    assert sink.value("risk_pending_writes") == 12.0 and sink.value("risk_dropped_writes") == 3.0
    assert sink.value("risk_decisions", reason="kill_switch", strategy="mm") == 1
    assert sink.value("kill_switch", scope="global") == 0.0  # switched off again
    assert sink.value("risk_reservations") == 0.0 and sink.value("mark_price", symbol="ETHUSDT") == 3000.0
    assert sink.samples("risk_check_seconds") == [0.0002]


def test_gateway_orders_fills_fees_and_positions(rec) -> None:
    r, sink, _ = rec
    m = GatewayMetrics("paper", r)
    f = Fill(client_order_id="c1", trade_id="t1", strategy="mm", venue="paper", symbol="BTCUSDT", side=Side.BUY,
             price=100.0, qty=2.0, fee=0.1, liquidity=Liquidity.MAKER)
    rep = ExecutionReport(client_order_id="c1", strategy="mm", venue="paper", symbol="BTCUSDT",
                          status=OrderStatus.FILLED, side=Side.BUY, order_qty=2.0, filled_qty=2.0, fill=f)
    m.on_reports([rep])
    m.on_books([book()])
    m.state([Position(strategy="mm", venue="paper", symbol="BTCUSDT", qty=2.0, avg_price=99.0, realized_pnl=1.0,
                      fees=0.1)], open_orders=3, backlog=0)
    assert sink.value("orders", state="filled") == 1
    assert sink.value("fills", liquidity="maker") == 1
    assert sink.value("fill_notional") == 200.0 and sink.value("fees") == pytest.approx(0.1)
    assert sink.value("unrealized_pnl") == 2.0  # (100 - 99) * 2 at the mid
    assert sink.value("net_pnl") == pytest.approx(1.0 + 2.0 - 0.1)
    assert sink.value("open_orders", venue="paper") == 3.0


def test_a_broken_sink_never_raises(rec) -> None:
    class Broken(MemorySink):
        def inc(self, *a, **k):
            raise RuntimeError("agent down")

        def observe(self, *a, **k):
            raise RuntimeError("agent down")

    r = Recorder(Broken(), flush_interval_s=0.0)
    m = RiskMetrics(r)
    d = RiskDecision(approved=True, reason=RejectReason.NONE, strategy="s", venue="v", symbol="X")
    m.on_decision(d, 0.001)
    r.flush()
    assert r.errors >= 2
