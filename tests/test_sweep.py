"""Parameter sweeps (grid parsing without Ray; one sweep on the shared small Ray) and `params set` live."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from cluster.cli import main
from cluster.config import parse_config
from strategies.sweep import GridError, expand_grid, parse_grid, run_one
from tests.cli_output import json_output
from tests.test_backtest import small_config


def test_expand_grid_is_the_cartesian_product_in_order():
    assert expand_grid({"a": [1, 2], "b": ["x", "y", "z"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"},
        {"a": 2, "b": "x"}, {"a": 2, "b": "y"}, {"a": 2, "b": "z"}]
    assert expand_grid({"a": [0.5]}) == [{"a": 0.5}]


def test_parse_grid_validates_against_the_config(tmp_path):
    cfg = parse_config(small_config(tmp_path))
    g = parse_grid({"strategy": "obi", "params": {"threshold": [0.2, 0.3], "persistence": 4}}, cfg)
    assert g.params == {"threshold": [0.2, 0.3], "persistence": [4]}
    with pytest.raises(GridError, match="name the strategy"):
        parse_grid({"params": {"threshold": [0.2]}}, cfg)
    with pytest.raises(GridError, match="unknown strategy 'zz'"):
        parse_grid({"strategy": "zz", "params": {"threshold": [0.2]}}, cfg)
    with pytest.raises(GridError, match="bogus"):
        parse_grid({"strategy": "obi", "params": {"bogus": [1]}}, cfg)
    with pytest.raises(GridError, match="persistence"):
        parse_grid({"strategy": "obi", "params": {"persistence": [3, 1]}}, cfg)
    with pytest.raises(GridError, match="empty"):
        parse_grid({"strategy": "obi", "params": {"threshold": []}}, cfg)
    with pytest.raises(GridError, match=r"unknown key 'duration' \(did you mean 'duration_s'\?\)"):
        parse_grid({"strategy": "obi", "params": {"threshold": [0.2]}, "duration": 60}, cfg)


def test_sweep_runs_as_ray_tasks_and_matches_single_backtests(ray_session, tmp_path, capsys):
    data = small_config(tmp_path)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(data))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"strategy": "obi", "duration_s": 15,
                                    "params": {"threshold": [0.1, 0.4], "persistence": [3, 6]}}, sort_keys=False))
    code = main(["sweep", "--config", str(cfg_file), "--grid", str(grid), "--out", str(tmp_path / "sw")])
    out = capsys.readouterr()
    assert code == 0, out.err
    table = pl.read_parquet(tmp_path / "sw" / "sweep.parquet")
    assert table.height == 4
    assert table.columns[:2] == ["threshold", "persistence"] and {"pnl", "sharpe", "max_drawdown", "trades"} <= set(
        table.columns)
    assert table["pnl"].to_list() == sorted(table["pnl"].to_list(), reverse=True)
    assert "sweep" in out.err  # the tqdm progress bar
    # Each row is the backtest of that parameter set: the same as running it alone.
    from cluster.commands.backtest import load_frames

    cfg = parse_config(data)
    frames = load_frames(cfg, "sim", 15, ["ETHUSDT", "BNBUSDT"])
    for row in table.iter_rows(named=True):
        alone = run_one(cfg, frames, "obi", {"threshold": row["threshold"], "persistence": row["persistence"]})
        assert alone == row
    assert table["trades"].max() > 0 and table["trades"].n_unique() > 1


def test_a_sweep_worker_builds_the_events_once_per_data(ray_session, tmp_path, monkeypatch):
    """A worker given the same frames again replays the events it built; other frames (or symbols) are built anew.
    The rows are those of a backtest run alone."""
    import ray

    import strategies.sweep as sweep
    from cluster.commands.backtest import load_frames

    cfg = parse_config(small_config(tmp_path))
    frames = load_frames(cfg, "sim", 10, ["ETHUSDT", "BNBUSDT"])
    builds = []
    real = sweep.frames_to_events
    monkeypatch.setattr(sweep, "frames_to_events", lambda *a: builds.append(a[2]) or real(*a))
    monkeypatch.setattr(sweep, "_built", None)
    box = [ray.put(frames)]
    rows = [sweep.run_in_worker(cfg, box, "obi", {"threshold": t}) for t in (0.1, 0.3)]
    assert len(builds) == 1
    assert rows == [run_one(cfg, frames, "obi", {"threshold": t}) for t in (0.1, 0.3)]
    sweep.run_in_worker(cfg, [ray.put(frames)], "obi", {"threshold": 0.1})  # the same data put again: a new object
    assert len(builds) == 4  # (the two run_one calls above build their own)


def test_params_set_changes_a_running_strategy(ray_session, tmp_path, capsys):
    import ray

    from actors.strategy import StrategyActor

    data = small_config(tmp_path)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(data))
    ns = ray.get_runtime_context().namespace
    actor = StrategyActor.options(name="strategy:obi", namespace=ns).remote(
        "imbalance", "obi", ["ETHUSDT"], {"ETHUSDT": "paper"}, {"threshold": 0.2})
    try:
        run_file = Path(data["cluster"]["data_dir"]) / "bt.current.json"
        run_file.parent.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps({"ray_address": ray.get_runtime_context().gcs_address, "namespace": ns}))
        assert main(["params", "set", "obi", "threshold", "0.35", "--config", str(cfg_file)]) == 0
        assert "threshold = 0.35" in capsys.readouterr().out
        assert ray.get(actor.set_params.remote({}))["threshold"] == 0.35
        # A value only the live state can refuse (after the local check) is refused, and nothing changes.
        assert main(["params", "set", "obi", "persistence", "2", "--config", str(cfg_file)]) == 2
        assert "persistence" in capsys.readouterr().err
        assert main(["params", "get", "obi", "--config", str(cfg_file)]) == 0
        shown = json_output(capsys.readouterr().out)
        assert shown["threshold"] == 0.35 and shown["persistence"] == 3
    finally:
        ray.kill(actor, no_restart=True)
