"""Every Grafana panel's PromQL returns data from a real Prometheus scraping a running paper cluster.

A small paper cluster (`configs/paper.yaml`: two symbols, both strategies, the venue simulator over real
sockets) trades on the session's Ray, with its status API started the way `run` starts it. The Debian
`prometheus` binary runs the scrape config `dashboards build` ships (`dashboards/prometheus.yml`): Ray's
metrics endpoints found through a file-SD file in the format Ray's dashboard writes, and the status API.
Panels that only move on faults or operator actions get them from the cluster itself: the simulator drops
a few depth messages (gaps, resyncs, snapshots), the kill switch is switched on for one strategy for a
moment (rejections), and one strategy actor is killed (delivery errors; Ray restarts it).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.cli import main as cli_main
from cluster.config import parse_config
from cluster.launch import ClusterRun
from dashboards.grafana import RAY_SD_FILE, all_queries, prometheus_yaml
from dashboards.metrics import CATALOG
from dashboards.system_tools import ensure_tool

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 50.0  # from the cluster's start; Ray's agent exports custom metrics every ~10 s
SUBST = {"$__rate_interval": "60s", "$strategy": ".*", "$symbol": ".*", "${datasource}": ""}
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
# The simulator drops this share of stream messages: a dropped depth event is a gap, the feed resyncs.
SIM_FAULTS = ["--drop", "0.01", "--fault-seed", "3"]

# Panel queries a paper cluster cannot feed, each with the reason. Empty today: every panel gets data.
NO_DATA_ON_PAPER: dict[str, str] = {}


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


class LossyPaperRun(ClusterRun):
    """The paper cluster, its venue simulator dropping a few stream messages (as a real network does)."""

    def _start_market(self) -> None:
        from gateways.venue_sim.process import SimulatorProcess

        assert self.run_dir is not None
        self.market_sim = SimulatorProcess(self.cfg, self.run_dir, SIM_FAULTS).start()


def paper_config(tmp_path: Path, redis_url: str, api_port: int) -> tuple[Any, str]:
    """configs/paper.yaml on two symbols, its own Redis prefix and API port; deliveries every 100 ms so
    the 20 updates/s per symbol are conflated (the skipped-updates panels)."""
    data = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    data["cluster"] = {"name": "promtest", "data_dir": str(tmp_path / "runs")}
    data["redis"] = {"url": redis_url}
    data["api"] = {"enabled": True, "host": "127.0.0.1", "port": api_port}
    data["feeds"]["min_delivery_interval_ms"] = 100.0
    data["symbols"] = [s for s in data["symbols"] if s["symbol"] in SYMBOLS]
    for st in data["strategies"]:
        st["symbols"] = [s for s in st["symbols"] if s in SYMBOLS]
    path = tmp_path / "promtest.yaml"
    path.write_text(yaml.safe_dump(data))
    return parse_config(data), str(path)


def ray_service_discovery(tmp_path: Path) -> Path:
    """Ray's file-SD file. Ray's dashboard writes `<session dir>/prom_metrics_service_discovery.json`
    every 5 s (symlinked from /tmp/ray/, the path `dashboards/prometheus.yml` reads): every live node's
    metrics export address plus the autoscaler's and the dashboard's metrics addresses. The session's Ray
    runs without the dashboard, so then the test writes the same content itself."""
    import ray
    from ray._private.worker import global_worker
    from ray.experimental.internal_kv import _internal_kv_get

    written = Path(global_worker.node.get_session_dir_path()) / Path(RAY_SD_FILE).name
    if written.exists():
        return written
    targets = [f"{n['NodeManagerAddress']}:{n['MetricsExportPort']}" for n in ray.nodes() if n["Alive"]]
    for key in (b"AutoscalerMetricsAddress", b"DashboardMetricsAddress"):
        addr = _internal_kv_get(key)
        if addr:
            targets.append(addr.decode())
    path = tmp_path / Path(RAY_SD_FILE).name
    path.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": targets}]))
    return path


def prom_get(port: int, path: str, **params: str) -> Any:
    import urllib.parse
    import urllib.request

    url = f"http://127.0.0.1:{port}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]


def prom_query(port: int, expr: str) -> list[dict[str, Any]]:
    return prom_get(port, "/api/v1/query", query=expr)["result"]


def has_number(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def _subst(expr: str) -> str:
    for k, v in SUBST.items():
        expr = expr.replace(k, v)
    return expr


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_allow_list_names_real_panel_queries() -> None:
    exprs = {_subst(e) for _, _, e in all_queries()}
    assert set(NO_DATA_ON_PAPER) <= exprs, "an allow-listed query is no longer on any panel"
    assert all(reason.strip() for reason in NO_DATA_ON_PAPER.values())


@pytest.mark.ray
@pytest.mark.integration
def test_every_panel_query_returns_data_from_a_paper_cluster(ray_session: None, prometheus_bin: str, redis_url: str,
                                                             tmp_path: Path) -> None:
    import ray

    started = time.monotonic()
    api_port = free_port()
    cfg, cfg_path = paper_config(tmp_path, redis_url, api_port)
    run = LossyPaperRun(cfg)
    run.start()
    proc = None
    log = (tmp_path / "prometheus.log").open("w")
    pending: dict[str, tuple[str, str]] = {}
    names: set[str] = set()
    try:
        sd_file = ray_service_discovery(tmp_path)
        prom_port = free_port()
        (tmp_path / "prometheus.yml").write_text(
            prometheus_yaml(sd_file=str(sd_file), api_target=f"127.0.0.1:{api_port}", scrape_interval="1s"))
        proc = subprocess.Popen([prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=log, stderr=subprocess.STDOUT)

        # Operator and fault events the cluster must show: a strategy-scoped kill switch refuses mm's
        # orders for a moment; the obi strategy actor dies (Ray restarts it) while the feeds deliver to it.
        _wait(lambda: run.store.stats().get("orders_submitted", 0) > 0, 30, "the first order")
        assert cli_main(["kill-switch", "on", "--strategy", "mm", "--config", cfg_path]) == 0
        _wait(lambda: run.store.stats().get("rejected:kill_switch", 0) > 0, 15, "a kill_switch rejection")
        assert cli_main(["kill-switch", "off", "--strategy", "mm", "--config", cfg_path]) == 0
        ray.kill(run.strategies["obi"], no_restart=False)

        pending = {_subst(e): (uid, title) for uid, title, e in all_queries()}
        for expr in NO_DATA_ON_PAPER:
            pending.pop(expr)
        while pending and time.monotonic() - started < DEADLINE_S:
            time.sleep(2.0)
            for expr in list(pending):
                try:
                    if has_number(prom_query(prom_port, expr)):
                        del pending[expr]
                except OSError:
                    break  # prometheus still starting
        names = {r["metric"]["__name__"] for r in prom_query(prom_port, '{__name__=~"ray_rsc_.+"}')}
        targets = prom_get(prom_port, "/api/v1/targets")["activeTargets"]
    finally:
        summary = run.shutdown()
        _wait(lambda: not set(ray.util.list_named_actors()) & set(run.all_actors()), 30, "actor names freed")
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        log.close()

    missing = {expr: f"{uid} / {title}" for expr, (uid, title) in pending.items()}
    assert not missing, f"panels without data after {DEADLINE_S}s: {json.dumps(missing, indent=1)}"
    exported = {n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n in names}
    assert {s.prom_name for s in CATALOG.values()} <= exported
    jobs = {t["labels"]["job"] for t in targets if t["health"] == "up"}
    assert jobs == {"ray", "rsc-api"}, targets
    assert summary["fills"] > 0 and all(summary["book_updates"][s] > 0 for s in SYMBOLS), summary
