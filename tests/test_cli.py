"""The command line as a user meets it: clear one-line errors, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from actors.risk import RiskService
from cluster.cli import main as cli_main
from cluster.config import RiskLimits, RiskSection, SymbolSection
from cluster.messages import ExecutionReport, Fill, OrderIntent, OrderStatus, Side
from cluster.state_store import StateStore
from tests.cli_output import json_output

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


def test_status_shows_each_scopes_drawdown_as_risk_wrote_it(redis_url, tmp_path, capsys):
    section = RiskSection(defaults=RiskLimits(), capital=10_000, max_drawdown_pct=None, stop_loss_atr=None,
                          strategies={"mm": RiskLimits(max_drawdown_pct=10, capital=1000)},
                          venues={"paper": RiskLimits(max_drawdown_pct=20, capital=5000)})
    store = StateStore.from_url(redis_url, "t")
    svc = RiskService(section, [SymbolSection(symbol="BTCUSDT", venue="paper", price=100.0, lot_size=0.001)],
                      ["paper"], store)
    eng = svc.engine
    now = time.time_ns()
    eng.set_mark("BTCUSDT", 100.0, now)
    i = OrderIntent(strategy="mm", venue="paper", symbol="BTCUSDT", side=Side.BUY, qty=5.0, price=100.0)
    d, order = svc.decide(i)
    assert d.approved and order is not None
    eng.on_report(ExecutionReport(client_order_id=order.client_order_id, strategy="mm", venue="paper",
                                  symbol="BTCUSDT", status=OrderStatus.FILLED, side=Side.BUY, order_qty=5.0,
                                  fill=Fill(client_order_id=order.client_order_id, trade_id="t1", strategy="mm",
                                            venue="paper", symbol="BTCUSDT", side=Side.BUY, price=100.0, qty=5.0)))
    eng.set_mark("BTCUSDT", 120.0, now)
    svc.evaluate(force=True)  # peaks: mm 1100, paper 5100
    eng.set_mark("BTCUSDT", 110.0, now)
    svc.evaluate(force=True)  # mm 1050 (4.55% down), paper 5050 (0.98% down): written to risk:equity
    data = {"cluster": {"name": "t", "data_dir": str(tmp_path / "runs")}, "redis": {"url": redis_url},
            "symbols": [{"symbol": "BTCUSDT", "venue": "paper", "price": 100.0}],
            "strategies": [{"name": "mm", "type": "market_maker", "symbols": ["BTCUSDT"]}]}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))

    assert cli_main(["status", "--json", "--config", str(cfg)]) == 0
    dd = json_output(capsys.readouterr().out)["risk"]["drawdowns"]
    assert list(dd) == ["strategy:mm", "venue:paper"]  # sorted, `global` is the top-level equity/peak/drawdown
    assert dd["strategy:mm"]["peak_equity"] == pytest.approx(1100) and dd["strategy:mm"]["equity"] == pytest.approx(1050)
    assert dd["strategy:mm"]["drawdown_pct"] == pytest.approx(100 * 50 / 1100, abs=1e-4)
    assert dd["strategy:mm"]["max_drawdown_pct"] == 10
    assert dd["venue:paper"]["drawdown_pct"] == pytest.approx(100 * 50 / 5100, abs=1e-4)

    assert cli_main(["status", "--config", str(cfg)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("risk: drawdown ")]
    assert lines == ["risk: drawdown strategy:mm: equity 1050.0, peak 1100.0, drawdown 4.5455% (breaker at 10%)",
                     "risk: drawdown venue:paper: equity 5050.0, peak 5100.0, drawdown 0.9804% (breaker at 20%)"]


def test_status_without_scope_drawdowns_prints_no_drawdown_lines(redis_url, tmp_path, capsys):
    store = StateStore.from_url(redis_url, "t")
    store.set_risk_values({"equity": "100.0", "peak_equity": "100.0", "drawdown_pct": "0.0",
                           "drawdowns": json.dumps({"global": {"equity": 100.0, "peak_equity": 100.0,
                                                               "drawdown_pct": 0.0}})})
    data = {"cluster": {"name": "t", "data_dir": str(tmp_path / "runs")}, "redis": {"url": redis_url},
            "symbols": [{"symbol": "BTCUSDT", "venue": "paper", "price": 100.0}], "strategies": []}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    assert cli_main(["status", "--json", "--config", str(cfg)]) == 0
    assert json_output(capsys.readouterr().out)["risk"]["drawdowns"] == {}
    assert cli_main(["status", "--config", str(cfg)]) == 0
    assert "risk: drawdown " not in capsys.readouterr().out
