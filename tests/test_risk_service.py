"""The risk actor's logic (RiskService) against a real Redis: fail closed, audit, restore, reconcile, limits CLI."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from actors.risk import RiskService
from cluster.cli import main as cli_main
from cluster.config import RiskLimits, RiskSection, SymbolSection, parse_config
from cluster.messages import (
    ExecutionReport,
    Fill,
    IntentAction,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    Position,
    RejectReason,
    Side,
)
from cluster.state_store import StateStore
from risk.trading_state import TradingState, TradingStatus, encode_status
from tests.cli_output import json_output

SYMS = [SymbolSection(symbol="BTCUSDT", venue="paper", price=100.0, lot_size=0.001)]


def service(redis_url: str, section: RiskSection | None = None, reconcile: bool = False) -> RiskService:
    section = section or RiskSection(defaults=RiskLimits(max_orders_per_min=3), max_drawdown_pct=None,
                                     stop_loss_atr=None)
    svc = RiskService(section, SYMS, ["paper"], StateStore.from_url(redis_url, "t"), reconcile=reconcile)
    svc.engine.set_mark("BTCUSDT", 100.0, time.time_ns())
    return svc


def intent(qty=1.0, price=100.0, side=Side.BUY, strategy="s1") -> OrderIntent:
    return OrderIntent(strategy=strategy, venue="paper", symbol="BTCUSDT", side=side, qty=qty, price=price)


def submit(svc: RiskService, i: OrderIntent):
    d, order = svc.decide(i)
    svc.audit(d)
    return d, order


def test_redis_unreachable_refuses_and_sends_nothing(redis_url):
    svc = service(redis_url)
    svc.store = StateStore.from_url("redis://127.0.0.1:1/0", "t", timeout_s=0.2)
    d, order = svc.decide(intent())
    assert not d.approved and d.reason is RejectReason.STATE_UNAVAILABLE and order is None
    assert "redis unavailable" in d.detail and not svc.engine.reservations


def test_restarting_risk_refuses_until_reconciled_with_the_gateway(redis_url):
    store = StateStore.from_url(redis_url, "t")
    kept = Order(client_order_id="g1", strategy="s1", venue="paper", symbol="BTCUSDT", side=Side.BUY, qty=2,
                 order_type=OrderType.LIMIT, price=99.0, status=OrderStatus.NEW)
    lost = Order(client_order_id="g2", strategy="s1", venue="paper", symbol="BTCUSDT", side=Side.BUY, qty=1,
                 order_type=OrderType.LIMIT, price=98.0, status=OrderStatus.NEW)
    store.record_order(kept)
    store.record_order(lost)
    svc = service(redis_url, reconcile=True)
    assert set(svc.engine.reservations) == {"g1", "g2"}  # restored from Redis
    d, order = svc.decide(intent())
    assert d.reason is RejectReason.RISK_UNAVAILABLE and "reconciled" in d.detail and order is None
    only_at_gateway = Order(client_order_id="g3", strategy="s2", venue="paper", symbol="BTCUSDT", side=Side.SELL,
                            qty=1, order_type=OrderType.LIMIT, price=101.0, status=OrderStatus.NEW)
    summary = svc.reconcile("paper", [kept, only_at_gateway])
    assert summary == {"released": 1, "added": 1, "open": 2}
    assert set(svc.engine.reservations) == {"g1", "g3"}
    assert svc.engine.open_exposure("BTCUSDT") == (2.0, 1.0)
    assert svc.decide(intent(price=100.5))[0].approved


def test_every_decision_is_audited_with_reason_and_numbers_and_counted(redis_url):
    svc = service(redis_url, RiskSection(defaults=RiskLimits(max_order_qty=2), max_drawdown_pct=None))
    ok, order = submit(svc, intent(qty=1))
    assert ok.approved and ok.client_order_id == order.client_order_id
    no, _ = submit(svc, intent(qty=5, price=99))
    assert no.reason is RejectReason.MAX_ORDER_QTY
    entries = svc.store.audit_entries()
    assert [e["reason"] for e in entries] == ["max_order_qty", "none"]
    data = json.loads(entries[0]["data"])
    assert data["values"]["qty"] == 5 and data["values"]["max_order_qty"] == 2
    stats = svc.store.stats()
    assert stats["orders_submitted"] == 2 and stats["rejected:max_order_qty"] == 1


def test_kill_switch_and_trading_state_in_redis_apply_to_the_next_order(redis_url):
    svc = service(redis_url)
    svc.store.set_kill_switch("strategy:s1", True)
    assert svc.decide(intent())[0].reason is RejectReason.KILL_SWITCH
    svc.store.set_kill_switch("strategy:s1", False)
    svc.store.set_trading_state("global", encode_status(TradingStatus(state=TradingState.HALTED, reason="ops")))
    d, _ = svc.decide(intent())
    assert d.reason is RejectReason.TRADING_HALTED and "ops" in d.detail
    svc.store.set_trading_state("global", b"garbage")  # unreadable: fail closed
    assert svc.decide(intent())[0].reason is RejectReason.TRADING_HALTED
    svc.store.set_trading_state("global", None)
    assert svc.decide(intent())[0].approved


def test_restart_restores_rate_usage_positions_peak_equity_and_states(redis_url):
    section = RiskSection(defaults=RiskLimits(max_orders_per_min=3, max_position_qty=5), capital=1000,
                          max_drawdown_pct=5, stop_loss_atr=None)
    svc = service(redis_url, section)
    for k in range(3):
        assert submit(svc, intent(qty=1, price=100 - k))[0].approved
    assert svc.decide(intent(price=95))[0].reason is RejectReason.ORDER_RATE
    svc.store.record_fill(
        Order(client_order_id="x", strategy="s1", venue="paper", symbol="BTCUSDT", side=Side.BUY, qty=4,
              order_type=OrderType.LIMIT, price=100.0, status=OrderStatus.FILLED, filled_qty=4),
        Fill(client_order_id="x", trade_id="t1", strategy="s1", venue="paper", symbol="BTCUSDT", side=Side.BUY,
             price=100.0, qty=4),
        Position(strategy="s1", venue="paper", symbol="BTCUSDT", qty=4, avg_price=100.0), 4.0)
    svc.store.set_risk_values({"peak_equity": "1200.0"})
    svc.store.set_trading_state("strategy:s2", encode_status(TradingStatus(state=TradingState.REDUCING, reason="r")))

    again = service(redis_url, section)  # a restarted risk actor
    d = again.decide(intent(price=95))[0]
    assert d.reason is RejectReason.ORDER_RATE and d.values["orders_last_min"] == 3
    assert again.engine.net["BTCUSDT"] == 4.0 and "paper:t1" in again.engine.seen_fills
    assert again.engine.losses.peak_equity == 1200.0
    assert again.engine.trading_states["strategy:s2"].state is TradingState.REDUCING
    events = again.evaluate(force=True)  # equity 1000 is 16.7% below the restored peak
    assert events is not None and events.trips[0].source == "drawdown"
    assert json.loads(again.store.trading_states()["global"])["state"] == "reducing"
    assert any(e.get("kind") == "trading_state" for e in again.store.audit_entries())


def test_fill_reports_release_reservations(redis_url):
    svc = service(redis_url, RiskSection(defaults=RiskLimits(max_position_qty=2), max_drawdown_pct=None))
    d, order = svc.decide(intent(qty=2))
    assert d.approved
    assert svc.decide(intent(qty=1, strategy="s2", price=99))[0].reason is RejectReason.POSITION_LIMIT
    svc.engine.on_report(ExecutionReport(client_order_id=order.client_order_id, strategy="s1", venue="paper",
                                         symbol="BTCUSDT", status=OrderStatus.CANCELED, side=Side.BUY, order_qty=2))
    assert svc.decide(intent(qty=1, strategy="s2", price=99))[0].approved


def _cfg_file(tmp_path, redis_url) -> str:
    data = {"cluster": {"name": "t"}, "redis": {"url": redis_url},
            "symbols": [{"symbol": "BTCUSDT", "venue": "paper", "price": 100.0}],
            "strategies": [{"name": "mm", "type": "market_maker", "symbols": ["BTCUSDT"]}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    parse_config(data)
    return str(path)


def test_limits_cli_validates_audits_and_the_actor_logic_applies_it(redis_url, tmp_path, capsys):
    cfg = _cfg_file(tmp_path, redis_url)
    assert cli_main(["limits", "set", "symbols.BTCUSDT.max_order_qty", "0.5", "--config", cfg]) == 0
    assert cli_main(["limits", "set", "symbols.BTCUSDT.max_order_qty", "-1", "--config", cfg]) == 2
    assert cli_main(["limits", "set", "symbols.NOPE.max_order_qty", "1", "--config", cfg]) == 2
    assert cli_main(["limits", "set", "defaults.bogus", "1", "--config", cfg]) == 2
    err = capsys.readouterr().err
    assert "risk.symbols.BTCUSDT.max_order_qty" in err and "must be > 0" in err
    store = StateStore.from_url(redis_url, "t")
    assert store.limit_overrides() == {"symbols.BTCUSDT.max_order_qty": "0.5"}
    audit = [e for e in store.audit_entries() if e.get("kind") == "limits"]
    assert len(audit) == 1 and json.loads(audit[0]["data"])["value"] == 0.5

    svc = RiskService(RiskSection(max_drawdown_pct=None), SYMS, ["paper"], store)
    svc.engine.set_mark("BTCUSDT", 100.0, time.time_ns())
    d = svc.decide(intent(qty=1))[0]
    assert d.reason is RejectReason.MAX_ORDER_QTY and "symbol:BTCUSDT" in d.detail
    assert cli_main(["limits", "unset", "symbols.BTCUSDT.max_order_qty", "--config", cfg]) == 0
    assert svc.apply_overrides(store.limit_overrides())
    assert svc.decide(intent(qty=1, price=100.1))[0].approved

    assert cli_main(["limits", "state", "strategy:mm", "reducing", "--reason", "manual", "--config", cfg]) == 0
    assert cli_main(["limits", "state", "strategy:nope", "halted", "--config", cfg]) == 2
    capsys.readouterr()
    assert cli_main(["status", "--json", "--config", cfg]) == 0
    status = json_output(capsys.readouterr().out)
    assert status["risk"]["trading_states"]["strategy:mm"]["state"] == "reducing"
    assert status["decisions"]["orders_submitted"] == 0


def test_cancel_intent_is_audited_and_counted_for_cancel_rates(redis_url):
    svc = service(redis_url, RiskSection(defaults=RiskLimits(max_cancels_per_min=1), max_drawdown_pct=None))
    d, order = submit(svc, intent())
    cancel = OrderIntent(strategy="s1", venue="paper", symbol="BTCUSDT", action=IntentAction.CANCEL,
                         target_client_order_id=order.client_order_id)
    c, none = submit(svc, cancel)
    assert c.approved and c.client_order_id == order.client_order_id and none is None
    assert submit(svc, cancel)[0].reason is RejectReason.CANCEL_RATE


@pytest.mark.parametrize("path", ["configs/tight_risk.yaml", "configs/paper.yaml"])
def test_shipped_configs_validate(path):
    from cluster.config import load_config

    cfg = load_config(path)
    assert cfg.risk.defaults.max_orders_per_min is not None
