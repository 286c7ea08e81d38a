"""Parameter sweeps: one backtest per parameter set, each a Ray task, results as one table.

A grid file (YAML) names the strategy of the config to sweep and the values to try:

    strategy: obi            # a strategy name from the config (default: the config's only strategy)
    duration_s: 120          # simulated seconds when the data is the simulator (optional)
    params:                  # every combination is one backtest (the Cartesian product)
      threshold: [0.2, 0.3, 0.4]
      persistence: [3, 5]

Every parameter set is validated by the strategy class before anything runs. The market data is
loaded (or simulated) once by the driver, put in Ray's object store once, and every task replays
that same data, so the tasks differ only by their parameters and each result is deterministic.
Ray runs the tasks in a few worker processes, each reused task after task; a worker builds the
events from the frames once (the longer half of a backtest from Parquet) and replays them for every
parameter set it is given. Events are immutable messages, and no backtest changes them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import polars as pl

from cluster.config import ClusterConfig
from cluster.config_base import ConfigError, convert
from strategies.backtest import BacktestEngine, strategies_from_config
from strategies.base import Strategy, StrategyParamError
from strategies.market_data import Event, frames_to_events

METRICS = ("pnl", "sharpe", "max_drawdown", "trades", "fees", "volume", "orders", "rejected")


class GridError(ValueError):
    """The grid file is unusable; the message names the key."""


class Grid(msgspec.Struct, forbid_unknown_fields=True):
    params: dict[str, list[Any]]
    strategy: str = ""
    duration_s: float | None = None


def parse_grid(data: Any, cfg: ClusterConfig) -> Grid:
    """Check a loaded grid YAML against the config: known strategy, non-empty lists, valid values."""
    if not isinstance(data, dict):
        raise GridError("the grid must be a YAML mapping with a 'params' key")
    for key, values in (data.get("params") or {}).items():
        if not isinstance(values, list):
            data["params"][key] = [values]  # a single value is a one-element list
    try:
        grid = convert(data, Grid)
    except ConfigError as exc:
        raise GridError(f"{exc.key}: {exc.problem}") from None
    names = [s.name for s in cfg.strategies]
    if not grid.strategy:
        if len(names) != 1:
            raise GridError(f"strategy: name the strategy to sweep; the config has {names}")
        grid.strategy = names[0]
    if grid.strategy not in names:
        raise GridError(f"strategy: unknown strategy {grid.strategy!r}; configured: {names}")
    if not grid.params:
        raise GridError("params: at least one parameter with a list of values is required")
    for key, values in grid.params.items():
        if not values:
            raise GridError(f"params.{key}: the list of values is empty")
    for combo in expand_grid(grid.params):
        try:
            strategies_from_config(cfg, only=[grid.strategy], overrides={grid.strategy: combo})
        except StrategyParamError as exc:
            raise GridError(f"params {combo}: {exc}") from None
    return grid


def expand_grid(params: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, in the order of the keys and values as written."""
    keys = list(params)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(params[k] for k in keys))]


def run_one(cfg: ClusterConfig, frames: tuple[pl.DataFrame, pl.DataFrame | None], strategy: str,
            params: Mapping[str, Any], use_risk: bool = True) -> dict[str, Any]:
    """One backtest of `strategy` with `params` over the frames; the summary row of the result table."""
    strategies = strategies_from_config(cfg, only=[strategy], overrides={strategy: dict(params)})
    events = frames_to_events(frames[0], frames[1], strategies[0].symbols)
    return _row(cfg, strategies, events, strategy, params, use_risk)


def _row(cfg: ClusterConfig, strategies: list[Strategy], events: list[Event], strategy: str,
         params: Mapping[str, Any], use_risk: bool) -> dict[str, Any]:
    result = BacktestEngine(cfg, strategies=strategies, use_risk=use_risk).run(events)
    stats = result.summary["strategies"][strategy]
    return {**dict(params), **{m: stats[m] for m in METRICS}}


# The events this worker process last built: ((frames object id, symbols), events). See the module docstring.
_built: tuple[tuple[str, tuple[str, ...]], list[Event]] | None = None


def run_in_worker(cfg: ClusterConfig, frames_box: list[Any], strategy: str, params: Mapping[str, Any],
                  use_risk: bool = True) -> dict[str, Any]:
    """`run_one` as a sweep task: `frames_box` holds the frames' ObjectRef (a ref inside a list reaches the task
    unresolved), whose id says whether this process has built these events already."""
    import ray

    global _built
    ref = frames_box[0]
    strategies = strategies_from_config(cfg, only=[strategy], overrides={strategy: dict(params)})
    key = (ref.hex(), tuple(strategies[0].symbols))
    if _built is None or _built[0] != key:
        _built = None  # the previous data can go before the next is built
        books, trades = ray.get(ref)
        _built = (key, frames_to_events(books, trades, list(key[1])))
    return _row(cfg, strategies, _built[1], strategy, params, use_risk)


def run_sweep(cfg: ClusterConfig, frames: tuple[pl.DataFrame, pl.DataFrame | None], grid: Grid,
              use_risk: bool = True, progress: Callable[[int, int], None] | None = None) -> pl.DataFrame:
    """Run every parameter set as a Ray task (Ray must be initialized); rows in grid order."""
    import ray

    task = ray.remote(num_cpus=1)(run_in_worker)
    combos = expand_grid(grid.params)
    cfg_ref = ray.put(cfg)
    frames_box = [ray.put(frames)]
    refs = [task.remote(cfg_ref, frames_box, grid.strategy, combo, use_risk) for combo in combos]
    index = {r: i for i, r in enumerate(refs)}
    rows: list[dict[str, Any] | None] = [None] * len(refs)
    waiting = list(refs)
    done = 0
    while waiting:
        ready, waiting = ray.wait(waiting, num_returns=1)
        for r in ready:
            rows[index[r]] = ray.get(r)
            done += 1
            if progress is not None:
                progress(done, len(refs))
    return results_frame([r for r in rows if r is not None], list(grid.params))


def results_frame(rows: list[dict[str, Any]], param_keys: list[str]) -> pl.DataFrame:
    """The sweep table: parameter columns, then the metrics; ranked by P&L, best first."""
    df = pl.DataFrame(rows, infer_schema_length=None)
    df = df.select([*param_keys, *METRICS])
    return df.sort("pnl", descending=True, maintain_order=True)
