"""Strategy registry: config `type` names to classes, so configs and the host never import a class directly."""

from __future__ import annotations

import importlib
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
           "StrategyParamError", "create_strategy", "strategy_class"]


def strategy_class(type_name: str) -> type[Strategy]:
    """The class a config `type` names: a shipped one by its name, or your own as `package.module:ClassName`.

    Your module is imported as any other (the directory you start from is on the path, locally and in Ray's
    workers; `ray job submit --working-dir .` ships it). A ValueError says what is wrong: an unknown name, a
    module that does not import, a missing class, or a class that is not a `Strategy`.
    """
    cls = STRATEGY_TYPES.get(type_name)
    if cls is not None:
        return cls
    module_name, sep, class_name = type_name.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"unknown strategy type {type_name!r}; known: {sorted(STRATEGY_TYPES)}, or your own "
                         "class as 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - whatever the user's module raises on import is the answer
        raise ValueError(f"strategy type {type_name!r}: cannot import {module_name}: {type(exc).__name__}: {exc}"
                         ) from None
    found = getattr(module, class_name, None)
    if found is None:
        raise ValueError(f"strategy type {type_name!r}: {module_name} has no {class_name!r}")
    if not (isinstance(found, type) and issubclass(found, Strategy)):
        raise ValueError(f"strategy type {type_name!r}: {class_name} is not a subclass of strategies.base.Strategy")
    return found


def create_strategy(type_name: str, name: str, symbols: list[str], venues: Mapping[str, str],
                    params: Mapping[str, Any] | None = None) -> Strategy:
    """Build a strategy by its config type (see `strategy_class`)."""
    return strategy_class(type_name)(name, list(symbols), venues, params or {})
