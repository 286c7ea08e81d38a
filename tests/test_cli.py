"""The command line as a user meets it: clear one-line errors, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def test_bad_config_fails_before_anything_starts_and_names_the_key(tmp_path):
    data = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    data["strategies"][0]["symbols"] = ["NOPEUSDT"]
    data["cluster"]["data_dir"] = str(tmp_path / "runs")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    res = run_cli("run", "--config", str(path), "--duration", "5")
    assert res.returncode == 2
    assert "strategies[0].symbols" in res.stderr and "NOPEUSDT" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists(), "nothing may start for a bad config"


def test_missing_config_file():
    res = run_cli("status", "--config", "does/not/exist.yaml")
    assert res.returncode == 2 and "cannot read" in res.stderr and "Traceback" not in res.stderr


def test_status_without_a_running_cluster_says_so(tmp_path):
    data = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    data["cluster"]["data_dir"] = str(tmp_path / "runs")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    res = run_cli("status", "--config", str(path))
    assert res.returncode == 2 and "no running cluster" in res.stderr


def test_bad_duration_and_unknown_strategy_scope(tmp_path):
    res = run_cli("run", "--duration", "-3")
    assert res.returncode == 2 and "--duration" in res.stderr
    res = run_cli("kill-switch", "on", "--strategy", "nobody")
    assert res.returncode == 2 and "unknown strategy" in res.stderr
