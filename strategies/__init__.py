"""Strategy registry: config `type` names to classes, so configs and the host never import a class directly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strategies.base import Strategy, StrategyParamError
from strategies.ema_grid import EmaGrid
from strategies.imbalance import OrderBookImbalance
from strategies.latency_probe import LatencyProbe
from strategies.market_maker import MarketMaker
from strategies.pairs import PairsArbitrage

STRATEGY_TYPES: dict[str, type[Strategy]] = {"market_maker": MarketMaker, "imbalance": OrderBookImbalance,
                                             "ema_grid": EmaGrid, "pairs": PairsArbitrage,
                                             "latency_probe": LatencyProbe}

__all__ = ["STRATEGY_TYPES", "EmaGrid", "LatencyProbe", "MarketMaker", "OrderBookImbalance", "PairsArbitrage", "Strategy",
           "StrategyParamError", "create_strategy"]


def create_strategy(type_name: str, name: str, symbols: list[str], venues: Mapping[str, str],
                    params: Mapping[str, Any] | None = None) -> Strategy:
    """Build a strategy by its config type name; an unknown name is a ValueError listing the known ones."""
    cls = STRATEGY_TYPES.get(type_name)
    if cls is None:
        raise ValueError(f"unknown strategy type {type_name!r}; known: {sorted(STRATEGY_TYPES)}")
    return cls(name, list(symbols), venues, params or {})
