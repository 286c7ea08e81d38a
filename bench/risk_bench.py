"""Risk decisions per second and decision time, in-process (the check logic the actor runs)."""

from __future__ import annotations

import time

from bench.common import percentiles_us, write_result
from cluster.config import RiskLimits, RiskSection, SymbolSection
from cluster.messages import OrderIntent, Side
from risk.engine import RiskEngine


def run(n: int = 200_000) -> dict:
    symbols = [SymbolSection(symbol=f"S{i:03d}", venue="paper", price=100.0) for i in range(32)]
    eng = RiskEngine(RiskSection(defaults=RiskLimits(max_order_notional=1e6, max_position_qty=1e9)), symbols, ["paper"])
    now = time.time_ns()
    for s in symbols:
        eng.set_mark(s.symbol, 100.0, now)
    intents = [OrderIntent(strategy=f"st{i % 4}", venue="paper", symbol=symbols[i % 32].symbol,
                           side=Side.BUY if i % 2 else Side.SELL, qty=1.0, price=100.0) for i in range(1024)]
    samples = []
    t0 = time.perf_counter_ns()
    for i in range(n):
        a = time.perf_counter_ns()
        eng.check(intents[i & 1023], now)
        samples.append(time.perf_counter_ns() - a)
    total_s = (time.perf_counter_ns() - t0) / 1e9
    result = {"in_process": {"decisions_per_s": round(n / total_s), **percentiles_us(samples[1000:])},
              "target": {"decisions_per_s": 100_000, "p99_us": 50}}
    print(f"risk in-process: {result['in_process']['decisions_per_s']:,} decisions/s, "
          f"p50 {result['in_process']['p50_us']} us, p99 {result['in_process']['p99_us']} us")
    return result


def main() -> None:
    write_result("risk", run())


if __name__ == "__main__":
    main()
