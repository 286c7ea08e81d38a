"""Actors Ray restarts in place after a crash carry on: a feed is subscribed and started again by the
launcher's supervisor, a strategy restarts its timer itself, and books keep reaching the strategies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray

from cluster.config import parse_config
from cluster.launch import ClusterRun
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.ray]


def restart_config(tmp_path: Path, redis_url: str) -> Any:
    return parse_config({
        "cluster": {"name": "restarts", "data_dir": str(tmp_path / "runs")},
        "redis": {"url": redis_url},
        "api": {"enabled": False},
        "market": {"source": "builtin", "seed": 9, "updates_per_second": 40.0},
        "feeds": {"symbols_per_actor": 1},
        "symbols": [{"symbol": s, "venue": "paper", "price": p, "tick_size": 0.01, "lot_size": 0.0001}
                    for s, p in (("AAAUSDT", 100.0), ("BBBUSDT", 50.0))],
        "strategies": [
            {"name": "pa", "type": "latency_probe", "symbols": ["AAAUSDT"], "timer_interval_ms": 100},
            {"name": "pb", "type": "latency_probe", "symbols": ["BBBUSDT"]},
        ],
    })


def books_seen(run: ClusterRun, name: str) -> int:
    try:
        return ray.get(run.strategies[name].stats.remote(), timeout=30)["counters"]["books"]
    except ray.exceptions.ActorUnavailableError:  # restarting
        return -1


def timer_running(handle: Any) -> bool:
    try:
        return ray.get(handle.__ray_call__.remote(lambda self: self.timer_task is not None), timeout=30)
    except ray.exceptions.ActorUnavailableError:
        return False


def test_a_crashed_feed_is_wired_again_and_a_crashed_strategy_restarts_its_timer(
        ray_session: None, redis_url: str, tmp_path: Path) -> None:
    run = ClusterRun(restart_config(tmp_path, redis_url))
    run.start()
    try:
        wait_for(lambda: min(books_seen(run, "pa"), books_seen(run, "pb")) > 10, 30, "books for both strategies")
        assert run.supervise() == []  # nothing to do on a healthy cluster
        assert timer_running(run.strategies["pa"])

        # A feed crashes; Ray restarts it with no subscribers, stopped. The supervisor wires it again.
        feed = run.feeds["feed:paper:AAAUSDT"]
        ray.kill(feed, no_restart=False)
        restored: list[str] = []
        wait_for(lambda: "feed:paper:AAAUSDT" in restored, 30, "the supervisor to wire the restarted feed",
                 every=lambda: restored.extend(run.supervise()), interval=0.5)
        assert ray.get(feed.is_running.remote())
        after = books_seen(run, "pa")
        wait_for(lambda: books_seen(run, "pa") > after + 10, 20, "books from the restarted feed")

        # A strategy crashes: Ray restarts it; its timer runs again without the launcher's help.
        ray.kill(run.strategies["pa"], no_restart=False)
        wait_for(lambda: timer_running(run.strategies["pa"]), 30, "the restarted strategy's timer")
        wait_for(lambda: books_seen(run, "pa") > 10, 20, "books for the restarted strategy")
    finally:
        run.shutdown()
