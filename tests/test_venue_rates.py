"""What risk lets through to a venue a minute, against the venue's own request limit (said at start)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cluster.config import parse_config
from risk.venue_rates import orders_per_min_to_venue, venue_rate_warnings


def config(risk: dict[str, Any], strategies: int = 2) -> dict[str, Any]:
    return {
        "venues": {"alpaca": {"type": "alpaca"}, "binance": {"type": "binance"}},
        "market": {"source": "simulator"},
        "symbols": [{"symbol": "BTC/USD", "venue": "alpaca", "price": 60000.0, "tick_size": 0.1, "lot_size": 0.0001},
                    {"symbol": "ETH/USD", "venue": "alpaca", "price": 3000.0, "tick_size": 0.01, "lot_size": 0.001},
                    {"symbol": "BTCUSDT", "venue": "binance", "price": 60000.0, "tick_size": 0.1, "lot_size": 0.0001}],
        "strategies": [{"name": f"mm{i}", "type": "market_maker", "symbols": ["BTC/USD", "ETH/USD", "BTCUSDT"]}
                       for i in range(strategies)],
        "risk": risk,
    }


@pytest.mark.parametrize(("risk", "bound"), [
    ({}, 120.0),  # the desk default, 60 a minute, for each of two strategies
    ({"strategies": {"mm0": {"max_orders_per_min": 600}}}, 660.0),  # a strategy scope replaces the default
    ({"strategies": {"mm1": {"max_orders_per_s": 0.5}}}, 90.0),  # 30 a minute is the tighter for mm1
    # The fallback to defaults is per limit: mm1's 300 a minute (5 a second) leaves the default 60 a minute.
    ({"strategies": {"mm1": {"max_orders_per_s": 5}}}, 120.0),
    ({"strategies": {"mm0": {"max_orders_per_min": 600}}, "venues": {"alpaca": {"max_orders_per_min": 150}}}, 150.0),
    ({"venues": {"alpaca": {"max_orders_per_s": 2}}}, 120.0),  # the venue's 120 and the strategies' 2 x 60
    ({"defaults": {"max_orders_per_min": None}}, math.inf),
])
def test_the_bound_is_the_venues_limit_or_the_sum_of_its_strategies(risk, bound):
    assert orders_per_min_to_venue(parse_config(config(risk)), "alpaca") == bound


def test_a_venue_no_strategy_trades_gets_nothing():
    cfg = parse_config(config({"defaults": {"max_orders_per_min": None}}, strategies=0) | {"strategies": []})
    assert orders_per_min_to_venue(cfg, "alpaca") == 0.0
    assert venue_rate_warnings(cfg) == []


def test_start_warns_where_risk_lets_more_through_than_alpaca_takes():
    assert venue_rate_warnings(parse_config(config({}))) == []  # 120 < 200
    assert venue_rate_warnings(parse_config(config({"venues": {"alpaca": {"max_orders_per_min": 200}}}, 5))) == []
    (line,) = venue_rate_warnings(parse_config(config({"defaults": {"max_orders_per_min": 1200}})))
    assert line.startswith("venue 'alpaca': risk allows up to 2400 orders a minute, but alpaca accepts 200 requests")
    assert "risk.venues.alpaca.max_orders_per_min" in line
    (line,) = venue_rate_warnings(parse_config(config({"defaults": {"max_orders_per_min": None}})))
    assert "risk allows no limit" in line  # binance is never warned about: its limits come from exchangeInfo


def test_cluster_run_prints_the_warning_at_start(capsys):
    from types import SimpleNamespace

    from cluster.cli import _print_started
    from cluster.launch import ClusterRun

    cfg = parse_config(config({"strategies": {"mm0": {"max_orders_per_min": 600}}}))
    run = ClusterRun(cfg)
    started = SimpleNamespace(cfg=cfg, redis_url="redis://127.0.0.1:1", run_dir="runs/x", api_thread=None,
                              all_actors=lambda: [], order_destinations=run.order_destinations)
    _print_started(started)
    out = capsys.readouterr().out
    assert "orders on alpaca: " in out
    assert "warning: venue 'alpaca': risk allows up to 660 orders a minute" in out
    assert out.rstrip().endswith("trading; Ctrl-C stops cleanly")

