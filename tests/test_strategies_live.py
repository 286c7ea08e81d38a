"""configs/strategies.yaml live: all four strategies trade on the paper cluster, and nothing is lost.

The config runs as it ships (venue simulator, four symbols, imbalance, ema_grid, pairs and the market
maker) on the session's Ray and the test Redis. Every strategy must get books, have risk decide its
intents and get fills; no strategy actor may die or raise while the feeds deliver to it; after the kill
switch quiets the cluster each strategy's own positions equal Redis's, and Redis's equal a replay of
the fill journal.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from cluster.cli import main as cli_main
from cluster.config import parse_config
from cluster.launch import ClusterRun
from cluster.messages import IntentAction
from cluster.portfolio import Portfolio
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.ray]
STRATEGY_TYPES = {"imbalance", "ema_grid", "pairs", "market_maker"}


def strategies_config(tmp_path: Path, redis_url: str) -> tuple[Any, str]:
    data = yaml.safe_load((REPO / "configs" / "strategies.yaml").read_text())
    data["cluster"] = {"name": "strategies-live", "data_dir": str(tmp_path / "runs")}
    data["redis"] = {"url": redis_url}  # kept after shutdown, so the journal can be checked
    data["api"] = {"enabled": False}
    path = tmp_path / "strategies.yaml"
    path.write_text(yaml.safe_dump(data))
    return parse_config(data), str(path)



def pids(handles: dict[str, Any]) -> dict[str, int]:
    """Worker process of each actor: a crashed and restarted actor comes back in another process."""
    return dict(zip(handles, ray.get([h.__ray_call__.remote(lambda self: os.getpid()) for h in handles.values()],
                                     timeout=30), strict=True))


def delivery_errors(feeds: dict[str, Any]) -> dict[str, int]:
    """Failed feed deliveries: a strategy whose on_market raised (or died) counts here."""
    return dict(zip(feeds, ray.get([h.__ray_call__.remote(lambda self: self.delivery_errors) for h in feeds.values()],
                                   timeout=30), strict=True))


def test_strategies_config_has_all_four() -> None:
    data = yaml.safe_load((REPO / "configs" / "strategies.yaml").read_text())
    cfg = parse_config(data)
    assert {s.type for s in cfg.strategies} == STRATEGY_TYPES


def test_all_four_strategies_trade_live(ray_session: None, redis_url: str, tmp_path: Path) -> None:
    cfg, cfg_path = strategies_config(tmp_path, redis_url)
    names = [s.name for s in cfg.strategies]
    run = ClusterRun(cfg)
    run.start()
    try:
        store = run.store
        assert store is not None
        pid_at_start = pids(run.strategies)

        def traded() -> Counter:
            return Counter(f.strategy for f in store.journal_fills())

        wait_for(lambda: all(traded()[n] > 0 for n in names), 60, "a fill for every strategy")
        decided = Counter(d.strategy for d in store.audit_decisions_since(0))
        assert all(decided[n] > 0 for n in names), decided
        # The market maker requotes continuously, beyond the default 60 orders/min a config must raise for
        # it: with that limit it would be refused (order_rate) for the rest of each minute.
        mm = next(s.name for s in cfg.strategies if s.type == "market_maker")

        def mm_orders() -> int:
            return sum(1 for d in store.audit_decisions_since(0)
                       if d.strategy == mm and d.approved and d.action is IntentAction.NEW)

        wait_for(lambda: mm_orders() > 75, 45, "the market maker to keep quoting past 60 orders")

        # Quiet the cluster: new orders refused, resting ones canceled; then every report has reached
        # its strategy, whose own positions must equal Redis's.
        assert cli_main(["kill-switch", "on", "--config", cfg_path]) == 0
        wait_for(lambda: store.open_orders() == [], 40, "resting orders canceled by the kill switch")

        def views_agree() -> bool:
            stored = {(p.strategy, p.symbol): p.qty for p in store.positions()}
            for n, st in zip(names, ray.get([run.strategies[n].stats.remote() for n in names]), strict=True):
                for sym, qty in st["positions"].items():
                    if abs(qty - stored.get((n, sym), 0.0)) > 1e-9:
                        return False
            return True

        wait_for(views_agree, 40, "each strategy's positions to equal Redis's")
        assert pids(run.strategies) == pid_at_start, "a strategy actor died and was restarted"
        assert delivery_errors(run.feeds) == dict.fromkeys(run.feeds, 0), "a delivery to a subscriber failed"
    finally:
        summary = run.shutdown()
        wait_for(lambda: not set(ray.util.list_named_actors()) & set(run.all_actors()), 30, "actor names freed")

    for n in names:
        c = summary["strategies"][n]
        assert c["books"] > 0 and c["intents"] > 0 and c["approved"] > 0, (n, c)
    assert all(summary["book_updates"][s.symbol] > 0 for s in cfg.symbols), summary["book_updates"]

    # No fill lost or counted twice: positions in Redis equal the replay of the journal.
    fills = run.store.journal_fills()
    keys = [(f.venue, f.trade_id) for f in fills]
    assert len(keys) == len(set(keys)), "a venue trade id was journaled twice"
    replay = Portfolio()
    for f in fills:
        replay.apply_fill(f)
    stored = {(p.strategy, p.symbol): p.qty for p in run.store.positions()}
    assert {k for k, q in stored.items() if abs(q) > 1e-12} == {(p.strategy, p.symbol) for p in replay.positions()
                                                                if abs(p.qty) > 1e-12}
    for p in replay.positions():
        assert stored[(p.strategy, p.symbol)] == pytest.approx(p.qty, abs=1e-9)
    assert run.store.open_orders() == []
