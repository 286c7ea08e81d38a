"""The risk actor's logic in write-behind mode (RiskService(write_behind=True)) against a real Redis:
decisions touch no Redis, writes land in order, Redis trouble fails closed, restarts rebuild what was lost."""

from __future__ import annotations

import json
import logging
import time

import actors.risk as risk_mod
from actors.risk import RiskService
from cluster.config import RiskLimits, RiskSection, SymbolSection
from cluster.messages import OrderIntent, OrderStatus, OrderType, RejectReason, Side
from cluster.state_store import StateStore
from risk.trading_state import TradingState

SYMS = [SymbolSection(symbol="BTCUSDT", venue="paper", price=100.0, lot_size=0.001)]
DOWN = "redis://127.0.0.1:1/0"


def service(url: str, section: RiskSection | None = None, controls_max_age_s: float = 60.0) -> RiskService:
    """Controls may be a minute old here (no watcher runs in these tests): only what a test changes matters."""
    section = section or RiskSection(defaults=RiskLimits(max_orders_per_min=100), max_drawdown_pct=None,
                                     stop_loss_atr=None)
    svc = RiskService(section, SYMS, ["paper"], StateStore.from_url(url, "t", timeout_s=0.2), write_behind=True,
                      controls_max_age_s=controls_max_age_s)
    svc.engine.set_mark("BTCUSDT", 100.0, time.time_ns())
    return svc


def intent(price: float = 100.0, qty: float = 1.0, strategy: str = "s1") -> OrderIntent:
    return OrderIntent(strategy=strategy, venue="paper", symbol="BTCUSDT", side=Side.BUY, qty=qty, price=price)


def test_decisions_need_no_redis_and_are_written_behind_in_order(redis_url):
    svc = service(redis_url)
    up = svc.store
    svc.next_coid()  # a block of ids in hand
    svc.store = StateStore.from_url(DOWN, "t", timeout_s=0.2)  # Redis goes away after the last good read
    decided = []
    for k in range(3):
        d, order = svc.decide(intent(price=100 - k))
        assert d.approved and order is not None  # from memory: no round trip on the decision path
        svc.audit(d)
        decided.append(d.client_order_id)
    assert len(svc.pending) == 3 and not up.audit_entries()
    assert not svc.flush()  # the write fails: kept, in order, and decisions now fail closed
    assert len(svc.pending) == 3
    d, order = svc.decide(intent(price=96))
    assert d.reason is RejectReason.STATE_UNAVAILABLE and "redis unavailable" in d.detail and order is None
    svc.audit(d)
    svc.store = up  # back
    assert svc.flush() and not svc.pending
    entries = up.audit_entries()[::-1]
    assert [json.loads(e["data"]).get("client_order_id") for e in entries] == [*decided, None]
    assert entries[-1]["reason"] == "state_unavailable"
    assert up.stats()["orders_submitted"] == 4
    assert svc.decide(intent(price=95))[0].approved  # the write worked again: decisions resume


def test_stale_controls_fail_closed(redis_url):
    svc = service(redis_url, controls_max_age_s=1.0)
    assert svc.decide(intent())[0].approved
    svc.controls_at -= 5.0  # the watcher has not read the controls for 5 s (the limit here: 1 s)
    d, order = svc.decide(intent(price=99))
    assert d.reason is RejectReason.STATE_UNAVAILABLE and "last read" in d.detail and order is None
    svc.refresh_controls()
    assert svc.decide(intent(price=99))[0].approved


def test_a_breaker_trip_not_yet_written_survives_a_read_of_the_controls(redis_url):
    section = RiskSection(defaults=RiskLimits(), capital=1000, max_drawdown_pct=5, stop_loss_atr=None)
    svc = service(redis_url, section)
    svc.store.set_risk_values({"peak_equity": "2000.0"})
    svc.engine.losses.peak_equity = 2000.0
    events = svc.evaluate(force=True)
    assert events is not None and events.trips[0].scope == "global"
    assert svc.store.trading_states() == {}  # queued, not written yet
    svc.refresh_controls()  # Redis does not know the trip yet: it must not be lost (nor re-armed)
    assert svc.engine.trading_states["global"].state is TradingState.REDUCING
    assert svc.flush()
    assert json.loads(svc.store.trading_states()["global"])["source"] == "drawdown"
    svc.refresh_controls()
    assert svc.engine.trading_states["global"].state is TradingState.REDUCING and not svc.unsaved_states


def test_restart_rebuilds_rate_usage_from_the_gateway_journal_when_the_audit_entry_was_lost(redis_url):
    section = RiskSection(defaults=RiskLimits(max_orders_per_min=2), max_drawdown_pct=None, stop_loss_atr=None)
    svc = service(redis_url, section)
    d, order = svc.decide(intent())
    assert d.approved
    svc.audit(d)
    assert svc.flush()
    d2, order2 = svc.decide(intent(price=99))
    assert d2.approved  # ... its audit entry is still queued when risk dies; the gateway journaled the order:
    svc.store.record_order(order2, "submit")
    again = service(redis_url, section)
    refused = again.decide(intent(price=98))[0]
    assert refused.reason is RejectReason.ORDER_RATE and refused.values["orders_last_min"] == 2
    assert again.decide(intent(price=98, strategy="s2"))[0].approved


def test_client_order_ids_stay_unique_and_increasing_across_blocks(redis_url):
    svc = service(redis_url)
    ids = [svc.next_coid() for _ in range(600)]
    nums = [int(c.split("-")[1], 16) for c in ids]
    assert nums == sorted(nums) and len(set(ids)) == 600
    again = service(redis_url)  # a restart never reuses one
    assert int(again.next_coid().split("-")[1], 16) > nums[-1]


def test_control_changes_are_announced_on_the_risk_controls_channel(redis_url):
    store = StateStore.from_url(redis_url, "t")
    ps = store.controls_pubsub()
    try:
        store.set_kill_switch("venue:paper", True)
        store.set_trading_state("strategy:s1", b'{"state":"halted"}')
        store.set_limit_override("defaults.max_order_qty", "2")
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            m = ps.get_message(timeout=0.5)
            if m is not None:
                got.append(m["data"])
        assert got == [b"kill", b"state", b"limits"]
        assert store.kill_switches() == {"venue:paper"}
    finally:
        ps.close()


def test_market_and_notional_decisions_record_what_a_restart_needs(redis_url):
    section = RiskSection(defaults=RiskLimits(max_slippage_bps=50, duplicate_window_s=30), max_drawdown_pct=None,
                          stop_loss_atr=None)
    svc = service(redis_url, section)
    n = OrderIntent(strategy="s1", venue="paper", symbol="BTCUSDT", side=Side.BUY, order_type=OrderType.MARKET,
                    notional=250.0)
    d, order = svc.decide(n)
    assert d.approved and order.notional == 250.0 and order.qty == 2.5 and order.status is OrderStatus.PENDING_NEW
    svc.audit(d)
    assert svc.flush()
    again = service(redis_url, section)  # the duplicate filter knows the notional order after a restart
    assert again.decide(n)[0].reason is RejectReason.DUPLICATE_ORDER


def test_a_long_outage_bounds_the_queue_dropping_the_oldest_audit_never_a_trading_state(redis_url, caplog,
                                                                                         monkeypatch):
    monkeypatch.setattr(risk_mod, "DROP_LOG_EVERY", 20, raising=False)
    section = RiskSection(defaults=RiskLimits(max_orders_per_min=1000), capital=1000, max_drawdown_pct=5,
                          stop_loss_atr=None)
    svc = service(redis_url, section)
    svc.max_pending = 50
    up = svc.store
    svc.next_coid()
    svc.store = StateStore.from_url(DOWN, "t", timeout_s=0.2)  # a long outage starts
    svc.engine.losses.peak_equity = 2000.0
    events = svc.evaluate(force=True)  # a breaker trips: its state entry is the oldest in the queue
    assert events is not None and [t.scope for t in events.trips] == ["global"]
    assert [e[0] for e in svc.pending] == ["state", "event"]
    decided = []
    with caplog.at_level(logging.ERROR, logger="actors.risk"):
        for k in range(200):
            d, _ = svc.decide(intent(price=100.0 - k * 0.01))
            svc.audit(d)  # decisions go on (refused: fail closed) and never wait on Redis
            decided.append(d)
            if k % 10 == 9:
                assert not svc.flush()  # a failed batch goes back in front, within the bound too
            assert len(svc.pending) <= 50
    states = [e for e in svc.pending if isinstance(e, tuple) and e[0] == "state"]
    assert [e[1] for e in states] == ["global"]  # what a restart rebuilds the breaker from is never dropped
    kept = [e for e in svc.pending if not isinstance(e, tuple)]
    assert kept == decided[-len(kept):] and len(kept) >= 40  # the newest decisions, in order
    assert svc.dropped_writes == 202 - len(svc.pending) and svc.dropped_writes > 100
    assert svc.snapshot()["dropped_writes"] == svc.dropped_writes
    full = [r for r in caplog.records if "write-behind queue full" in r.getMessage()]
    assert len(full) == 1 + svc.dropped_writes // 20  # once at the first drop, then once per 20 drops

    svc.store = up  # Redis is back: the trip and the newest audit reach it
    assert svc.flush() and not svc.pending
    assert json.loads(up.trading_states()["global"])["source"] == "drawdown"
    assert len(up.audit_entries(count=500)) == len(kept)
    assert up.stats()["orders_submitted"] == len(kept)
