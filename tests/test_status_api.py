"""The status API against a real Redis holding a small trading history."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cluster.messages import (
    Fill,
    Order,
    OrderStatus,
    OrderType,
    RejectReason,
    RiskDecision,
    Side,
)
from cluster.portfolio import Portfolio
from cluster.state_store import StateStore
from dashboards.api import OPENAPI, create_app
from dashboards.api_config import ApiSection
from dashboards.status_reader import StatusReader

S = 1_000_000_000
TOKEN = "s3cret-token"


def seed(store: StateStore) -> None:
    pf = Portfolio()
    fills = [("A", "X", Side.BUY, 100.0, 1.0, 0.1), ("A", "X", Side.SELL, 102.0, 1.0, 0.1),
             ("B", "Y", Side.SELL, 50.0, 2.0, 0.05)]
    for i, (st, sym, side, px, qty, fee) in enumerate(fills):
        order = Order(client_order_id=f"c{i}", strategy=st, venue="paper", symbol=sym, side=side, qty=qty,
                      order_type=OrderType.LIMIT, price=px, status=OrderStatus.FILLED, filled_qty=qty)
        f = Fill(client_order_id=f"c{i}", trade_id=f"t{i}", strategy=st, venue="paper", symbol=sym, side=side,
                 price=px, qty=qty, fee=fee, ts_ns=time.time_ns() - (10 - i) * S)
        pos = pf.apply_fill(f)
        assert store.record_fill(order, f, pos, pf.max_abs_net(sym))
    store.record_order(Order(client_order_id="c9", strategy="A", venue="paper", symbol="X", side=Side.BUY, qty=1.0,
                             order_type=OrderType.LIMIT, price=90.0, status=OrderStatus.NEW))
    store.set_marks({"X": 101.0, "Y": 49.0})
    store.audit_pipeline([RiskDecision(approved=False, reason=RejectReason.POSITION_LIMIT, strategy="A",
                                       venue="paper", symbol="X")])
    store.register_actor("risk", json.dumps({"role": "risk", "node_id": "n1"}).encode())
    store.set_kill_switch("strategy:B", True)


def run_client(store: StateStore, token: str, requests: list[tuple[str, dict[str, str]]]) -> list[tuple[int, Any]]:
    async def go() -> list[tuple[int, Any]]:
        client = TestClient(TestServer(create_app(StatusReader(store, ttl_s=0.0), token)))
        await client.start_server()
        out = []
        try:
            for path, headers in requests:
                resp = await client.get(path, headers=headers)
                body = await resp.text()
                ctype = resp.headers.get("Content-Type", "")
                out.append((resp.status, json.loads(body) if ctype.startswith("application/json") else body))
        finally:
            await client.close()
        return out

    return asyncio.run(go())


@pytest.fixture()
def store(redis_url: str) -> StateStore:
    s = StateStore.from_url(redis_url, "apitest")
    seed(s)
    return s


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_endpoints_return_the_cluster_state(store: StateStore) -> None:
    (h, health), (s, status), (a, account), (p, positions), (t, trades), (m, metrics), (o, orders) = run_client(
        store, TOKEN, [("/health", {}), ("/status", AUTH), ("/account", AUTH), ("/positions?strategy=A", AUTH),
                       ("/trades?limit=2", AUTH), ("/metrics?bar=1s", AUTH), ("/orders", AUTH)])
    assert (h, s, a, p, t, m, o) == (200,) * 7
    assert health["redis"] is True and health["cluster"] == "apitest"
    assert status["fills"] == 3 and status["orders_rejected"] == {"position_limit": 1}
    assert status["kill_switches"] == ["strategy:B"] and status["open_orders_by_state"] == {"new": 1}
    assert "risk" in status["actors"]
    # A: +2 realized, fees 0.2, flat; B: short 2 @50 marked 49 -> +2 unrealized, fees 0.05
    assert account["realized_pnl"] == pytest.approx(2.0) and account["fees"] == pytest.approx(0.25)
    assert account["unrealized_pnl"] == pytest.approx(2.0) and account["net_pnl"] == pytest.approx(3.75)
    assert [(x["strategy"], x["symbol"]) for x in positions["positions"]] == [("A", "X")]
    assert [x["trade_id"] for x in trades["trades"]] == ["t2", "t1"]  # newest first
    assert metrics["total"]["net_pnl"] == pytest.approx(3.75) and metrics["total"]["bar_s"] == 1.0
    assert set(metrics["by_strategy"]) == {"A", "B"} and metrics["by_strategy"]["A"]["win_rate"] == 1.0
    assert [x["client_order_id"] for x in orders["orders"]] == ["c9"]


def test_prometheus_text_has_performance_gauges(store: StateStore) -> None:
    [(code, text)] = run_client(store, "", [("/metrics/prometheus", {})])
    assert code == 200
    assert 'rsc_perf_net_pnl{group="total",name="all"} 3.75' in text
    assert 'rsc_perf_fills{group="strategy",name="B"} 1.0' in text
    assert "# TYPE rsc_perf_sharpe gauge" in text and "rsc_api_up 1" in text
    assert 'rsc_api_open_orders{state="new"} 1' in text


def test_token_is_required_when_configured(store: StateStore) -> None:
    res = run_client(store, TOKEN, [("/status", {}), ("/account", {"Authorization": "Bearer nope"}),
                                    ("/metrics/prometheus", {"Authorization": TOKEN}), ("/health", {}),
                                    ("/openapi.json", {})])
    assert [c for c, _ in res] == [401, 401, 401, 200, 200]
    assert res[0][1]["error"] == "missing or wrong bearer token"


def test_bad_requests_are_4xx_with_a_json_error(store: StateStore) -> None:
    res = run_client(store, "", [("/trades?limit=abc", {}), ("/trades?limit=0", {}), ("/trades?limit=99999", {}),
                                 ("/metrics?bar=-5", {}), ("/metrics?bar=x", {}), ("/positions?colour=red", {}),
                                 ("/nope", {})])
    assert [c for c, _ in res] == [400, 400, 400, 400, 400, 400, 404]
    assert all(isinstance(b, dict) and b["status"] == c and b["error"] for c, b in res)
    assert "limit" in res[0][1]["error"]


def test_redis_away_is_503(redis_url: str) -> None:
    dead = StateStore.from_url("redis://127.0.0.1:1/0", "x", timeout_s=0.2)
    res = run_client(dead, "", [("/health", {}), ("/status", {})])
    assert [c for c, _ in res] == [503, 503]


def test_openapi_describes_every_route() -> None:
    from dashboards.api import create_app as mk

    app = mk(StatusReader(StateStore.from_url("redis://127.0.0.1:1/0", "x")), "")
    routes = {r.resource.canonical for r in app.router.routes() if r.method == "GET"}
    assert routes == set(OPENAPI["paths"])
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(OPENAPI["paths"]["/metrics"]["get"]["responses"]["200"]
                                                 ["content"]["application/json"]["schema"] | {"$defs": {}})
    assert OPENAPI["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_api_section_requires_a_token_off_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    from cluster.config_base import ConfigError

    monkeypatch.delenv("RSC_API_TOKEN", raising=False)
    assert ApiSection().validate().port == 8600
    with pytest.raises(ConfigError, match="api.token"):
        ApiSection(host="0.0.0.0").validate()
    monkeypatch.setenv("RSC_API_TOKEN", "t")
    assert ApiSection(host="0.0.0.0").validate().effective_token() == "t"
    with pytest.raises(ConfigError, match="api.port"):
        ApiSection(port=0).validate()
