"""The README's cluster section, step by step, on this machine: a Ray head started with `ray start`
(what `ray up` runs on the head) and the cluster submitted with `ray job submit --working-dir .`.

Only AWS itself is left out. The head gets its own ports and temp dir and is stopped by killing its
own processes: `ray stop` would stop every Ray on the machine, the test session's included.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.redis_server import free_port

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def _processes_mentioning(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


def _kill_all(marker: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _processes_mentioning(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while _processes_mentioning(marker) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture()
def ray_head() -> Iterator[tuple[str, dict[str, str]]]:
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    # Every port chosen free: another Ray on this machine may hold the defaults (the agent's 52365).
    gcs_port, dashboard_port, client_port, metrics_port, agent_port, agent_grpc, env_agent = (
        free_port() for _ in range(7))
    env = dict(os.environ)
    # The job's `python` is the one on the PATH of `ray start` (ray_config.yaml puts the venv first).
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "token"  # the same mode on the head and on the client that submits
    env.pop("RAY_ADDRESS", None)
    ray_cli = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray_cli, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    start = subprocess.run(
        [ray_cli, "start", "--head", f"--port={gcs_port}", f"--dashboard-port={dashboard_port}",
         "--dashboard-host=127.0.0.1", f"--ray-client-server-port={client_port}",
         f"--metrics-export-port={metrics_port}", f"--dashboard-agent-listen-port={agent_port}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
         f"--temp-dir={temp_dir}", "--num-cpus=2",
         '--resources={"shard": 1}', "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=120)
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        yield f"http://127.0.0.1:{dashboard_port}", env
    finally:
        _kill_all(temp_dir)
        _kill_all(f":{gcs_port}")


def test_ray_job_submit_runs_the_cluster_config_on_a_ray_head(ray_head, tmp_path):
    address, env = ray_head
    summary = tmp_path / "summary.json"
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
           "--", "python", "-m", "cluster", "run", "--config", "configs/cluster.yaml", "--duration", "15",
           "--summary-json", str(summary)]
    deadline = time.monotonic() + 90
    while True:  # a fresh head takes a few seconds before its job agent answers
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        out = done.stdout + done.stderr
        if "No available agent" not in out or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert done.returncode == 0, out[-4000:]
    assert "succeeded" in out, out[-4000:]
    data = json.loads(summary.read_text())
    assert data["fills"] > 0, data
    # All 16 symbols got book updates, each placed on a node that declares the "shard" resource.
    assert len(data["symbols"]) == 16 and all(data["book_updates"][s] > 0 for s in data["symbols"]), data
    assert set(data["placement"]) == set(data["symbols"]), data
    assert "order_rate" not in data["orders_rejected"], "the market makers' rate limits fit their requoting"

