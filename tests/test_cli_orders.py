"""`python -m cluster order | cancel-all | flatten` against a running paper cluster (real Ray, real Redis).

A small cluster with no strategies, so every order in Redis is the CLI's: orders pass the risk actor
(strategy `manual`), appear in Redis, `cancel-all` cancels the resting one, `flatten` brings the
position back to zero.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import ray
import yaml

from cluster.cli import main as cli_main
from cluster.commands.order import MANUAL_STRATEGY
from cluster.config import parse_config
from cluster.launch import ClusterRun
from cluster.messages import OrderStatus

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def cli_config(tmp_path: Path, redis_url: str):
    data = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    data["cluster"] = {"name": "cliorders", "data_dir": str(tmp_path / "runs")}
    data["redis"] = {"url": redis_url}
    data["market"]["source"] = "builtin"
    data["api"] = {"enabled": False}
    data["symbols"] = [s for s in data["symbols"] if s["symbol"] in ("BTCUSDT", "ETHUSDT")]
    data["strategies"] = []
    data["risk"].pop("strategies", None)
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(data))
    return parse_config(data), str(path)


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def net(store, symbol: str) -> float:
    return sum(p.qty for p in store.positions() if p.symbol == symbol)


def test_order_cancel_all_and_flatten_through_risk(ray_session, redis_url, tmp_path, capsys) -> None:
    cfg, path = cli_config(tmp_path, redis_url)
    run = ClusterRun(cfg)
    run.start()
    try:
        store = run.store
        assert store is not None
        wait_for(lambda: "BTCUSDT" in store.marks(), 20, "risk to have a reference price")
        mid = store.marks()["BTCUSDT"]

        # A resting limit order: approved by risk, journaled, open in Redis under strategy `manual`.
        price = round(mid * 0.98, 1)
        rc = cli_main(["order", "--venue", "paper", "--symbol", "BTCUSDT", "--side", "buy", "--qty", "0.01",
                       "--price", str(price), "--wait", "1", "--config", path])
        out = capsys.readouterr().out
        assert rc == 0, out
        assert ": new" in out and "BTCUSDT buy 0.01 limit" in out
        resting = store.open_orders("paper")
        assert len(resting) == 1 and resting[0].strategy == MANUAL_STRATEGY and resting[0].price == price
        coid = resting[0].client_order_id
        assert coid in out

        # A market order: through risk (a limit IOC at the protection price), filled, a position in Redis.
        rc = cli_main(["order", "--venue", "paper", "--symbol", "BTCUSDT", "--side", "buy", "--qty", "0.02",
                       "--config", path])
        out = capsys.readouterr().out
        assert rc == 0, out
        assert ": filled" in out
        assert net(store, "BTCUSDT") == pytest.approx(0.02)

        # Risk refuses what it must refuse, and the CLI says so (no order reaches the gateway).
        rc = cli_main(["order", "--venue", "paper", "--symbol", "BTCUSDT", "--side", "buy", "--qty", "0.01",
                       "--price", str(round(mid * 0.5, 1)), "--wait", "1", "--config", path])
        out = capsys.readouterr().out
        assert rc == 1 and "rejected by risk: price_collar" in out
        assert len(store.open_orders("paper")) == 1

        # cancel-all cancels the resting order.
        assert cli_main(["cancel-all", "--venue", "paper", "--config", path]) == 0
        assert "paper: cancel requested for 1 order(s)" in capsys.readouterr().out
        wait_for(lambda: store.open_orders("paper") == [], 10, "the resting order to be canceled")
        assert store.load_order(coid).status is OrderStatus.CANCELED

        # flatten sells the position back to zero, through risk.
        assert cli_main(["flatten", "--config", path]) == 0
        out = capsys.readouterr().out
        assert "BTCUSDT sell 0.02" in out and ": filled" in out
        wait_for(lambda: abs(net(store, "BTCUSDT")) < 1e-12, 10, "a flat position")
        manual_fills = [f for f in store.journal_fills() if f.strategy == MANUAL_STRATEGY]
        assert sum(f.qty for f in manual_fills if f.side.value == "buy") == pytest.approx(0.02)
        assert sum(f.qty for f in manual_fills if f.side.value == "sell") == pytest.approx(0.02)
        assert cli_main(["flatten", "--config", path]) == 0
        assert "nothing to flatten" in capsys.readouterr().out
        assert "gateway:paper" in ray.util.list_named_actors()
    finally:
        run.shutdown()
