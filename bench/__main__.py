"""`make bench`: every benchmark, each writing bench/results/<name>.json."""

from __future__ import annotations

import sys

from bench import backtest_bench, book_bench, cluster_bench, gateway_bench, risk_bench, transport_bench

BENCHES = {"risk": risk_bench.main, "transport": transport_bench.main, "backtest": backtest_bench.main,
           "book": book_bench.main, "gateway": gateway_bench.main, "cluster": cluster_bench.main}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHES)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"== {name}")
        BENCHES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
