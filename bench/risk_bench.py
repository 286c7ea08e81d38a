"""Risk decisions per second and decision time: the check logic in-process, and through the risk actor.

in_process:               `RiskEngine.check` with every control configured (collar, sizes, lot and min notional,
                          trading states, schedules, duplicates, rates, open orders, self-trade, position and
                          gross/net exposure limits) and every order passing all of them (the longest path).
                          Throughput is the median of ROUNDS timed rounds (the machine's two cores are shared, so
                          one long loop measures the neighbours as much as the engine); `cpu_decisions_per_s` is
                          per second of this process's CPU time, `single_loop_per_s` one untimed loop as before.
in_process_with_reserve:  check + order + reservation + release (a terminal report), the full life of a limit.
through_actor:            a small Ray (num_cpus=2), the real RiskActor with a real Redis (controls read in the
                          background, audit written behind), a stub `gateway:paper` that accepts every order, and
                          N strategy-like actors submitting intents concurrently; times are per intent as the
                          strategy sees them. `floor_echo` is the same load against an actor that only answers
                          (no risk, no gateway hop): what Ray's calls cost on this machine.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.common import percentiles_us, write_result
from cluster.config import RiskLimits, RiskSection, SymbolSection
from cluster.messages import ExecutionReport, OrderIntent, OrderStatus, Side
from risk.engine import RiskEngine
from risk.limits import DefaultLimits, ScheduleWindow
from risk.trading_state import TradingState, TradingStatus

BIG = 1e12
ROUNDS = 10


def all_controls(symbols: list[str]) -> RiskSection:
    """Every control on, each loose enough that the bench's orders pass all of them."""
    defaults = DefaultLimits(max_order_qty=1e6, max_order_notional=1e9, min_order_notional=1.0, price_collar_bps=500,
                             max_slippage_bps=50, max_position_qty=1e9, max_position_notional=BIG,
                             max_gross_exposure=BIG, max_net_exposure=BIG, max_orders_per_s=1e9,
                             max_orders_per_min=1e9, max_cancels_per_s=1e9, max_open_orders=1e9,
                             duplicate_window_s=0.5, daily_loss_limit=1e9)
    pause = ScheduleWindow(name="maintenance", scope="venue:paper", kind="pause", timezone="America/New_York",
                           start="sun 03:00", end="sun 03:01")
    return RiskSection(defaults=defaults, venues={"paper": RiskLimits(max_orders_per_s=1e9, max_open_orders=1e9)},
                       strategies={f"st{i}": RiskLimits(max_position_qty=1e9, max_gross_exposure=BIG) for i in range(4)},
                       symbols={s: RiskLimits(max_position_qty=1e9) for s in symbols[:8]}, schedules=[pause])


def make_engine(n_symbols: int = 32) -> tuple[RiskEngine, list[SymbolSection], int]:
    symbols = [SymbolSection(symbol=f"S{i:03d}", venue="paper", price=100.0, lot_size=0.001, tick_size=0.01)
               for i in range(n_symbols)]
    eng = RiskEngine(all_controls([s.symbol for s in symbols]), symbols, ["paper"])
    now = time.time_ns()
    for s in symbols:
        eng.set_mark(s.symbol, 100.0, now)
    eng.set_kill_switch("strategy:someone-else", True)
    eng.set_trading_state("strategy:other", TradingStatus(state=TradingState.REDUCING, reason="bench"))
    return eng, symbols, now


def bench_check(n: int) -> dict[str, Any]:
    eng, symbols, now = make_engine()
    intents = [OrderIntent(strategy=f"st{i % 4}", venue="paper", symbol=symbols[i % 32].symbol,
                           side=Side.BUY if i % 2 else Side.SELL, qty=1.0,
                           price=99.0 if i % 2 else 101.0) for i in range(1024)]
    assert all(eng.check(i, now).approved for i in intents), "the bench must exercise the full path"
    clock = time.perf_counter_ns
    check = eng.check
    t0 = clock()  # throughput: a tight loop, no timer calls between decisions
    for k in range(n):
        check(intents[k & 1023], now)
    total_s = (clock() - t0) / 1e9
    per_round = n // ROUNDS
    rates, cpu_ns = [], 0
    for _ in range(ROUNDS):  # the same loop in rounds: the median round is robust to a busy neighbour
        c0, t0 = time.process_time_ns(), clock()
        for k in range(per_round):
            check(intents[k & 1023], now)
        rates.append(per_round / ((clock() - t0) / 1e9))
        cpu_ns += time.process_time_ns() - c0
    samples = [0] * n  # latency: each decision timed on its own
    for k in range(n):
        a = clock()
        check(intents[k & 1023], now)
        samples[k] = clock() - a
    return {"decisions_per_s": round(statistics.median(rates)), "best_round_per_s": round(max(rates)),
            "cpu_decisions_per_s": round(per_round * ROUNDS / (cpu_ns / 1e9)), "single_loop_per_s": round(n / total_s),
            **percentiles_us(samples[1000:])}


def bench_check_reserve(n: int) -> dict[str, Any]:
    eng, symbols, now = make_engine()
    eng.set_limits(msgspec.structs.replace(eng.limits, defaults=msgspec.structs.replace(
        eng.limits.defaults, duplicate_window_s=0.001)))  # a new order every microsecond of bench time
    samples = [0] * n
    clock = time.perf_counter_ns
    t0 = clock()
    for k in range(n):
        sym = symbols[k % 32].symbol
        side = Side.BUY if k % 2 else Side.SELL
        i = OrderIntent(strategy=f"st{k % 4}", venue="paper", symbol=sym, side=side, qty=1.0,
                        price=round((99.0 if k % 2 else 101.0) - (k % 997) * 0.001 * side.sign, 3))
        ts = now + k * 1000
        a = clock()
        d = eng.check(i, ts)
        o = eng.make_order(i, d, f"c{k}", ts)
        eng.reserve(o, ts)
        samples[k] = clock() - a
        if not d.approved:
            raise AssertionError(d)
        eng.on_report(ExecutionReport(client_order_id=o.client_order_id, strategy=o.strategy, venue="paper",
                                      symbol=sym, status=OrderStatus.CANCELED, side=side, order_qty=1.0))
    total_s = (clock() - t0) / 1e9
    return {"decisions_per_s": round(n / total_s), **percentiles_us(samples[1000:])}


# -- through the actor --------------------------------------------------------------------------------------------
def bench_actor(n_strategies: int = 4, per_strategy: int = 1500) -> dict[str, Any]:
    import ray

    from actors.risk import RiskActor
    from cluster.redis_server import EmbeddedRedis

    @ray.remote(num_cpus=0)
    class StubGateway:
        """Accepts every order; never fills (the bench measures decisions, not the venue)."""

        def __init__(self) -> None:
            self.n = 0

        async def submit(self, order: Any) -> bool:
            self.n += 1
            return True

        async def cancel(self, coid: str) -> bool:
            return True

        async def cancel_all(self, strategy: str | None = None) -> int:
            return 0

        def open_orders(self) -> list:
            return []

    @ray.remote(num_cpus=0)
    class Echo:
        """Answers at once: the floor of a decision's cost through one Ray call on this machine."""

        async def submit(self, intent: Any) -> bool:
            return True

    @ray.remote(num_cpus=0)
    class Submitter:
        """A strategy-like actor: sends intents one after another, as a strategy actor does."""

        def __init__(self, name: str, symbols: list[str]) -> None:
            self.name = name
            self.symbols = symbols

        async def run(self, n: int, first: int = 0, actor: str = "risk") -> tuple[list[int], int]:
            risk = ray.get_actor(actor)
            samples, approved = [], 0
            for k in range(first, first + n):
                side = Side.BUY if k % 2 else Side.SELL
                i = OrderIntent(strategy=self.name, venue="paper", symbol=self.symbols[k % len(self.symbols)],
                                side=side, qty=1.0, price=(99.0 if k % 2 else 101.0) - (k % 89) * 0.01 * side.sign)
                a = time.perf_counter_ns()
                d = await risk.submit.remote(i)
                samples.append(time.perf_counter_ns() - a)
                approved += int(d is True or getattr(d, "approved", False))
            return samples, approved

    tmp = Path(tempfile.mkdtemp(prefix="risk-bench-"))
    server = EmbeddedRedis(tmp)
    url = server.start()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=2, include_dashboard=False, namespace="rsc-bench", logging_level="ERROR")
    try:
        symbols = [SymbolSection(symbol=f"S{i:03d}", venue="paper", price=100.0, lot_size=0.001, tick_size=0.01)
                   for i in range(8)]
        section = all_controls([s.symbol for s in symbols])
        gw = StubGateway.options(name="gateway:paper").remote()
        risk = RiskActor.options(name="risk").remote(section, symbols, ["paper"], url, "bench")
        ray.get(risk.node_id.remote())
        from cluster.messages import MarkPrice

        ray.get(risk.on_marks.remote([MarkPrice(venue="paper", symbol=s.symbol, mid=100.0, ts_ns=time.time_ns())
                                      for s in symbols]))
        deadline = time.monotonic() + 30
        while "paper" not in ray.get(risk.status.remote())["ready_venues"]:
            if time.monotonic() > deadline:
                raise RuntimeError("risk never reconciled with the stub gateway")
            time.sleep(0.05)
        import threading

        stop = threading.Event()

        def feed_marks() -> None:  # as the feeds do: fresh reference prices every 250 ms
            while not stop.wait(0.25):
                risk.on_marks.remote([MarkPrice(venue="paper", symbol=s.symbol, mid=100.0, ts_ns=time.time_ns())
                                      for s in symbols])

        marker = threading.Thread(target=feed_marks, daemon=True)
        marker.start()
        subs = [Submitter.remote(f"st{i}", [s.symbol for s in symbols]) for i in range(n_strategies)]
        ray.get([s.run.remote(50) for s in subs])  # warm up (and refresh marks below)
        ray.get(risk.on_marks.remote([MarkPrice(venue="paper", symbol=s.symbol, mid=100.0, ts_ns=time.time_ns())
                                      for s in symbols]))
        t0 = time.perf_counter()
        results = ray.get([s.run.remote(per_strategy, 50) for s in subs])
        wall = time.perf_counter() - t0
        stop.set()
        reasons = ray.get(risk.status.remote())["decisions"]
        samples = [x for r in results for x in r[0]]
        approved = sum(r[1] for r in results)
        echo = Echo.options(name="echo").remote()
        ray.get([s.run.remote(50, 0, "echo") for s in subs])
        t0 = time.perf_counter()
        floor = ray.get([s.run.remote(per_strategy, 0, "echo") for s in subs])
        floor_wall = time.perf_counter() - t0
        floor_samples = [x for r in floor for x in r[0]]
        del gw, echo
        return {"strategies": n_strategies, "decisions": len(samples), "approved": approved, "by_reason": reasons,
                "decisions_per_s": round(len(samples) / wall), **percentiles_us(samples),
                "floor_echo": {"calls_per_s": round(len(floor_samples) / floor_wall),
                               "p50_us": percentiles_us(floor_samples)["p50_us"]}}
    finally:
        ray.shutdown()
        server.stop()


def run(n: int = 200_000, actor: bool = True) -> dict:
    result: dict[str, Any] = {"in_process": bench_check(n), "in_process_with_reserve": bench_check_reserve(n // 2)}
    ip = result["in_process"]
    print(f"risk in-process (all controls): {ip['decisions_per_s']:,} decisions/s (median of {ROUNDS} rounds; "
          f"{ip['cpu_decisions_per_s']:,} per CPU-second, one long loop {ip['single_loop_per_s']:,}/s), "
          f"p50 {ip['p50_us']} us, p99 {ip['p99_us']} us")
    rv = result["in_process_with_reserve"]
    print(f"risk in-process check+reserve+release: {rv['decisions_per_s']:,}/s, p50 {rv['p50_us']} us, "
          f"p99 {rv['p99_us']} us")
    if actor:
        ta = result["through_actor"] = bench_actor()
        print(f"risk through the actor ({ta['strategies']} strategy actors): {ta['decisions_per_s']:,} decisions/s, "
              f"p50 {ta['p50_us']} us, p99 {ta['p99_us']} us (an echo actor, same load: "
              f"{ta['floor_echo']['calls_per_s']:,}/s, p50 {ta['floor_echo']['p50_us']} us)")
    result["target"] = {"decisions_per_s": 100_000, "p99_us": 50}
    return result


def main() -> None:
    write_result("risk", run())


if __name__ == "__main__":
    main()
