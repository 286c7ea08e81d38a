"""`feeds.transport: compiled`: books reach the strategies through each feed actor's Ray Compiled Graph.

A strategy joins the graph of one feed actor; one that reads two feed actors (an actor takes part in
one graph at a time) gets the other feed's books by actor calls. Orders still go through risk
to the gateway. Killing a member strategy does not stop the feed serving the other one, and the
restarted strategy gets books again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray

from cluster.config import parse_config
from cluster.launch import ClusterRun
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.ray]


def compiled_config(tmp_path: Path, redis_url: str) -> Any:
    symbols = [{"symbol": s, "venue": "paper", "price": p, "tick_size": 0.01, "lot_size": 0.0001}
               for s, p in (("AAAUSDT", 100.0), ("BBBUSDT", 50.0))]
    return parse_config({
        "cluster": {"name": "compiled", "data_dir": str(tmp_path / "runs")},
        "redis": {"url": redis_url},
        "api": {"enabled": False},
        "market": {"source": "builtin", "seed": 5, "updates_per_second": 50.0},
        "feeds": {"symbols_per_actor": 1, "transport": "compiled"},
        "symbols": symbols,
        "strategies": [
            {"name": "pa", "type": "latency_probe", "symbols": ["AAAUSDT"], "params": {"every_n": 5}},
            {"name": "pb", "type": "latency_probe", "symbols": ["BBBUSDT"], "params": {"every_n": 5}},
            {"name": "both", "type": "latency_probe", "symbols": ["AAAUSDT", "BBBUSDT"], "params": {"every_n": 50}},
        ],
        "risk": {"defaults": {"max_order_notional": 1e6, "max_orders_per_min": 100000, "max_orders_per_s": 1000,
                              "max_cancels_per_min": 100000, "max_cancels_per_s": 1000, "max_open_orders": 1000,
                              "price_collar_bps": 10000.0}},
    })


def books_seen(run: ClusterRun, name: str) -> int:
    try:
        return ray.get(run.strategies[name].stats.remote(), timeout=30)["counters"]["books"]
    except ray.exceptions.ActorUnavailableError:  # restarting
        return 0



def test_compiled_graph_delivers_and_survives_a_member_kill(ray_session: None, redis_url: str,
                                                            tmp_path: Path) -> None:
    run = ClusterRun(compiled_config(tmp_path, redis_url))
    run.start()
    try:
        feed_a, feed_b = run.feeds["feed:paper:AAAUSDT"], run.feeds["feed:paper:BBBUSDT"]
        state_a, state_b = ray.get([feed_a.transport_state.remote(), feed_b.transport_state.remote()])
        assert "strategy:pa" in state_a["compiled_members"] and "strategy:pb" in state_b["compiled_members"]
        # `both` reads two feed actors and an actor takes part in one graph at a time: it joins one
        # feed's graph and gets the other feed's books by actor calls. The paper gateway gets books inline.
        assert sorted([state_a["channels"]["strategy:both"], state_b["channels"]["strategy:both"]]) == [
            "compiled", "object_store"]
        assert state_a["channels"]["gateway:paper"] == state_b["channels"]["gateway:paper"] == "inline"

        wait_for(lambda: min(books_seen(run, n) for n in ("pa", "pb", "both")) > 20, 30, "books for every strategy")
        gw = run.gateways["paper"]
        ray.get(gw.tick_to_order.remote(True))
        wait_for(lambda: len(ray.get(gw.tick_to_order.remote())) >= 5, 30, "approved probe orders at the gateway")

        # Kill a graph member: the other feed's member keeps its books, the killed one comes back and gets books.
        ray.kill(run.strategies["pa"], no_restart=False)
        before_b = books_seen(run, "pb")
        wait_for(lambda: books_seen(run, "pb") > before_b + 50, 20, "pb to keep getting books")
        wait_for(lambda: books_seen(run, "pa") > 20, 40, "the restarted pa to get books again")
        state_a = ray.get(feed_a.transport_state.remote())
        assert state_a["compiled_failures"] >= 1 and state_a["compiled_error"]
        # After the back-off the graph is compiled again with the restarted actor.
        wait_for(lambda: "strategy:pa" in ray.get(feed_a.transport_state.remote())["compiled_members"], 30,
                 "the graph to be compiled again")
        after = books_seen(run, "pa")
        wait_for(lambda: books_seen(run, "pa") > after + 20, 20, "pa to get books through the new graph")
    finally:
        run.shutdown()
