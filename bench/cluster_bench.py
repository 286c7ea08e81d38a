"""The headline figures of the cluster (`make bench ARGS=cluster`, writes bench/results/cluster.json).

- tick-to-order: a market message reaching its feed actor -> the approved order reaching the gateway,
  through the real path (feed -> strategy -> risk -> gateway), at 1, 8 and 32 symbols with 100 updates/s
  each, and in the same run a plain three-hop Ray actor chain passing the same messages, and the same
  chain as a Ray Compiled Graph (the floor of each transport on this machine);
- throughput: book updates per second processed as symbols grow, and CPU per symbol;
- the tick-to-order figures again with the symbols spread over 3 simulated nodes.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import ray

from bench.common import percentiles_us, write_result
from cluster.config import parse_config
from cluster.launch import ClusterRun
from cluster.redis_server import EmbeddedRedis

REPO = Path(__file__).resolve().parents[1]
PRICES = [60000.0, 3000.0, 150.0, 600.0]


def bench_config(n_symbols: int, updates_per_s: float, redis_url: str, data_dir: str, probe: bool,
                 max_feed_actors: int = 4, address: str = "", transport: str = "object_store",
                 replay_path: str = "") -> Any:
    symbols = [{"symbol": f"S{i:03d}USDT", "venue": "paper", "price": PRICES[i % 4], "tick_size": 0.01,
                "lot_size": 0.0001, "volatility": 0.5} for i in range(n_symbols)]
    strategies = []
    if probe:
        # One probe per feed group, each pinned beside its feed: probes see 1/every_n of the updates.
        per = math.ceil(n_symbols / min(max_feed_actors, n_symbols))
        for g in range(0, n_symbols, per):
            strategies.append({"name": f"probe{g}", "type": "latency_probe",
                               "symbols": [s["symbol"] for s in symbols[g:g + per]],
                               "params": {"every_n": 20}})
    data = {
        "cluster": {"name": f"bench{n_symbols}", "data_dir": data_dir},
        "ray": {"address": address},
        "redis": {"url": redis_url},
        "api": {"enabled": False},
        "market": ({"source": "replay", "replay_path": replay_path, "replay_speed": 1.0} if replay_path
                   else {"source": "builtin", "seed": 3, "updates_per_second": updates_per_s}),
        "feeds": {"symbols_per_actor": math.ceil(n_symbols / min(max_feed_actors, n_symbols)), "transport": transport},
        "symbols": symbols,
        "strategies": strategies,
        "risk": {"defaults": {"max_order_notional": 1e6, "max_orders_per_min": 100000, "max_orders_per_s": 10000,
                              "max_cancels_per_min": 100000, "max_cancels_per_s": 10000, "max_open_orders": 100000,
                              "price_collar_bps": 10000.0},
                 "max_drawdown_pct": None, "stop_loss_atr": None},
    }
    return parse_config(data)


def _pids(handles: list[Any]) -> list[int]:
    return ray.get([h.__ray_call__.remote(lambda self: os.getpid()) for h in handles])


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def tick_to_order(n_symbols: int, redis_url: str, tmp: str, seconds: float, address: str = "",
                  transport: str = "object_store", max_feed_actors: int = 4) -> dict[str, Any]:
    cfg = bench_config(n_symbols, 100.0, redis_url, tmp, probe=True, address=address, transport=transport,
                       max_feed_actors=max_feed_actors)
    run = ClusterRun(cfg)
    run.start()
    try:
        time.sleep(3.0)
        gw = run.gateways["paper"]
        pids = _pids(list(run.all_actors().values()))
        ray.get(gw.tick_to_order.remote(True))
        cpu0, t0 = _cpu_seconds(pids), time.monotonic()
        time.sleep(seconds)
        samples = ray.get(gw.tick_to_order.remote(True))
        cpu = (_cpu_seconds(pids) - cpu0) / (time.monotonic() - t0)
    finally:
        run.shutdown()
    out = percentiles_us(samples) if samples else {"n": 0}
    out["orders_per_s"] = round(len(samples) / seconds, 1)
    out["transport"] = transport
    out["feed_actors"] = min(max_feed_actors, n_symbols)
    out["actors_cpu_cores"] = round(cpu, 3)  # feeds, strategies, risk, gateway together
    return out


@ray.remote(num_cpus=0)
class Hop:
    """One hop of the baseline chain: forward the message, or record its age at the last hop."""

    def __init__(self, nxt: Any = None) -> None:
        self.nxt = nxt
        self.samples: list[int] = []

    async def on(self, msg: dict) -> None:
        if self.nxt is not None:
            await self.nxt.on.remote(msg)
        else:
            self.samples.append(time.time_ns() - msg["ts"])

    def take(self) -> list[int]:
        out, self.samples = self.samples, []
        return out


def three_hop_baseline(rate_per_s: float, seconds: float) -> dict[str, Any]:
    """The same kind of message (a 10-level book) through three plain actor calls, at the probes' order rate."""
    c = Hop.remote()
    b = Hop.remote(c)
    a = Hop.remote(b)
    book = {"bids": [[100.0 - i, 1.0] for i in range(10)], "asks": [[101.0 + i, 1.0] for i in range(10)]}
    ray.get(a.on.remote({**book, "ts": time.time_ns()}))
    ray.get(c.take.remote())
    interval = 1.0 / max(rate_per_s, 1.0)
    end = time.monotonic() + seconds
    pending = []
    while time.monotonic() < end:
        pending.append(a.on.remote({**book, "ts": time.time_ns()}))
        time.sleep(interval)
    ray.get(pending)
    samples = ray.get(c.take.remote())
    for h in (a, b, c):
        ray.kill(h)
    return percentiles_us(samples)


@ray.remote(num_cpus=0)
class CompiledHop:
    """One hop of the compiled baseline chain: pass the message on, or record its age at the last hop."""

    def __init__(self) -> None:
        self.samples: list[int] = []

    def forward(self, msg: dict) -> dict:
        return msg

    def last(self, msg: dict) -> int:
        self.samples.append(time.time_ns() - msg["ts"])
        return 0

    def take(self) -> list[int]:
        out, self.samples = self.samples, []
        return out


def three_hop_compiled_baseline(rate_per_s: float, seconds: float) -> dict[str, Any]:
    """The three-hop chain as a Ray Compiled Graph: the fastest hop Ray has, and what it costs.

    `idle_cpu_cores`: what the chain's three processes use while no message is sent (a graph
    member's reader waits by spinning in Ray 2.60); `cpu_cores`: what they use while passing messages.
    """
    from ray.dag import InputNode

    hops = [CompiledHop.remote() for _ in range(3)]
    pids = _pids(hops)
    try:
        with InputNode() as inp:
            dag = hops[2].last.bind(hops[1].forward.bind(hops[0].forward.bind(inp)))
        graph = dag.experimental_compile()
    except Exception as exc:  # not every Ray build supports compiled graphs here
        for h in hops:
            ray.kill(h)
        return {"error": f"{type(exc).__name__}: {exc}"}
    book = {"bids": [[100.0 - i, 1.0] for i in range(10)], "asks": [[101.0 + i, 1.0] for i in range(10)]}
    try:
        ray.get(graph.execute({**book, "ts": time.time_ns()}))
        cpu0, t0 = _cpu_seconds(pids), time.monotonic()
        time.sleep(2.0)
        idle = (_cpu_seconds(pids) - cpu0) / (time.monotonic() - t0)
        interval = 1.0 / max(rate_per_s, 1.0)
        end = time.monotonic() + seconds
        cpu0, t0 = _cpu_seconds(pids), time.monotonic()
        while time.monotonic() < end:
            ray.get(graph.execute({**book, "ts": time.time_ns()}))
            time.sleep(interval)
        busy = (_cpu_seconds(pids) - cpu0) / (time.monotonic() - t0)
    finally:
        graph.teardown()
    samples = ray.get(hops[2].take.remote())[1:]
    for h in hops:
        ray.kill(h)
    deadline = time.monotonic() + 10.0  # the readers spin until their process ends: wait, or the next run pays
    while any(psutil.pid_exists(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    out: dict[str, Any] = percentiles_us(samples) if samples else {"n": 0}
    out["idle_cpu_cores"] = round(idle, 3)
    out["cpu_cores"] = round(busy, 3)
    return out


def make_recording(n_symbols: int, updates_per_s: float, seconds: float, path: Path) -> Path:
    """The built-in market of `n_symbols` as a raw recording (what `feeds.record.raw` writes), made before timing.

    Replayed by the venue simulator at the recorded pace, the feeds then do only what they do against
    a real venue (WebSocket receive, parse, sync, book, deliver): the market's own simulation, which
    costs more per update than all of that, is not on the two cores while they are measured.
    """
    from gateways.recording import RawRecorder
    from gateways.sim_feed import SimulatedFeed

    cfg = bench_config(n_symbols, updates_per_s, "redis://unused", str(path.parent), probe=False)
    dt = 1.0 / updates_per_s
    with RawRecorder(path) as rec:
        feeds = [SimulatedFeed("paper", s, cfg.market, cfg.feeds.book_depth, recorder=rec) for s in cfg.symbols]
        t_ns = time.time_ns()
        for _ in range(int(seconds * updates_per_s)):
            t_ns += int(dt * 1e9)
            for f in feeds:
                f.step(dt, t_ns)
    return path


def throughput(n_symbols: int, redis_url: str, tmp: str, seconds: float, updates_per_s: float,
               replay: bool = False) -> dict[str, Any]:
    """Book updates applied per second by the feed actors, and their CPU; `replay`: from a recording over sockets."""
    replay_path = ""
    if replay:
        replay_path = str(make_recording(n_symbols, updates_per_s, seconds + 6.0,
                                         Path(tmp) / f"replay-{n_symbols}.jsonl.gz"))
    cfg = bench_config(n_symbols, updates_per_s, redis_url, tmp, probe=False, replay_path=replay_path)
    run = ClusterRun(cfg)
    run.start()
    try:
        time.sleep(4.0 if replay else 2.0)
        feeds = list(run.feeds.values())
        pids = _pids(feeds)
        sim_pid = [run.market_sim.proc.pid] if run.market_sim is not None and run.market_sim.proc else []
        sim0 = _cpu_seconds(sim_pid)
        before = sum(sum(s.get("applied", 0) for s in st.values()) for st in ray.get([f.stats.remote() for f in feeds]))
        cpu0 = _cpu_seconds(pids)
        t0 = time.monotonic()
        time.sleep(seconds)
        after = sum(sum(s.get("applied", 0) for s in st.values()) for st in ray.get([f.stats.remote() for f in feeds]))
        cpu1 = _cpu_seconds(pids)
        elapsed = time.monotonic() - t0
        sim_cpu = (_cpu_seconds(sim_pid) - sim0) / elapsed
    finally:
        run.shutdown()
    rate = (after - before) / elapsed
    cpu = (cpu1 - cpu0) / elapsed
    return {"symbols": n_symbols, "source": "replay over WebSocket" if replay else "built-in market in the feed actors",
            "feed_actors": len(feeds), "offered_updates_per_s": n_symbols * updates_per_s,
            "book_updates_per_s": round(rate, 1), "feed_cpu_cores": round(cpu, 3),
            "cpu_us_per_update": round(cpu / rate * 1e6, 1) if rate else None,
            "cpu_per_symbol_cores": round(cpu / n_symbols, 5),
            "venue_simulator_cpu_cores": round(sim_cpu, 3) if sim_pid else None}


def multinode_tick_to_order(redis_url: str, tmp: str, seconds: float) -> dict[str, Any]:
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        c.add_node(num_cpus=1, resources={"shard": 1})
    c.wait_for_nodes()
    ray.init(address=c.address, namespace="rsc-bench", logging_level="ERROR")
    try:
        return tick_to_order(8, redis_url, tmp, seconds, address=c.address)
    finally:
        ray.shutdown()
        c.shutdown()


def run(seconds: float = 8.0) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="rsc-bench-")
    redis = EmbeddedRedis(Path(tmp) / "redis")
    redis.start()
    result: dict[str, Any] = {"tick_to_order": {}, "baseline_three_hop": {}, "baseline_three_hop_compiled": {},
                              "throughput": [],
                              "target": {"tick_to_order_8_symbols": {"p50_us": 1500, "p99_us": 5000}}}
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", namespace="rsc-bench")
        for n in (1, 8, 32):
            r = tick_to_order(n, redis.url, tmp, seconds)
            base = three_hop_baseline(r.get("orders_per_s", 10.0), seconds)
            comp = three_hop_compiled_baseline(r.get("orders_per_s", 10.0), seconds)
            result["tick_to_order"][str(n)] = r
            result["baseline_three_hop"][str(n)] = base
            result["baseline_three_hop_compiled"][str(n)] = comp
            ratio = r.get("p50_us", math.nan) / base["p50_us"] if base.get("p50_us") else math.nan
            print(f"tick-to-order {n:>3} symbols: p50 {r.get('p50_us')} us  p99 {r.get('p99_us')} us  "
                  f"p99.9 {r.get('p999_us')} us  ({r['orders_per_s']} orders/s, actors use {r['actors_cpu_cores']} "
                  f"cores); three-hop chain p50 "
                  f"{base['p50_us']} us -> ratio {ratio:.2f}; compiled three-hop chain p50 {comp.get('p50_us')} us, "
                  f"{comp.get('idle_cpu_cores')} cores while idle", flush=True)
        # The default transport is `object_store`; the other two at 1 and 8 symbols, in the same run.
        for transport in ("compiled", "inline"):
            for n in (1, 8):
                other = tick_to_order(n, redis.url, tmp, seconds, transport=transport)
                result[f"tick_to_order_{n}_symbols_{transport}_transport"] = other
                ratio = other.get("p50_us", math.nan) / result["tick_to_order"][str(n)].get("p50_us", math.nan)
                print(f"tick-to-order {n:>3} symbols, {transport} transport: p50 {other.get('p50_us')} us  "
                      f"p99 {other.get('p99_us')} us, actors use {other['actors_cpu_cores']} cores "
                      f"({ratio:.2f}x the object_store p50)", flush=True)
        # Fewer, larger feed groups: one put and one call per subscriber per batch, whatever its size.
        grouped = tick_to_order(8, redis.url, tmp, seconds, max_feed_actors=1)
        result["tick_to_order_8_symbols_one_feed_actor"] = grouped
        ratio = grouped.get("p50_us", math.nan) / result["tick_to_order"]["8"].get("p50_us", math.nan)
        print(f"tick-to-order   8 symbols in one feed actor: p50 {grouped.get('p50_us')} us  p99 {grouped.get('p99_us')} us, "
              f"actors use {grouped['actors_cpu_cores']} cores ({ratio:.2f}x the 4-feed-actor p50)", flush=True)
        for replay, key in ((True, "throughput"), (False, "throughput_builtin_market")):
            result[key] = []
            for n in (1, 8, 32, 128):
                t = throughput(n, redis.url, tmp, seconds, updates_per_s=50.0, replay=replay)
                result[key].append(t)
                print(f"{key} {n:>3} symbols: {t['book_updates_per_s']:>8} updates/s of {t['offered_updates_per_s']} "
                      f"offered, {t['cpu_us_per_update']} us CPU/update, {t['cpu_per_symbol_cores']} cores/symbol",
                      flush=True)
            per_update = [t["cpu_us_per_update"] for t in result[key] if t["cpu_us_per_update"]]
            result[f"{key}_cpu_per_update_growth"] = round(per_update[-1] / per_update[0], 2) if per_update else None
        ray.shutdown()
        mn = multinode_tick_to_order(redis.url, tmp, seconds)
        result["multinode_3_nodes_8_symbols"] = mn
        print(f"tick-to-order 8 symbols on 3 simulated nodes: p50 {mn.get('p50_us')} us  p99 {mn.get('p99_us')} us",
              flush=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        redis.stop()
    result["medians_note"] = ("all processes share one 2-core machine: feeds, strategies, risk, gateway, Redis "
                              "and Ray's own daemons")
    return result


def main() -> None:
    write_result("cluster", run())


if __name__ == "__main__":
    main()
