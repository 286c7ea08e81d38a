"""`python -m cluster backtest`: replay recorded data or the seeded simulator through the strategies.

Same strategy classes, same risk engine, same paper fill model as the cluster; one process, no Ray.
Writes fills.parquet, decisions.parquet, equity.parquet and summary.json to `--out` and prints the
summary (P&L, Sharpe, max drawdown, trades per strategy).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from cluster.config import ClusterConfig, load_config, yaml_problem

DEFAULT_DURATION_S = 300.0


def register(sub: Any) -> None:
    p = sub.add_parser("backtest", help="replay recorded data (Parquet) or the simulator through the strategies")
    p.add_argument("--config", default="configs/paper.yaml")
    p.add_argument("--data", default="sim",
                   help="a folder with books*.parquet (+ trades*.parquet), one books Parquet file, or 'sim' "
                        "(the config's seeded simulator; the default)")
    p.add_argument("--duration", type=float, default=DEFAULT_DURATION_S,
                   help=f"simulated seconds when --data is sim (default {DEFAULT_DURATION_S:g})")
    p.add_argument("--strategy", action="append", default=None, help="only this strategy (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="STRATEGY.KEY=VALUE",
                   help="override a parameter (VALUE is YAML: 0.3, true, 5); repeatable")
    p.add_argument("--no-risk", action="store_true", help="skip the risk engine's checks")
    p.add_argument("--latency-ms", type=float, default=None, help="order latency (default: each venue's latency_ms)")
    p.add_argument("--equity-interval", type=float, default=1.0, help="seconds between equity samples (default 1)")
    p.add_argument("--out", default=None, help="results folder (default <cluster.data_dir>/backtest-<cluster.name>)")
    p.add_argument("--record", default=None, metavar="FOLDER",
                   help="also write the replayed market data as books.parquet + trades.parquet to FOLDER")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_backtest)


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """["obi.threshold=0.3"] -> {"obi": {"threshold": 0.3}}; VALUE parsed as a YAML scalar."""
    from cluster.cli import CliError

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name_key, sep, raw = item.partition("=")
        name, dot, key = name_key.partition(".")
        if not sep or not dot or not name or not key:
            raise CliError(f"--set {item!r}: expected STRATEGY.KEY=VALUE")
        out.setdefault(name, {})[key] = parse_value(raw)
    return out


def parse_value(raw: str) -> Any:
    from cluster.cli import CliError

    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise CliError(f"value {raw!r} is not a YAML scalar: {yaml_problem(exc)}") from None
    if isinstance(value, (dict, list)):
        raise CliError(f"value {raw!r} must be a scalar (number, true/false or text)")
    return value


def load_frames(cfg: ClusterConfig, data: str, duration_s: float,
                symbols: list[str] | None = None) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """(books, trades) frames from a Parquet path or, for 'sim', from the config's simulator."""
    from cluster.cli import CliError
    from strategies.market_data import MarketDataError, books_frame, read_frames, sim_events, trades_frame

    if data in ("sim", ""):
        if not duration_s > 0:
            raise CliError("--duration must be > 0 seconds")
        books, trades = [], []
        for e in sim_events(cfg, duration_s, symbols):
            (trades if e.__class__.__name__ == "Trade" else books).append(e)
        return books_frame(books), trades_frame(trades)  # type: ignore[arg-type]
    try:
        books_df, trades_df = read_frames(data)
    except MarketDataError as exc:
        raise CliError(f"--data: {exc}") from None
    if symbols:
        books_df = books_df.filter(pl.col("symbol").is_in(symbols))
        if trades_df is not None:
            trades_df = trades_df.filter(pl.col("symbol").is_in(symbols))
        if books_df.height == 0:
            raise CliError(f"--data {data}: no books for the strategies' symbols {symbols}")
    return books_df, trades_df


def cmd_backtest(args: argparse.Namespace) -> int:
    from cluster.cli import CliError
    from strategies.backtest import BacktestEngine, strategies_from_config, strategy_symbols
    from strategies.base import StrategyParamError
    from strategies.market_data import frames_to_events

    cfg = load_config(args.config)
    if not cfg.strategies:
        raise CliError(f"{args.config}: no strategies configured")
    if args.equity_interval <= 0:
        raise CliError("--equity-interval must be > 0 seconds")
    try:
        strategies = strategies_from_config(cfg, args.strategy, parse_overrides(args.set))
    except StrategyParamError as exc:
        raise CliError(f"--set: {exc}") from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    symbols = strategy_symbols(strategies)
    t0 = time.perf_counter()
    books, trades = load_frames(cfg, args.data, args.duration, symbols)
    if args.record:
        Path(args.record).mkdir(parents=True, exist_ok=True)
        books.write_parquet(Path(args.record) / "books.parquet")
        if trades is not None:
            trades.write_parquet(Path(args.record) / "trades.parquet")
        print(f"market data written to {args.record} ({books.height} books, "
              f"{0 if trades is None else trades.height} trades)")
    events = frames_to_events(books, trades, symbols)
    t1 = time.perf_counter()
    engine = BacktestEngine(cfg, strategies=strategies, use_risk=not args.no_risk, latency_ms=args.latency_ms,
                            equity_interval_s=args.equity_interval)
    result = engine.run(events)
    t2 = time.perf_counter()
    out = Path(args.out) if args.out else Path(cfg.cluster.data_dir) / f"backtest-{cfg.cluster.name}"
    result.summary["data"] = args.data
    result.summary["config"] = str(args.config)
    result.write(out)
    if args.json:
        print(json.dumps(result.summary, indent=2, sort_keys=True))
    else:
        print(format_summary(result.summary))
        print(f"{len(events)} events in {t2 - t1:.2f}s (+{t1 - t0:.2f}s loading); results in {out}/ "
              "(fills.parquet, decisions.parquet, equity.parquet, summary.json)")
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    ev = summary["events"]
    lines = [f"backtest over {summary['duration_s']:.0f}s of market data: {ev['books']} books, {ev['trades']} trades",
             f"{'strategy':<12}{'P&L':>12}{'Sharpe':>10}{'max DD':>12}{'trades':>8}{'fees':>10}{'orders':>8}"
             f"{'rejected':>10}"]
    for name, s in summary["strategies"].items():
        lines.append(f"{name:<12}{s['pnl']:>12.4f}{s['sharpe']:>10.2f}{s['max_drawdown']:>12.4f}{s['trades']:>8}"
                     f"{s['fees']:>10.4f}{s['orders']:>8}{s['rejected']:>10}")
    lines.append(f"Sharpe: equity increments per {summary['equity_interval_s']:g}s, annualized (365-day year), "
                 "risk-free 0; P&L and drawdown in quote currency, net of fees")
    return "\n".join(lines)
