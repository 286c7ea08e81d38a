"""Three Ray nodes simulated on one machine: placement follows the plan, strategies sit beside their
feeds, and a lost node's symbols move to a live node and keep trading with positions intact."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import yaml
from ray.cluster_utils import Cluster

from cluster.config import parse_config
from cluster.launch import ClusterRun
from cluster.portfolio import Portfolio
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


@pytest.fixture()
def three_nodes():
    if ray.is_initialized():
        ray.shutdown()  # the shared single-node Ray; the next test that needs it starts it again
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True})
    workers = [c.add_node(num_cpus=1, resources={"shard": 1}) for _ in range(2)]
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


def test_symbols_sharded_pinned_and_moved_off_a_lost_node(three_nodes, redis_url, tmp_path):
    c, workers = three_nodes
    data = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    data["cluster"] = {"name": "multi", "data_dir": str(tmp_path / "runs")}
    data["redis"] = {"url": redis_url}
    data["ray"] = {"address": c.address}
    data["strategies"] = [{"name": f"mm_{s['symbol'].lower()}", "type": "market_maker", "symbols": [s["symbol"]],
                           "params": {"order_qty_notional": 1000.0, "max_position_notional": 5000.0}}
                          for s in data["symbols"]]
    data["risk"]["strategies"] = {s["name"]: {"max_orders_per_min": 1200} for s in data["strategies"]}
    cfg = parse_config(data)
    ray.init(address=c.address, namespace="rsc-multi", logging_level="WARNING")
    run = ClusterRun(cfg)
    run.start()
    try:
        worker_ids = {w.node_id for w in workers}
        plan = run.plan
        nodes_of = plan.symbol_nodes()
        assert set(nodes_of.values()) == worker_ids, "symbols spread over both shard nodes, none on the head"
        assert list(nodes_of.values()).count(workers[0].node_id) == 2
        for name, handle in run.feeds.items():
            assert ray.get(handle.node_id.remote()) == next(g.node_id for g in plan.feeds if g.name == name)
        for st in cfg.strategies:
            assert ray.get(run.strategies[st.name].node_id.remote()) == nodes_of[st.symbols[0]], \
                f"{st.name} must sit beside the feed of {st.symbols[0]}"
        assert ray.get(run.risk.node_id.remote()) == plan.head_node

        # What the Ray dashboard shows, through Ray's State API: every actor alive under its name, on its node.
        from ray.util.state import list_actors

        listed = {a.name: a.node_id for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)}
        for name in run.all_actors():
            assert name in listed, f"{name} not shown by the State API"
        for g in plan.feeds:
            assert listed[g.name] == g.node_id

        wait_for(lambda: len({f.symbol for f in run.store.journal_fills()}) == 4, 60, "fills on every symbol")

        lost = workers[1].node_id
        lost_symbols = [s for s, n in nodes_of.items() if n == lost]
        c.remove_node(workers[1])
        moved: list[str] = []
        wait_for(lambda: bool(moved), 90, "the lost node's actors to move",
                 every=lambda: moved.extend(run.supervise()))
        assert {f"feed:paper:{s}" for s in lost_symbols} <= set(moved)
        assert set(run.plan.symbol_nodes().values()) == {workers[0].node_id}

        counts = {s: sum(1 for f in run.store.journal_fills() if f.symbol == s) for s in lost_symbols}
        wait_for(lambda: all(sum(1 for f in run.store.journal_fills() if f.symbol == s) > counts[s]
                             for s in lost_symbols), 150, "the moved symbols to trade again")
        # The gateway's execution reports reach the new strategy actors, not the dead ones it knew before.
        moved_strategies = [n for n in run.strategies if f"strategy:{n}" in moved]
        wait_for(lambda: all(ray.get(run.strategies[n].stats.remote())["counters"]["reports"] > 0
                             for n in moved_strategies), 60, "reports at the moved strategies")
    finally:
        run.shutdown()

    replay = Portfolio()
    for f in run.store.journal_fills():
        replay.apply_fill(f)
    stored = {(p.strategy, p.symbol): p.qty for p in run.store.positions()}
    for p in replay.positions():
        assert stored[(p.strategy, p.symbol)] == pytest.approx(p.qty, abs=1e-9)
