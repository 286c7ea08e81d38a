"""Commands from another shell, as a user runs them: `cluster run` in one process, `params` in others.

Nothing is shared with the test's own Ray: each command is a process of its own with the user's environment
(no RAY_AUTH_MODE, which Ray sets inside a process that starts a local cluster), so the run must tell a
joining command how to authenticate. The run then stops on SIGTERM (`timeout`, systemd) as on Ctrl-C, and
`status` and `report` read the stopped run from its folder (its own Redis, started again from its files).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.cli_output import json_output

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env["PYTHONPATH"] = str(REPO)
    return env


def test_params_from_another_shell_then_sigterm_stops_cleanly_and_the_run_is_read_after(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    data["cluster"] = {"name": "othershell", "data_dir": str(tmp_path / "runs")}  # redis.url "": its own Redis
    data["ray"] = {"dashboard_port": free_port(), "num_cpus": 2}
    data["api"] = {"enabled": False}
    data["symbols"] = [s for s in data["symbols"] if s["symbol"] == "BTCUSDT"]
    data["strategies"] = [{**s, "symbols": ["BTCUSDT"]} for s in data["strategies"] if s["name"] == "obi"]
    data["risk"].pop("strategies", None)
    data["risk"].pop("symbols", None)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(data))

    summary_file = tmp_path / "summary.json"
    run = subprocess.Popen([sys.executable, "-m", "cluster", "run", "--config", str(cfg), "--duration", "300",
                            "--summary-json", str(summary_file)],
                           cwd=REPO, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(run.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("trading; Ctrl-C stops cleanly" in x for x in lines):
            assert run.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        run_info = json.loads((tmp_path / "runs" / "othershell.current.json").read_text())
        assert run_info["ray_auth"] in ("token", "disabled")

        def cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "cluster", *args, "--config", str(cfg)], cwd=REPO,
                                  env=user_env(), capture_output=True, text=True, timeout=120)

        # Long enough for fills to land, so the stopped run has something to show.
        wait = time.monotonic() + 60
        while not (json_output(cli("status", "--json").stdout).get("fills", 0) > 0):
            assert time.monotonic() < wait
            time.sleep(1)

        done = cli("params", "set", "obi", "threshold", "0.3")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "strategy:obi threshold = 0.3" in done.stdout
        done = cli("params", "get", "obi")
        assert done.returncode == 0, done.stderr
        assert json_output(done.stdout)["threshold"] == 0.3
        done = cli("params", "set", "obi", "threshold", "2")
        assert done.returncode == 2 and "threshold must be in [0, 1)" in done.stderr

        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=90) == 0, "".join(lines)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    reader.join(timeout=10)
    out = "".join(lines)
    assert "interrupted: shutting down cleanly" in out and "summary of cluster 'othershell'" in out, out
    assert "SIGTERM received" not in out
    assert not (tmp_path / "runs" / "othershell.current.json").exists()

    def cli_after(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cluster", *args, "--config", str(cfg)], cwd=REPO,
                              env=user_env(), capture_output=True, text=True, timeout=120)

    done = cli_after("status", "--json")
    assert done.returncode == 2 and "read a stopped run with --run last" in done.stderr
    summary = json.loads(summary_file.read_text())
    done = cli_after("status", "--json", "--run", "last")
    assert done.returncode == 0, done.stderr
    status = json_output(done.stdout)
    assert status["fills"] == summary["fills"] > 0
    assert status["performance"]["total"]["fills"] == summary["fills"]
    done = cli_after("report", "--out", str(tmp_path / "report"), "--run", "last", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert f"({summary['fills']} fills" in done.stdout and (tmp_path / "report" / "report.html").exists()
    done = cli_after("status", "--run", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "not a run folder" in done.stderr
