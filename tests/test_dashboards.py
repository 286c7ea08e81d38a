"""Dashboards as code: the JSON in the repo is current, queries use known metrics, and `dashboards push`
provisions a (fake, local) Grafana with the right requests and the bearer token."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cluster.cli import main
from dashboards.grafana import (
    DATASOURCE_UID,
    FOLDER_UID,
    all_queries,
    build_dashboards,
    dashboard_json,
    write_all,
)
from dashboards.metrics import CATALOG
from dashboards.status_reader import PERF_GAUGES

REPO = Path(__file__).resolve().parents[1]
TOKEN = "glsa_test_token"


def test_repo_json_is_generated_from_code(tmp_path: Path) -> None:
    write_all(tmp_path)
    for d in build_dashboards():
        committed = REPO / "dashboards" / "json" / f"{d.uid}.json"
        assert committed.read_text() == dashboard_json(d), f"{committed} is stale: run python -m cluster dashboards build"
    for rel in ["provisioning/dashboards/rsc.yaml", "provisioning/datasources/rsc-prometheus.yaml", "prometheus.yml"]:
        assert (REPO / "dashboards" / rel).read_text() == (tmp_path / rel).read_text()


def test_five_dashboards_with_unique_panel_ids_and_known_metrics() -> None:
    models = [d.model() for d in build_dashboards()]
    assert {m["uid"] for m in models} == {"rsc-overview", "rsc-strategy", "rsc-feeds", "rsc-risk", "rsc-cluster"}
    for m in models:
        ids = [p["id"] for p in m["panels"]]
        assert len(ids) == len(set(ids)) and all(p["targets"] for p in m["panels"])
        assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in m["panels"])
    known = {s.prom_name for s in CATALOG.values()} | {f"rsc_perf_{n}" for n in PERF_GAUGES} | {
        "rsc_api_up", "rsc_api_open_orders", "ray_cluster_active_nodes", "ray_actors", "ray_node_cpu_utilization",
        "ray_node_mem_used", "ray_object_store_memory"}
    used = set()
    for _, _, expr in all_queries():
        for name in re.findall(r"\b((?:ray|rsc)_[a-z_]+?)(?:_bucket)?\b(?=[{\[) ])", expr):
            used.add(name)
            assert name in known, f"{expr}: unknown metric {name}"
    # every catalog metric appears on some dashboard
    assert {s.prom_name for s in CATALOG.values()} <= used


class FakeGrafana:
    """The few Grafana HTTP API endpoints `push` uses; checks the token and the payloads."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.folders: set[str] = set()
        self.datasources: dict[str, Any] = {}
        self.dashboards: dict[str, Any] = {}

    def app(self) -> web.Application:
        @web.middleware
        async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
            body = await request.json() if request.can_read_body else None
            self.requests.append((request.method, request.path, body))
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                return web.json_response({"message": "Unauthorized"}, status=401)
            return await handler(request)

        async def health(_: web.Request) -> web.Response:
            return web.json_response({"buildInfo": {"version": "11.0.0"}})

        async def get_folder(r: web.Request) -> web.Response:
            uid = r.match_info["uid"]
            if uid not in self.folders:
                return web.json_response({"message": "folder not found"}, status=404)
            return web.json_response({"uid": uid})

        async def create_folder(r: web.Request) -> web.Response:
            body = await r.json()
            assert set(body) <= {"title", "uid", "parentUid"} and body["title"]
            self.folders.add(body["uid"])
            return web.json_response({"uid": body["uid"], "title": body["title"]})

        async def get_ds(r: web.Request) -> web.Response:
            uid = r.match_info["uid"]
            if uid not in self.datasources:
                return web.json_response({"message": "not found"}, status=404)
            return web.json_response(self.datasources[uid])

        async def create_ds(r: web.Request) -> web.Response:
            body = await r.json()
            assert body["type"] == "prometheus" and body["url"].startswith("http")
            self.datasources[body["uid"]] = body
            return web.json_response({"datasource": body})

        async def post_dashboard(r: web.Request) -> web.Response:
            body = await r.json()
            d = body["dashboard"]
            if not d.get("title") or not isinstance(d.get("panels"), list) or body.get("folderUid") not in self.folders:
                return web.json_response({"message": "bad dashboard"}, status=400)
            self.dashboards[d["uid"]] = body
            return web.json_response({"status": "success", "uid": d["uid"], "url": f"/d/{d['uid']}/x"})

        app = web.Application(middlewares=[auth])
        app.router.add_get("/api/frontend/settings", health)  # grafana-client's health.check()
        app.router.add_get("/api/folders/{uid}", get_folder)
        app.router.add_post("/api/folders", create_folder)
        app.router.add_get("/api/datasources/uid/{uid}", get_ds)
        app.router.add_post("/api/datasources", create_ds)
        app.router.add_post("/api/dashboards/db", post_dashboard)
        return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def grafana() -> Iterator[tuple[FakeGrafana, str]]:
    fake = FakeGrafana()
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(fake.app())
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert started.wait(10)
    yield fake, f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def test_push_creates_folder_datasource_and_every_dashboard(grafana, monkeypatch, capsys) -> None:
    fake, url = grafana
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert main(["dashboards", "push", "--grafana-url", url, "--prometheus-url", "http://prom:9090"]) == 0
    assert fake.folders == {FOLDER_UID} and set(fake.datasources) == {DATASOURCE_UID}
    assert set(fake.dashboards) == {d.uid for d in build_dashboards()}
    for body in fake.dashboards.values():
        assert body["overwrite"] is True and body["folderUid"] == FOLDER_UID
    out = capsys.readouterr().out
    assert f"pushed {url}/d/rsc-overview/x" in out
    # a second push updates in place: no new folder or datasource
    fake.requests.clear()
    assert main(["dashboards", "push", "--grafana-url", url, "--prometheus-url", "http://prom:9090"]) == 0
    assert [p for m, p, _ in fake.requests if m == "POST"] == ["/api/dashboards/db"] * 5


def test_wrong_token_is_one_clear_line(grafana, monkeypatch, capsys) -> None:
    _, url = grafana
    monkeypatch.setenv("GRAFANA_TOKEN", "wrong")
    assert main(["dashboards", "push", "--grafana-url", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Grafana at") and "refused the token (401)" in err and err.count("\n") == 1


def test_missing_grafana_or_token_is_a_clear_message(monkeypatch, capsys) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert main(["dashboards", "push", "--grafana-url", f"http://127.0.0.1:{free_port()}"]) == 2
    assert "cannot reach Grafana at http://127.0.0.1:" in capsys.readouterr().err
    monkeypatch.delenv("GRAFANA_TOKEN")
    assert main(["dashboards", "push", "--grafana-url", "http://127.0.0.1:3000"]) == 2
    assert "set the environment variable GRAFANA_TOKEN" in capsys.readouterr().err
    assert main(["dashboards", "push", "--grafana-url", "localhost:3000"]) == 2
    assert "must be an http(s):// URL" in capsys.readouterr().err


def test_build_writes_valid_json(tmp_path: Path, capsys) -> None:
    assert main(["dashboards", "build", "--out", str(tmp_path)]) == 0
    files = sorted((tmp_path / "json").glob("*.json"))
    assert len(files) == 5 and all(json.loads(f.read_text())["panels"] for f in files)
    assert "path: /var/lib/grafana/dashboards/rsc" in (tmp_path / "provisioning/dashboards/rsc.yaml").read_text()
