"""`python -m cluster research pairs`: scan every symbol pair of the data for cointegration.

Mids (touch midpoint) are sampled on a common clock (`--interval`, last book of each bucket, carried
forward), every pair is tested both ways with the Engle-Granger test (`strategies.cointegration`),
and the orientation with the stronger ADF statistic is kept. Ranked by p-value, best first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from typing import Any

import numpy as np
import polars as pl

from cluster.config import load_config


def register(sub: Any) -> None:
    p = sub.add_parser("research", help="research tools: `research pairs` scans pairs for cointegration")
    rs = p.add_subparsers(dest="tool", required=True)
    pairs = rs.add_parser("pairs", help="Engle-Granger cointegration of every symbol pair, ranked")
    pairs.add_argument("--data", required=True, help="recorded Parquet (folder or books file), or 'sim'")
    pairs.add_argument("--config", default="configs/paper.yaml", help="for --data sim: the simulator's config")
    pairs.add_argument("--duration", type=float, default=600.0, help="simulated seconds for --data sim")
    pairs.add_argument("--symbols", nargs="*", default=None, help="only these symbols")
    pairs.add_argument("--interval", type=float, default=1.0, help="sampling interval in seconds (default 1)")
    pairs.add_argument("--log", action="store_true", help="test log prices instead of prices")
    pairs.add_argument("--top", type=int, default=0, help="print only the best N pairs")
    pairs.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    pairs.set_defaults(func=cmd_pairs)


def sampled_mids(books: pl.DataFrame, interval_s: float, symbols: list[str] | None = None) -> pl.DataFrame:
    """One row per `interval_s` bucket, one column per symbol: the last mid of the bucket, carried forward."""
    if symbols:
        books = books.filter(pl.col("symbol").is_in(symbols))
    step = max(int(interval_s * 1e9), 1)
    df = (books.filter(pl.col("bid_px_0").is_not_null() & pl.col("ask_px_0").is_not_null())
          .with_row_index("_row")
          .select((pl.col("ts_ns") // step).alias("bucket"), "symbol", "_row",
                  ((pl.col("bid_px_0") + pl.col("ask_px_0")) / 2.0).alias("mid"))
          .sort(["bucket", "_row"])
          .group_by(["bucket", "symbol"], maintain_order=True).agg(pl.col("mid").last()))
    wide = df.pivot(on="symbol", index="bucket", values="mid").sort("bucket")
    cols = [c for c in wide.columns if c != "bucket"]
    return wide.with_columns([pl.col(c).forward_fill() for c in cols]).drop_nulls()


def scan_pairs(mids: pl.DataFrame, interval_s: float, use_log: bool = False) -> list[dict[str, Any]]:
    """Engle-Granger results for every pair, best orientation each, ranked by p-value then ADF statistic."""
    from strategies.cointegration import engle_granger

    symbols = [c for c in mids.columns if c != "bucket"]
    rows = []
    for a, b in itertools.combinations(symbols, 2):
        ya, yb = mids[a].to_numpy(), mids[b].to_numpy()
        if use_log:
            ya, yb = np.log(ya), np.log(yb)
        best = None
        for y_sym, x_sym, y, x in ((a, b, ya, yb), (b, a, yb, ya)):
            try:
                r = engle_granger(y, x)
            except (ValueError, np.linalg.LinAlgError):
                continue
            if best is None or r.adf_stat < best[2].adf_stat:
                best = (y_sym, x_sym, r)
        if best is None:
            continue
        y_sym, x_sym, r = best
        rows.append({"y": y_sym, "x": x_sym, "hedge_ratio": r.beta, "intercept": r.alpha, "adf_stat": r.adf_stat,
                     "p_value": r.pvalue, "lags": r.lags, "half_life": r.half_life,
                     "half_life_s": r.half_life * interval_s if math.isfinite(r.half_life) else math.inf,
                     "nobs": r.nobs})
    rows.sort(key=lambda row: (row["p_value"], row["adf_stat"]))
    return rows


def cmd_pairs(args: argparse.Namespace) -> int:
    from cluster.cli import CliError
    from cluster.commands.backtest import load_frames

    if args.interval <= 0:
        raise CliError("--interval must be > 0 seconds")
    cfg = load_config(args.config) if args.data in ("sim", "") else None
    if cfg is not None:
        books, _ = load_frames(cfg, args.data, args.duration, args.symbols)
    else:
        from strategies.market_data import MarketDataError, read_frames

        try:
            books, _ = read_frames(args.data)
        except MarketDataError as exc:
            raise CliError(f"--data: {exc}") from None
    if args.symbols:
        present = set(books["symbol"].unique().to_list()) if books.height else set()
        absent = [s for s in args.symbols if s not in present]
        if absent:
            raise CliError(f"--symbols: no books for {', '.join(absent)} in the data; it has {sorted(present)}")
    mids = sampled_mids(books, args.interval, args.symbols)
    symbols = [c for c in mids.columns if c != "bucket"]
    if len(symbols) < 2:
        raise CliError(f"need at least two symbols with books, found {symbols}")
    if mids.height < 20:
        raise CliError(f"only {mids.height} common samples at --interval {args.interval:g}s; need at least 20 "
                       "(record longer or use a shorter --interval)")
    rows = scan_pairs(mids, args.interval, args.log)
    if args.top > 0:
        rows = rows[:args.top]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"{len(symbols)} symbols, {mids.height} samples every {args.interval:g}s; Engle-Granger "
          f"({'log ' if args.log else ''}prices), ranked by p-value")
    print(f"{'rank':>4}  {'y':<10}{'x':<10}{'hedge ratio':>14}{'ADF stat':>10}{'p-value':>10}{'half-life':>12}"
          f"{'lags':>6}")
    for i, r in enumerate(rows, 1):
        hl = f"{r['half_life_s']:.1f}s" if math.isfinite(r["half_life_s"]) else "inf"
        print(f"{i:>4}  {r['y']:<10}{r['x']:<10}{r['hedge_ratio']:>14.6g}{r['adf_stat']:>10.3f}{r['p_value']:>10.4f}"
              f"{hl:>12}{r['lags']:>6}")
    print("hedge ratio: units of x per unit of y (y = intercept + ratio * x + spread); half-life of the spread's "
          "mean reversion")
    return 0
