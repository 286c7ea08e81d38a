"""Every Grafana panel's PromQL returns data from a real Prometheus scraping Ray and the status API.

One small Ray (the session's), one actor emitting every catalog metric through the same recorders the
cluster's actors use, the status API over a Redis with a trading history, and the Debian `prometheus`
binary scraping both every second. Runs once per session.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.state_store import StateStore
from dashboards.grafana import all_queries
from dashboards.metrics import CATALOG
from dashboards.system_tools import ensure_tool

DEADLINE_S = 75.0
SUBST = {"$__rate_interval": "60s", "$strategy": ".*", "$symbol": ".*", "${datasource}": ""}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    path, why = ensure_tool("prometheus")
    if path is None:
        if os.geteuid() != 0:
            pytest.skip(why)
        pytest.fail(why)
    return path


def emitter_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class MetricsEmitter:
        """Emits every catalog metric through the actor recorders, the way the cluster's actors do."""

        def __init__(self) -> None:
            from dashboards.metrics import FeedMetrics, GatewayMetrics, Recorder, RiskMetrics, StrategyMetrics

            self.feed = FeedMetrics("feed:paper:BTCUSDT", "paper", Recorder(flush_interval_s=0.2))
            self.strategy = StrategyMetrics("mm", Recorder(flush_interval_s=0.2))
            self.risk = RiskMetrics(Recorder(flush_interval_s=0.2))
            self.gateway = GatewayMetrics("paper", Recorder(flush_interval_s=0.2))
            self.i = 0
            self.running = False

        async def run(self) -> None:
            self.running = True
            while self.running:
                self.step()
                await asyncio.sleep(0.25)

        def stop(self) -> int:
            self.running = False
            return self.i

        def step(self) -> None:
            from types import SimpleNamespace

            from cluster.messages import (
                BookUpdate,
                ExecutionReport,
                Fill,
                OrderIntent,
                OrderStatus,
                Position,
                RejectReason,
                RiskDecision,
                Side,
            )

            self.i += 1
            i, now = self.i, time.time_ns()
            b = BookUpdate(venue="paper", symbol="BTCUSDT", seq=i, bids=[(99.0 + i % 3, 1.0)], asks=[(101.0, 1.0)],
                           exchange_ts_ns=now - 3_000_000, receive_ts_ns=now - 1_000_000)
            svc = SimpleNamespace(latest={"BTCUSDT": b}, stats=lambda: {"BTCUSDT": {
                "applied": 10 * i, "trades": 3 * i, "resyncs": i, "snapshots": i, "malformed": i, "gaps": i}})
            self.feed.rec.flush_interval_s = 0.0
            self.feed.update(svc)
            self.feed.conflation("strategy:mm", 2)
            self.feed.delivery_error("strategy:mm")
            self.strategy.on_market([b], skipped=1)
            intent = OrderIntent(strategy="mm", venue="paper", symbol="BTCUSDT", qty=1.0, price=100.0)
            for reason in (RejectReason.NONE, RejectReason.POSITION_LIMIT):
                d = RiskDecision(approved=reason is RejectReason.NONE, reason=reason, strategy="mm", venue="paper",
                                 symbol="BTCUSDT")
                self.strategy.on_decision(intent, d, asked_ns=now - 500_000 * (1 + i % 4))
                self.risk.on_decision(d, 0.0001 * (1 + i % 5))
            self.risk.state({"global"} if i % 2 else set(), reservations=i % 7, marks={"BTCUSDT": 100.0 + i % 3})
            f = Fill(client_order_id=f"c{i}", trade_id=f"t{i}", strategy="mm", venue="paper", symbol="BTCUSDT",
                     side=Side.BUY, price=100.0, qty=0.5, fee=0.01)
            self.gateway.on_reports([ExecutionReport(client_order_id=f"c{i}", strategy="mm", venue="paper",
                                                     symbol="BTCUSDT", status=OrderStatus.FILLED, side=Side.BUY,
                                                     order_qty=0.5, filled_qty=0.5, fill=f)])
            self.gateway.on_books([b])
            self.gateway.state([Position(strategy="mm", venue="paper", symbol="BTCUSDT", qty=0.5 * i,
                                         avg_price=99.0, realized_pnl=0.1 * i, fees=0.01 * i)],
                               open_orders=i % 4, backlog=0)
            for r in (self.feed.rec, self.strategy.rec, self.risk.rec, self.gateway.rec):
                r.flush()

    return MetricsEmitter


@pytest.fixture()
def api_port(redis_url: str) -> Iterator[int]:
    """The status API over a Redis with a trading history (for the rsc_perf_* panels)."""
    from aiohttp import web

    from dashboards.api import create_app
    from dashboards.status_reader import StatusReader
    from tests.test_report import history, seed

    store = StateStore.from_url(redis_url, "promtest")
    seed(store, history())
    store.record_order(__import__("cluster.messages", fromlist=["Order"]).Order(
        client_order_id="open1", strategy="mm", venue="paper", symbol="BTCUSDT",
        side=__import__("cluster.messages", fromlist=["Side"]).Side.BUY, qty=1.0,
        order_type=__import__("cluster.messages", fromlist=["OrderType"]).OrderType.LIMIT, price=1.0,
        status=__import__("cluster.messages", fromlist=["OrderStatus"]).OrderStatus.NEW))
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(StatusReader(store, ttl_s=0.5)))
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    yield port
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def prom_query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def has_number(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


@pytest.mark.ray
@pytest.mark.integration
def test_every_panel_query_returns_data(ray_session: None, prometheus_bin: str, api_port: int,
                                        tmp_path: Path) -> None:
    import ray
    from ray._private.worker import global_worker

    started = time.monotonic()
    ray_port = global_worker.node.metrics_export_port
    emitter = emitter_class().remote()
    emitter.run.remote()
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: ray, static_configs: [{{targets: ['127.0.0.1:{ray_port}']}}]}}\n"
        f"  - {{job_name: rsc-api, metrics_path: /metrics/prometheus, "
        f"static_configs: [{{targets: ['127.0.0.1:{api_port}']}}]}}\n")
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen([prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    queries = [(uid, title, _subst(expr)) for uid, title, expr in all_queries()]
    missing: dict[str, str] = {}
    try:
        pending = {expr: (uid, title) for uid, title, expr in queries}
        while pending and time.monotonic() - started < DEADLINE_S:
            time.sleep(2.0)
            for expr in list(pending):
                try:
                    if has_number(prom_query(prom_port, expr)):
                        del pending[expr]
                except OSError:
                    break  # prometheus still starting
        missing = {expr: f"{uid} / {title}" for expr, (uid, title) in pending.items()}
        names = {r["metric"]["__name__"] for r in prom_query(prom_port, '{__name__=~"ray_rsc_.+"}')}
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        ray.get(emitter.stop.remote())
        ray.kill(emitter)
    assert not missing, f"panels without data after {DEADLINE_S}s: {json.dumps(missing, indent=1)}"
    exported = {n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n in names}
    assert {s.prom_name for s in CATALOG.values()} <= exported


def _subst(expr: str) -> str:
    for k, v in SUBST.items():
        expr = expr.replace(k, v)
    return expr
