"""A strategy of the user's own, in a module of theirs, named in the config as `package.module:ClassName`:
backtested, swept over Ray tasks and run live, each as the user runs them (a process started in their folder),
and a bad name refused in one line before anything starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration]

USER_STRATEGY = '''
from strategies.base import Strategy
from cluster.messages import Side, TimeInForce


class RisingMid(Strategy):
    """Buys at the ask (IOC) once the mid has risen `run` books in a row; sells at the bid after `hold` books."""

    defaults = {"run": 3, "hold": 5, "qty": 0.01}

    def __init__(self, *args, **kwargs):
        self.last_mid = {}
        self.rising = {}
        self.held = {}
        super().__init__(*args, **kwargs)

    def on_book(self, update):
        sym = update.symbol
        mid = (update.bids[0][0] + update.asks[0][0]) / 2
        before = self.last_mid.get(sym)
        self.last_mid[sym] = mid
        self.rising[sym] = self.rising.get(sym, 0) + 1 if before is not None and mid > before else 0
        if self.working_orders(sym):
            return []
        if self.positions.get(sym, 0.0) > 0:
            self.held[sym] = self.held.get(sym, 0) + 1
            if self.held[sym] >= self.params["hold"]:
                self.held[sym] = 0
                return [self.limit(sym, Side.SELL, self.positions[sym], update.bids[0][0], tif=TimeInForce.IOC)]
            return []
        if self.rising[sym] >= self.params["run"]:
            self.rising[sym] = 0
            return [self.limit(sym, Side.BUY, self.params["qty"], update.asks[0][0], tif=TimeInForce.IOC)]
        return []


def not_a_class():
    return None
'''


def user_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "me"
    (folder / "mystrats").mkdir(parents=True)
    (folder / "mystrats" / "__init__.py").write_text("")
    (folder / "mystrats" / "rising.py").write_text(USER_STRATEGY)
    return folder


def user_config(folder: Path, strategy_type: str) -> Path:
    data = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    data["cluster"] = {"name": "mine", "data_dir": str(folder / "runs")}
    data["api"] = {"enabled": False}
    data["symbols"] = [s for s in data["symbols"] if s["symbol"] in ("BTCUSDT", "ETHUSDT")]
    data["strategies"] = [{"name": "rising", "type": strategy_type, "symbols": ["BTCUSDT", "ETHUSDT"],
                           "params": {"run": 2}}]
    data["risk"] = {"defaults": {"max_orders_per_min": 600}}
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(folder: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m cluster ...` run from the user's folder, with this repository installed (as `pip install -e`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "cluster", *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_a_users_own_strategy_backtests_sweeps_and_trades_live(tmp_path):
    folder = user_folder(tmp_path)
    cfg = user_config(folder, "mystrats.rising:RisingMid")

    done = cli(folder, "backtest", "--config", str(cfg), "--duration", "120", "--out", str(folder / "bt"))
    assert done.returncode == 0, done.stderr
    summary = json.loads((folder / "bt" / "summary.json").read_text())
    assert summary["strategies"]["rising"]["trades"] > 0

    (folder / "grid.yaml").write_text(yaml.safe_dump({"strategy": "rising", "duration_s": 60,
                                                      "params": {"run": [2, 3], "hold": [3]}}))
    done = cli(folder, "sweep", "--config", str(cfg), "--grid", str(folder / "grid.yaml"), "--num-cpus", "1")
    assert done.returncode == 0, done.stderr
    assert "results in" in done.stdout

    done = cli(folder, "run", "--config", str(cfg), "--duration", "12", "--summary-json", str(folder / "live.json"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    live = json.loads((folder / "live.json").read_text())
    assert "strategy:rising" in live["actors"] and live["fills"] > 0


@pytest.mark.parametrize(("strategy_type", "says"), [
    ("mystrats.nothere:RisingMid", "cannot import mystrats.nothere: ModuleNotFoundError"),
    ("mystrats.rising:Falling", "mystrats.rising has no 'Falling'"),
    ("mystrats.rising:not_a_class", "not_a_class is not a subclass of strategies.base.Strategy"),
    ("rising_mid", "unknown strategy type 'rising_mid'; known: ['ema_grid', 'imbalance', 'latency_probe', "
                   "'market_maker', 'pairs'], or your own class as 'package.module:ClassName'"),
])
def test_a_bad_strategy_type_is_one_line(tmp_path, strategy_type, says):
    folder = user_folder(tmp_path)
    done = cli(folder, "backtest", "--config", str(user_config(folder, strategy_type)), "--duration", "5", timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: config error at strategies[0].type: ") and says in done.stderr

