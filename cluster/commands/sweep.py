"""`python -m cluster sweep`: a parameter sweep of one strategy, one Ray task per parameter set.

The grid file format is in `strategies/sweep.py`. Ray: joins `--address` (or the config's
`ray.address`), else starts a local Ray for the sweep and stops it afterwards. Prints a table ranked
by P&L and writes it to `<out>/sweep.parquet`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import yaml

from cluster.config import load_config, yaml_problem


def register(sub: Any) -> None:
    p = sub.add_parser("sweep", help="backtest every parameter set of a grid as Ray tasks; a ranked table")
    p.add_argument("--config", default="configs/paper.yaml")
    p.add_argument("--grid", required=True, help="YAML: strategy, params: {KEY: [values...]}, duration_s")
    p.add_argument("--data", default="sim", help="recorded Parquet (folder or books file), or 'sim' (default)")
    p.add_argument("--duration", type=float, default=None, help="simulated seconds for --data sim (default: "
                   "the grid's duration_s, else 120)")
    p.add_argument("--no-risk", action="store_true", help="skip the risk engine's checks")
    p.add_argument("--address", default=None, help="Ray address to join (default: the config's ray.address)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray started for the sweep")
    p.add_argument("--out", default=None, help="results folder (default <cluster.data_dir>/sweep-<cluster.name>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    import ray

    from cluster.cli import CliError
    from cluster.commands.backtest import load_frames
    from strategies.sweep import GridError, expand_grid, parse_grid, run_sweep

    cfg = load_config(args.config)
    try:
        raw = yaml.safe_load(Path(args.grid).read_text())
    except OSError as exc:
        raise CliError(f"--grid {args.grid}: cannot read the file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CliError(f"--grid {args.grid}: not valid YAML: {yaml_problem(exc)}") from None
    try:
        grid = parse_grid(raw, cfg)
    except GridError as exc:
        raise CliError(f"--grid {args.grid}: {exc}") from None
    duration = args.duration or grid.duration_s or 120.0
    symbols = next(s.symbols for s in cfg.strategies if s.name == grid.strategy)
    frames = load_frames(cfg, args.data, duration, list(symbols))
    n = len(expand_grid(grid.params))
    started = False
    if not ray.is_initialized():
        address = args.address if args.address is not None else cfg.ray.address
        try:
            if address:
                ray.init(address=address, logging_level=logging.WARNING)
            else:
                ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
                started = True
        except Exception as exc:
            raise CliError(f"could not start or join Ray ({address or 'local'}): {type(exc).__name__}: {exc}") from None
    print(f"sweeping {grid.strategy}: {n} parameter sets over {frames[0].height} books "
          f"({args.data}), {int(ray.cluster_resources().get('CPU', 0))} CPUs", flush=True)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="backtest", desc="sweep")

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(1)

    try:
        table = run_sweep(cfg, frames, grid, use_risk=not args.no_risk, progress=progress)
    finally:
        if bar is not None:
            bar.close()
        if started:
            ray.shutdown()
    out = Path(args.out) if args.out else Path(cfg.cluster.data_dir) / f"sweep-{cfg.cluster.name}"
    out.mkdir(parents=True, exist_ok=True)
    table.write_parquet(out / "sweep.parquet")
    import polars as pl

    with pl.Config(tbl_rows=min(table.height, 50), tbl_cols=-1, tbl_width_chars=160, tbl_hide_dataframe_shape=True):
        print(table)
    print(f"results in {out / 'sweep.parquet'} (ranked by P&L; Sharpe annualized from 1 s equity increments)")
    return 0
