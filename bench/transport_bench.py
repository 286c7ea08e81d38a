"""How book updates should reach strategies: measured, not guessed.

Options, each delivering a 10-level BookUpdate from a feed actor to K strategy actors:
  inline      one actor call per subscriber with the update as an argument
  put_fanout  one ray.put, the same ObjectRef passed to every subscriber, which resolves it
  compiled    a Ray Compiled Graph (feed -> subscribers), the update written into its channels
"""

from __future__ import annotations

import asyncio
import os
import time

import ray

from bench.common import percentiles_us, write_result
from cluster.messages import BookUpdate


def make_update(seq: int) -> BookUpdate:
    return BookUpdate(venue="paper", symbol="BTCUSDT", seq=seq, bids=[(100.0 - i * 0.1, 1.0 + i) for i in range(10)],
                      asks=[(100.1 + i * 0.1, 1.0 + i) for i in range(10)], receive_ts_ns=time.time_ns())


@ray.remote(num_cpus=0)
class Subscriber:
    def __init__(self) -> None:
        self.n = 0

    async def on_inline(self, update: BookUpdate) -> int:
        self.n += 1
        return update.seq

    async def on_ref(self, refs: list) -> int:
        update = await refs[0]
        self.n += 1
        return update.seq

    def on_compiled(self, update: BookUpdate) -> int:
        self.n += 1
        return update.seq


@ray.remote(num_cpus=0)
class Publisher:
    def __init__(self, subs: list) -> None:
        self.subs = subs

    async def run(self, mode: str, n: int) -> list[int]:
        samples = []
        for i in range(n):
            u = make_update(i)
            t = time.perf_counter_ns()
            if mode == "inline":
                await asyncio.gather(*[s.on_inline.remote(u) for s in self.subs])
            else:
                ref = ray.put(u)
                await asyncio.gather(*[s.on_ref.remote([ref]) for s in self.subs])
            samples.append(time.perf_counter_ns() - t)
        return samples


def _member_cpu_cores(subs: list, seconds: float) -> float:
    """CPU the subscribers' processes use over `seconds` while nothing is sent (a graph member's reader)."""
    import psutil

    procs = [psutil.Process(p) for p in ray.get([s.__ray_call__.remote(lambda self: os.getpid()) for s in subs])]

    def used() -> float:
        return sum(t.user + t.system for t in (p.cpu_times() for p in procs))

    before = used()
    time.sleep(seconds)
    return round((used() - before) / seconds, 3)


def compiled_samples(subs: list, n: int, idle: dict | None = None) -> list[int] | str:
    """Round trips through a compiled graph; `idle` gets the members' CPU while the graph waits for input."""
    try:
        from ray.dag import InputNode, MultiOutputNode

        with InputNode() as inp:
            dag = MultiOutputNode([s.on_compiled.bind(inp) for s in subs])
        cdag = dag.experimental_compile()
    except Exception as exc:  # not every Ray build supports compiled graphs here
        return f"unavailable: {type(exc).__name__}: {exc}"
    samples = []
    try:
        for i in range(n):
            u = make_update(i)
            t = time.perf_counter_ns()
            ray.get(cdag.execute(u))
            samples.append(time.perf_counter_ns() - t)
        if idle is not None:
            idle["compiled"] = _member_cpu_cores(subs, 3.0)
    finally:
        cdag.teardown()
    if idle is not None:
        idle["actor_calls"] = _member_cpu_cores(subs, 3.0)
    return samples


def run(n: int = 1000) -> dict:
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    out: dict = {}
    try:
        for k in (1, 4):
            subs = [Subscriber.remote() for _ in range(k)]
            pub = Publisher.remote(subs)
            ray.get(pub.run.remote("inline", 20))
            for mode in ("inline", "put_fanout"):
                out[f"{mode}_k{k}"] = percentiles_us(ray.get(pub.run.remote(mode, n)))
            idle: dict = {}
            comp = compiled_samples(subs, n, idle)
            out[f"compiled_k{k}"] = comp if isinstance(comp, str) else percentiles_us(comp)
            # In Ray 2.60 a graph member's reader thread busy-polls its channel: the price of the fast hop.
            out[f"idle_subscribers_cpu_cores_k{k}"] = idle
            for a in [pub, *subs]:
                ray.kill(a)
    finally:
        if started:
            ray.shutdown()
    for name, r in out.items():
        if name.startswith("idle_"):
            print(f"transport {name:<16} {r}")
            continue
        print(f"transport {name:<16} " + (r if isinstance(r, str) else f"p50 {r['p50_us']:>8} us  p99 {r['p99_us']:>8} us"))
    return out


def main() -> None:
    write_result("transport", {"delivery_round_trip": run()})


if __name__ == "__main__":
    main()
