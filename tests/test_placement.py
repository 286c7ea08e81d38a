from __future__ import annotations

from pathlib import Path

import msgspec
import yaml

from cluster.config import parse_config
from cluster.placement import NodeInfo, plan_placement

REPO = Path(__file__).resolve().parents[1]


def cfg_with(symbols: list[tuple[str, float]], per_actor: int = 1):
    data = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    data["symbols"] = [{"symbol": s, "venue": "paper", "weight": w} for s, w in symbols]
    data["feeds"]["symbols_per_actor"] = per_actor
    data["strategies"] = []
    data["risk"] = {}
    return parse_config(data)


def test_single_node_gets_everything():
    cfg = cfg_with([("AAA", 1), ("BBB", 1)])
    plan = plan_placement(cfg, [NodeInfo("n1", "a", is_head=True)])
    assert plan.symbol_nodes() == {"AAA": "n1", "BBB": "n1"}
    assert [g.name for g in plan.feeds] == ["feed:paper:AAA", "feed:paper:BBB"]


def test_weights_balance_over_nodes_and_capacity():
    cfg = cfg_with([("AAA", 4), ("BBB", 2), ("CCC", 2), ("DDD", 1), ("EEE", 1)])
    nodes = [NodeInfo("n1", "a", is_head=True), NodeInfo("n2", "b"), NodeInfo("n3", "c")]
    plan = plan_placement(cfg, nodes)
    load = {n.node_id: 0.0 for n in nodes}
    weights = {s.symbol: s.weight for s in cfg.symbols}
    for sym, node in plan.symbol_nodes().items():
        load[node] += weights[sym]
    assert sorted(load.values()) == [3.0, 3.0, 4.0]
    # A node with twice the capacity takes about twice the weight.
    plan = plan_placement(cfg_with([(f"S{i:02d}", 1) for i in range(9)]),
                          [NodeInfo("big", "a", capacity=2.0, is_head=True), NodeInfo("small", "b", capacity=1.0)])
    counts = list(plan.symbol_nodes().values())
    assert counts.count("big") == 6 and counts.count("small") == 3


def test_groups_and_strategies_follow_their_first_symbol():
    data = msgspec.to_builtins(cfg_with([("AAA", 1), ("BBB", 1), ("CCC", 1)], per_actor=2))
    data["strategies"] = [{"name": "x", "type": "market_maker", "symbols": ["CCC", "AAA"]}]
    cfg = parse_config(data)
    plan = plan_placement(cfg, [NodeInfo("n1", "a", is_head=True), NodeInfo("n2", "b")])
    assert [g.symbols for g in plan.feeds] == [["AAA", "BBB"], ["CCC"]]
    assert plan.strategies["x"] == plan.symbol_nodes()["CCC"]


def test_adding_a_node_spreads_symbols_onto_it():
    cfg = cfg_with([(f"S{i}", 1) for i in range(6)])
    one = plan_placement(cfg, [NodeInfo("n1", "a", is_head=True)])
    two = plan_placement(cfg, [NodeInfo("n1", "a", is_head=True), NodeInfo("n2", "b")])
    assert set(one.symbol_nodes().values()) == {"n1"}
    assert list(two.symbol_nodes().values()).count("n2") == 3


def test_lost_node_groups_move_and_strategies_follow():
    from cluster.placement import replan_lost

    data = msgspec.to_builtins(cfg_with([("AAA", 1), ("BBB", 1), ("CCC", 1), ("DDD", 1)]))
    data["strategies"] = [{"name": "x", "type": "market_maker", "symbols": ["BBB"]},
                          {"name": "y", "type": "market_maker", "symbols": ["AAA"]}]
    cfg = parse_config(data)
    nodes = [NodeInfo("h", "a", capacity=0.0, is_head=True), NodeInfo("n1", "b"), NodeInfo("n2", "c")]
    plan = plan_placement(cfg, nodes)
    assert set(plan.symbol_nodes().values()) == {"n1", "n2"}, "the head has no shard capacity"
    lost = plan.symbol_nodes()["BBB"]
    survivor = "n1" if lost == "n2" else "n2"
    new = replan_lost(plan, [n for n in nodes if n.node_id != lost], {s.symbol: 1.0 for s in cfg.symbols})
    assert set(new.symbol_nodes().values()) == {survivor}
    unchanged = [s for s, n in plan.symbol_nodes().items() if n == survivor]
    assert all(new.symbol_nodes()[s] == survivor for s in unchanged)
    assert new.strategies["x"] == survivor and new.strategies["y"] == survivor
