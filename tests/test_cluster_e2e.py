"""The paper cluster end to end with real Ray and a real redis-server.

One run, several checks: every symbol fills, killing a strategy actor does not
stop the others, killing the gateway loses no fill and counts none twice, and
the shutdown leaves no order open.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import ray
import yaml

from cluster.cli import main as cli_main
from cluster.config import parse_config
from cluster.launch import ClusterRun
from cluster.portfolio import Portfolio
from tests.cli_output import json_output
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def e2e_config(tmp_path: Path, redis_url: str):
    data = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    data["cluster"] = {"name": "e2e", "data_dir": str(tmp_path / "runs")}
    data["redis"] = {"url": redis_url}  # kept after shutdown, so the journal can be checked
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(data))
    return parse_config(data), str(path)



def strategy_fills(run: ClusterRun) -> Counter:
    return Counter(f.strategy for f in run.store.journal_fills())


def test_paper_cluster_end_to_end(ray_session, redis_url, tmp_path, capsys):
    cfg, cfg_path = e2e_config(tmp_path, redis_url)
    run = ClusterRun(cfg)
    run.start()
    try:
        names = set(ray.util.list_named_actors())
        for expected in ["risk", "gateway:paper", "strategy:mm", "strategy:obi",
                         *[f"feed:paper:{s.symbol}" for s in cfg.symbols]]:
            assert expected in names, f"actor {expected} missing from {sorted(names)}"

        wait_for(lambda: len({f.symbol for f in run.store.journal_fills()}) == len(cfg.symbols), 40,
                 "fills on every symbol")

        # Kill one strategy: the other keeps trading.
        ray.kill(run.strategies["obi"], no_restart=False)
        before = strategy_fills(run)["mm"]
        wait_for(lambda: strategy_fills(run)["mm"] > before, 20, "the market maker to keep filling")

        # Kill the gateway with orders working: it comes back from Redis and trading goes on.
        fills_before = len(run.store.journal_fills())
        ray.kill(run.gateways["paper"], no_restart=False)
        wait_for(lambda: len(run.store.journal_fills()) > fills_before + 3, 30, "fills after the gateway restart")

        # status reads the running cluster from Redis.
        assert cli_main(["status", "--config", cfg_path, "--json"]) == 0
        status = json_output(capsys.readouterr().out)
        assert set(status["actors"]) >= {"risk", "gateway:paper", "strategy:mm"}
        assert status["fills"] > 0 and status["positions"]

        # The kill switch: resting orders are canceled, new orders refused with its reason.
        assert cli_main(["kill-switch", "on", "--config", cfg_path]) == 0
        wait_for(lambda: run.store.open_orders() == [], 30, "resting orders canceled by the kill switch")
        rejected_before = run.store.stats().get("rejected:kill_switch", 0)
        wait_for(lambda: run.store.stats().get("rejected:kill_switch", 0) > rejected_before, 15,
                 "orders refused with reason kill_switch")
        fills_at_kill = len(run.store.journal_fills())
        time.sleep(1.0)
        assert len(run.store.journal_fills()) == fills_at_kill, "no fill may happen with the kill switch on"
        assert cli_main(["kill-switch", "off", "--config", cfg_path]) == 0
        wait_for(lambda: len(run.store.journal_fills()) > fills_at_kill, 20, "trading to resume")
    finally:
        summary = run.shutdown()

    assert summary, "shutdown must return a summary"
    for sym in (s.symbol for s in cfg.symbols):
        assert summary["fills_by_symbol"][sym] > 0, sym
        assert summary["book_updates"][sym] > 0, sym
    assert summary["orders_submitted"] > 0
    assert summary["fills"] == sum(summary["fills_by_symbol"].values())

    # No fill lost or counted twice: positions in Redis equal the replay of the journal.
    fills = run.store.journal_fills()
    keys = [(f.venue, f.trade_id) for f in fills]
    assert len(keys) == len(set(keys)), "a venue trade id was journaled twice"
    assert summary["fills"] == len(fills)
    replay = Portfolio()
    for f in fills:
        replay.apply_fill(f)
    stored = {(p.strategy, p.symbol): p.qty for p in run.store.positions()}
    for p in replay.positions():
        assert stored[(p.strategy, p.symbol)] == pytest.approx(p.qty, abs=1e-9)
    for sym, qty in summary["positions"].items():
        assert qty == pytest.approx(replay.net_qty(sym), abs=1e-9)
    assert run.store.open_orders() == [], "shutdown cancels every resting order"
    btc_limit = cfg.risk.symbols["BTCUSDT"].max_position_qty
    assert summary["max_abs_position"]["BTCUSDT"] <= btc_limit + 1e-9
