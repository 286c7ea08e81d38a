"""The cluster's one YAML config, validated before anything starts.

msgspec checks types and unknown keys (its error names the path, e.g.
`$.strategies[0].params`); `ClusterConfig.validate` checks the relations
between sections. Every failure is a `ConfigError` that names the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from cluster.messages import Struct


class ConfigError(ValueError):
    """A config problem, naming the key (`strategies[1].symbols`) and what is wrong."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"config error at {key}: {problem}")


class Cfg(Struct, forbid_unknown_fields=True):
    """Config sections: frozen, no unknown keys."""


class ClusterSection(Cfg):
    name: str = "paper"
    data_dir: str = "runs"


class RaySection(Cfg):
    # "" starts a local Ray with its dashboard; "auto" joins a running cluster; else an address.
    address: str = ""
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    num_cpus: int | None = None


class RedisSection(Cfg):
    # "" starts an embedded real redis-server on a free port, with AOF in the run's data folder.
    url: str = ""


class VenueSection(Cfg):
    type: Literal["paper", "binance", "alpaca"] = "paper"
    latency_ms: float = 2.0
    maker_fee_bps: float = 1.0
    taker_fee_bps: float = 5.0
    order_timeout_s: float = 5.0


class SymbolSection(Cfg):
    symbol: str
    venue: str = "paper"
    price: float = 100.0
    tick_size: float = 0.01
    lot_size: float = 0.001
    volatility: float = 0.5
    weight: float = 1.0


class MarketSection(Cfg):
    """The built-in seeded market that drives the paper feeds."""

    seed: int = 7
    updates_per_second: float = 20.0
    depth: int = 20
    spread_ticks: int = 2
    trades_per_update: float = 1.0
    stale_after_s: float = 2.0


class FeedSection(Cfg):
    symbols_per_actor: int = 1
    book_depth: int = 10
    # Marks sent to the risk actor at most this often per feed actor.
    mark_interval_ms: float = 250.0
    # How book updates reach subscribers: "object_store" (one ray.put, the reference fanned out)
    # or "inline" (the update as the actor call's argument). See bench/transport_bench.py.
    transport: Literal["object_store", "inline"] = "object_store"


class StrategySection(Cfg):
    name: str
    type: str
    symbols: list[str]
    params: dict[str, Any] = {}
    timer_interval_ms: float = 0.0


class RiskLimits(Cfg):
    """Limits for one scope; None means no limit at this scope."""

    max_order_qty: float | None = None
    max_order_notional: float | None = None
    max_position_qty: float | None = None
    max_position_notional: float | None = None


class RiskSection(Cfg):
    kill_switch: bool = False
    defaults: RiskLimits = RiskLimits(max_order_notional=50_000.0)
    symbols: dict[str, RiskLimits] = {}
    strategies: dict[str, RiskLimits] = {}
    venues: dict[str, RiskLimits] = {}
    # A reference price older than this cannot price an order: fail closed.
    max_mark_age_s: float = 5.0


class ClusterConfig(Cfg):
    cluster: ClusterSection = ClusterSection()
    ray: RaySection = RaySection()
    redis: RedisSection = RedisSection()
    venues: dict[str, VenueSection] = msgspec.field(default_factory=lambda: {"paper": VenueSection()})
    market: MarketSection = MarketSection()
    feeds: FeedSection = FeedSection()
    symbols: list[SymbolSection] = []
    strategies: list[StrategySection] = []
    risk: RiskSection = RiskSection()

    @property
    def symbol_map(self) -> dict[str, SymbolSection]:
        return {s.symbol: s for s in self.symbols}

    def validate(self) -> ClusterConfig:
        _check(bool(_NAME_RE.fullmatch(self.cluster.name)), "cluster.name",
               f"{self.cluster.name!r} must be 1-32 letters, digits, '-' or '_'")
        _check(self.ray.address in ("", "auto") or ":" in self.ray.address or self.ray.address.startswith("ray://"),
               "ray.address", f"{self.ray.address!r} must be empty (local), 'auto' or host:port")
        _check(0 < self.ray.dashboard_port < 65536, "ray.dashboard_port", "must be a TCP port")
        _check(self.redis.url == "" or self.redis.url.startswith(("redis://", "rediss://", "unix://")),
               "redis.url", f"{self.redis.url!r} must be empty (embedded) or a redis:// URL")
        _check(bool(self.venues), "venues", "at least one venue is required")
        for vname, v in self.venues.items():
            _check(v.latency_ms >= 0, f"venues.{vname}.latency_ms", "must be >= 0")
            _check(v.order_timeout_s > 0, f"venues.{vname}.order_timeout_s", "must be > 0")
        m = self.market
        _check(m.updates_per_second > 0, "market.updates_per_second", "must be > 0")
        _check(1 <= m.depth <= 1000, "market.depth", "must be between 1 and 1000")
        _check(m.spread_ticks >= 1, "market.spread_ticks", "must be >= 1")
        _check(self.feeds.symbols_per_actor >= 1, "feeds.symbols_per_actor", "must be >= 1")
        _check(1 <= self.feeds.book_depth <= m.depth, "feeds.book_depth", f"must be between 1 and market.depth ({m.depth})")
        _check(bool(self.symbols), "symbols", "at least one symbol is required")
        seen: set[str] = set()
        for i, s in enumerate(self.symbols):
            key = f"symbols[{i}]"
            _check(bool(_SYMBOL_RE.fullmatch(s.symbol)), f"{key}.symbol", f"{s.symbol!r} is not a valid symbol")
            _check(s.symbol not in seen, f"{key}.symbol", f"{s.symbol!r} is listed twice")
            seen.add(s.symbol)
            _check(s.venue in self.venues, f"{key}.venue", f"unknown venue {s.venue!r}; configured: {sorted(self.venues)}")
            for field in ("price", "tick_size", "lot_size", "weight"):
                _check(getattr(s, field) > 0, f"{key}.{field}", "must be > 0")
            _check(s.volatility >= 0, f"{key}.volatility", "must be >= 0")
        names: set[str] = set()
        from strategies import STRATEGY_TYPES  # late: strategies import messages, not config

        for i, st in enumerate(self.strategies):
            key = f"strategies[{i}]"
            _check(bool(_NAME_RE.fullmatch(st.name)), f"{key}.name", f"{st.name!r} must be 1-32 letters, digits, '-' or '_'")
            _check(st.name not in names, f"{key}.name", f"{st.name!r} is used twice")
            names.add(st.name)
            _check(st.type in STRATEGY_TYPES, f"{key}.type", f"unknown strategy type {st.type!r}; known: {sorted(STRATEGY_TYPES)}")
            _check(bool(st.symbols), f"{key}.symbols", "at least one symbol is required")
            for sym in st.symbols:
                _check(sym in seen, f"{key}.symbols", f"unknown symbol {sym!r}; configured: {sorted(seen)}")
            try:
                STRATEGY_TYPES[st.type](st.name, st.symbols, {s: self.symbol_map[s].venue for s in st.symbols}, st.params)
            except ValueError as exc:
                raise ConfigError(f"{key}.params", str(exc)) from None
        for scope, table, known in (("symbols", self.risk.symbols, seen), ("strategies", self.risk.strategies, names),
                                    ("venues", self.risk.venues, set(self.venues))):
            for k in table:
                _check(k in known, f"risk.{scope}.{k}", f"no such {scope[:-1]} in this config")
        for scope, limits in [("defaults", self.risk.defaults), *[(f"symbols.{k}", v) for k, v in self.risk.symbols.items()],
                              *[(f"strategies.{k}", v) for k, v in self.risk.strategies.items()],
                              *[(f"venues.{k}", v) for k, v in self.risk.venues.items()]]:
            for field in RiskLimits.__struct_fields__:
                value = getattr(limits, field)
                _check(value is None or value > 0, f"risk.{scope}.{field}", "must be > 0 (or omitted for no limit)")
        _check(self.risk.max_mark_age_s > 0, "risk.max_mark_age_s", "must be > 0")
        return self


_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_SYMBOL_RE = re.compile(r"[A-Z0-9]{2,20}(/[A-Z0-9]{2,10})?")


def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(key, problem)


def _msgspec_path(msg: str) -> tuple[str, str]:
    """Turn msgspec's 'Expected `int`, got `str` - at `$.market.seed`' into (key, problem)."""
    m = re.search(r" - at `\$\.?(.*)`$", msg)
    if not m:
        return "(top level)", msg
    return m.group(1) or "(top level)", msg[: m.start()]


def parse_config(data: Any) -> ClusterConfig:
    if not isinstance(data, dict):
        raise ConfigError("(top level)", "the config must be a YAML mapping")
    try:
        cfg = msgspec.convert(data, ClusterConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(*_msgspec_path(str(exc))) from None
    return cfg.validate()


def load_config(path: str | Path) -> ClusterConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(str(p), f"cannot read the file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), f"not valid YAML: {exc}") from None
    return parse_config(data)


def replace_section(cfg: ClusterConfig, **changes: Any) -> ClusterConfig:
    return msgspec.structs.replace(cfg, **changes)
