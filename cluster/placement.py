"""Where each actor runs: symbols sharded over nodes by weight, strategies beside their feeds.

The plan is pure data computed from the config and the live node list, so it is
tested without Ray and printed by `python -m cluster status`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.config import ClusterConfig

SHARD_RESOURCE = "shard"


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    address: str
    capacity: float = 1.0  # relative share of symbols; the "shard" resource when nodes declare it
    is_head: bool = False


@dataclass
class FeedGroup:
    name: str  # the actor name, feed:<venue>:<symbol>[+<symbol>...]
    venue: str
    symbols: list[str]
    node_id: str


@dataclass
class PlacementPlan:
    feeds: list[FeedGroup] = field(default_factory=list)
    strategies: dict[str, str] = field(default_factory=dict)  # strategy name -> node id
    strategy_anchor: dict[str, str] = field(default_factory=dict)  # strategy name -> the symbol it sits beside
    head_node: str = ""

    def symbol_nodes(self) -> dict[str, str]:
        return {s: g.node_id for g in self.feeds for s in g.symbols}

    def feed_of(self, symbol: str) -> FeedGroup:
        for g in self.feeds:
            if symbol in g.symbols:
                return g
        raise KeyError(symbol)


def feed_actor_name(venue: str, symbols: list[str]) -> str:
    return f"feed:{venue}:{'+'.join(symbols)}"


def plan_placement(cfg: ClusterConfig, nodes: list[NodeInfo]) -> PlacementPlan:
    """Greedy longest-processing-time sharding: heaviest feed group to the least loaded node (load / capacity)."""
    if not nodes:
        raise ValueError("no Ray nodes are alive")
    head = next((n for n in nodes if n.is_head), nodes[0])
    workers = [n for n in nodes if n.capacity > 0] or [head]
    groups: list[tuple[str, list[str], float]] = []
    per = cfg.feeds.symbols_per_actor
    by_venue: dict[str, list[str]] = {}
    for s in cfg.symbols:
        by_venue.setdefault(s.venue, []).append(s.symbol)
    weights = {s.symbol: s.weight for s in cfg.symbols}
    for venue, syms in by_venue.items():
        for i in range(0, len(syms), per):
            chunk = syms[i:i + per]
            groups.append((venue, chunk, sum(weights[s] for s in chunk)))
    load = {n.node_id: 0.0 for n in workers}
    cap = {n.node_id: n.capacity for n in workers}
    plan = PlacementPlan(head_node=head.node_id)
    order = sorted(range(len(groups)), key=lambda i: (-groups[i][2], i))
    placed: dict[int, str] = {}
    for i in order:
        _venue, _chunk, w = groups[i]
        node = min(workers, key=lambda n: ((load[n.node_id] + w) / cap[n.node_id], n.node_id))
        load[node.node_id] += w
        placed[i] = node.node_id
    for i, (venue, chunk, _w) in enumerate(groups):
        plan.feeds.append(FeedGroup(feed_actor_name(venue, chunk), venue, chunk, placed[i]))
    nodes_of = plan.symbol_nodes()
    for st in cfg.strategies:
        plan.strategy_anchor[st.name] = st.symbols[0]
        plan.strategies[st.name] = nodes_of[st.symbols[0]]
    return plan


def replan_lost(plan: PlacementPlan, nodes: list[NodeInfo], weights: dict[str, float]) -> PlacementPlan:
    """Keep every feed group whose node is alive; place the lost ones on the least loaded live nodes.

    Strategies follow the feed of their first symbol, as in `plan_placement`.
    """
    alive = {n.node_id: n for n in nodes}
    workers = [n for n in nodes if n.capacity > 0] or [alive[plan.head_node]]
    load = {n.node_id: 0.0 for n in workers}
    for g in plan.feeds:
        if g.node_id in load:
            load[g.node_id] += sum(weights.get(s, 1.0) for s in g.symbols)
    new = PlacementPlan(head_node=plan.head_node)
    for g in plan.feeds:
        node_id = g.node_id
        if node_id not in alive:
            w = sum(weights.get(s, 1.0) for s in g.symbols)
            node = min(workers, key=lambda n: ((load[n.node_id] + w) / n.capacity, n.node_id))
            load[node.node_id] += w
            node_id = node.node_id
        new.feeds.append(FeedGroup(g.name, g.venue, list(g.symbols), node_id))
    nodes_of = new.symbol_nodes()
    new.strategy_anchor = dict(plan.strategy_anchor)
    for name, symbol in plan.strategy_anchor.items():
        new.strategies[name] = nodes_of[symbol]
    return new
