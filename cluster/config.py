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

from cluster.config_base import Cfg, ConfigError, check, convert
from dashboards.api_config import ApiSection
from gateways.venue_config import VenueSection
from risk.limits import RiskLimits, RiskSection

__all__ = ["ClusterConfig", "ConfigError", "RiskLimits", "RiskSection", "VenueSection", "load_config", "parse_config"]


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

    # Where feeds get market data: "simulator" (the venue simulator process, over real sockets, with
    # the real Binance/Alpaca feed handlers), "builtin" (the same seeded market stepped in-process,
    # no sockets), "venue" (the URLs of each symbol's venue: the real venue or its testnet) or
    # "replay" (the venue simulator serves the recording `replay_path` instead of its seeded market).
    source: Literal["simulator", "builtin", "venue", "replay"] = "simulator"
    # market.source "replay": a raw recording (gateways/recording.py), a file of venue messages, or a
    # folder of them; a list for several. `SYMBOL=PATH` names the symbol of bare REST depth snapshots.
    replay_path: str | list[str] = ""
    # 1 = the recorded pace (receive timestamps), 2 = twice as fast, 0 = as fast as the feeds read it.
    replay_speed: float = 1.0
    # After the last record, start the recording again (ids and times moved on; feeds resync at the seam).
    replay_loop: bool = False
    # {recorded symbol: configured symbol}: serve a recorded market under another name, e.g. a Binance
    # BTCUSDT recording as Alpaca's BTC/USD.
    replay_symbols: dict[str, str] = {}
    seed: int = 7
    updates_per_second: float = 20.0
    depth: int = 20
    spread_ticks: int = 2
    trades_per_update: float = 1.0
    stale_after_s: float = 2.0

    @property
    def on_simulator(self) -> bool:
        """Whether the venue simulator serves this market (`replay`: it serves the recording), so that feeds read
        it and Binance or Alpaca gateways trade on it."""
        return self.source in ("simulator", "replay")


class RecordSection(Cfg):
    """`feeds.record`: what each feed actor records (all off by default)."""

    raw: bool = False  # raw venue messages with receive timestamps, gzip JSONL (replayable)
    normalized: bool = False  # books and trades, Parquet (what `backtest --data` reads)
    dir: str = ""  # "" = `<run folder>/market`
    depth: int = 0  # levels per side in the books Parquet; 0 = feeds.book_depth
    flush_rows: int = 20_000  # normalized rows buffered before a Parquet part is written


class FeedSection(Cfg):
    symbols_per_actor: int = 1
    book_depth: int = 10
    # Marks sent to the risk actor at most this often per feed actor.
    mark_interval_ms: float = 250.0
    # How book updates reach strategies: "object_store" (one ray.put, the reference fanned out in
    # actor calls), "inline" (the update as the actor call's argument) or "compiled" (a Ray Compiled
    # Graph per feed actor, its channels in the object store's shared memory; each strategy joins one
    # feed actor's graph). "compiled" has the fastest hop but, in Ray 2.60, every graph member's reader
    # thread busy-polls (about one core per strategy, idle or not): only with cores to spare.
    # See bench/transport_bench.py and bench/cluster_bench.py.
    transport: Literal["object_store", "inline", "compiled"] = "object_store"
    # At most one delivery per subscriber per this interval: updates in between are conflated
    # (latest book per symbol), so an actor call is never spent on every market message.
    min_delivery_interval_ms: float = 10.0
    record: RecordSection = RecordSection()


class StrategySection(Cfg):
    name: str
    type: str
    symbols: list[str]
    params: dict[str, Any] = {}
    timer_interval_ms: float = 0.0


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
    api: ApiSection = ApiSection()

    @property
    def symbol_map(self) -> dict[str, SymbolSection]:
        return {s.symbol: s for s in self.symbols}

    def validate(self) -> ClusterConfig:
        check(bool(_NAME_RE.fullmatch(self.cluster.name)), "cluster.name",
               f"{self.cluster.name!r} must be 1-32 letters, digits, '-' or '_'")
        check(self.ray.address in ("", "auto") or ":" in self.ray.address or self.ray.address.startswith("ray://"),
               "ray.address", f"{self.ray.address!r} must be empty (local), 'auto' or host:port")
        check(0 < self.ray.dashboard_port < 65536, "ray.dashboard_port", "must be a TCP port")
        check(self.redis.url == "" or self.redis.url.startswith(("redis://", "rediss://", "unix://")),
               "redis.url", f"{self.redis.url!r} must be empty (embedded) or a redis:// URL")
        check(bool(self.venues), "venues", "at least one venue is required")
        for vname, v in self.venues.items():
            v.validate(f"venues.{vname}")
            # With the built-in market there is no simulator to take a Binance or Alpaca gateway's orders: they
            # would go to the real venue, priced off simulated books.
            check(v.type == "paper" or self.market.source != "builtin", f"venues.{vname}.type",
                  f"a {v.type} venue needs market.source simulator or replay (the simulator takes its orders) or "
                  "venue (the real venue's market data); with builtin its orders would reach the real venue, "
                  "priced off simulated books")
        m = self.market
        check(m.updates_per_second > 0, "market.updates_per_second", "must be > 0")
        check(1 <= m.depth <= 1000, "market.depth", "must be between 1 and 1000")
        check(m.spread_ticks >= 1, "market.spread_ticks", "must be >= 1")
        check(m.stale_after_s > 0, "market.stale_after_s", "must be > 0 (seconds without a message before a book is "
              "flagged stale and not traded on)")
        check(self.feeds.symbols_per_actor >= 1, "feeds.symbols_per_actor", "must be >= 1")
        check(1 <= self.feeds.book_depth <= m.depth, "feeds.book_depth", f"must be between 1 and market.depth ({m.depth})")
        check(0 <= m.replay_speed < float("inf"), "market.replay_speed", "must be >= 0 (1 = recorded pace, 0 = full speed)")
        if m.source == "replay":
            specs = replay_specs(m.replay_path)
            check(bool(specs), "market.replay_path", "market.source is 'replay' but no replay_path is set")
            for _, path in specs:
                check(Path(path).expanduser().exists(), "market.replay_path", f"no such file or folder: {path}")
        configured = [s.symbol for s in self.symbols]
        for recorded, served in m.replay_symbols.items():
            key = f"market.replay_symbols.{recorded}"
            check(bool(recorded.strip()), "market.replay_symbols", "a recorded symbol name is empty")
            check(served in configured, key, f"{served!r} is not a configured symbol; configured: {configured}")
        served = list(m.replay_symbols.values())
        check(len(set(served)) == len(served), "market.replay_symbols", "two recorded symbols are served as one")
        rec = self.feeds.record
        check(0 <= rec.depth <= self.feeds.book_depth, "feeds.record.depth",
              f"must be between 0 (= feeds.book_depth) and feeds.book_depth ({self.feeds.book_depth})")
        check(rec.flush_rows >= 1, "feeds.record.flush_rows", "must be >= 1")
        check(bool(self.symbols), "symbols", "at least one symbol is required")
        seen: set[str] = set()
        for i, s in enumerate(self.symbols):
            key = f"symbols[{i}]"
            check(bool(_SYMBOL_RE.fullmatch(s.symbol)), f"{key}.symbol", f"{s.symbol!r} is not a valid symbol")
            check(s.symbol not in seen, f"{key}.symbol", f"{s.symbol!r} is listed twice")
            seen.add(s.symbol)
            check(s.venue in self.venues, f"{key}.venue", f"unknown venue {s.venue!r}; configured: {sorted(self.venues)}")
            for field in ("price", "tick_size", "lot_size", "weight"):
                check(getattr(s, field) > 0, f"{key}.{field}", "must be > 0")
            check(s.volatility >= 0, f"{key}.volatility", "must be >= 0")
        names: set[str] = set()
        from strategies import strategy_class  # late: strategies import messages, not config

        for i, st in enumerate(self.strategies):
            key = f"strategies[{i}]"
            check(bool(_NAME_RE.fullmatch(st.name)), f"{key}.name", f"{st.name!r} must be 1-32 letters, digits, '-' or '_'")
            check(st.name not in names, f"{key}.name", f"{st.name!r} is used twice")
            names.add(st.name)
            try:
                cls = strategy_class(st.type)
            except ValueError as exc:
                raise ConfigError(f"{key}.type", str(exc)) from None
            check(bool(st.symbols), f"{key}.symbols", "at least one symbol is required")
            for sym in st.symbols:
                check(sym in seen, f"{key}.symbols", f"unknown symbol {sym!r}; configured: {sorted(seen)}")
            try:
                cls(st.name, st.symbols, {s: self.symbol_map[s].venue for s in st.symbols}, st.params)
            except ValueError as exc:
                raise ConfigError(f"{key}.params", str(exc)) from None
        self.risk.validate(seen, names, set(self.venues))
        self.api.validate()
        return self


_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_REPLAY_SPEC_RE = re.compile(r"([A-Z0-9]{2,20}(?:/[A-Z0-9]{2,10})?)=(.+)")


def replay_specs(value: str | list[str]) -> list[tuple[str, str]]:
    """`market.replay_path` as (symbol or "", path) pairs: `BTCUSDT=snap.json` names the symbol of bare snapshots."""
    out = []
    for spec in [value] if isinstance(value, str) else value:
        m = _REPLAY_SPEC_RE.fullmatch(spec)
        if spec and m and not Path(spec).exists():
            out.append((m.group(1), m.group(2)))
        elif spec:
            out.append(("", spec))
    return out
_SYMBOL_RE = re.compile(r"[A-Z0-9]{2,20}(/[A-Z0-9]{2,10})?")


def parse_config(data: Any) -> ClusterConfig:
    if not isinstance(data, dict):
        raise ConfigError("(top level)", "the config must be a YAML mapping")
    return convert(data, ClusterConfig).validate()


def load_config(path: str | Path) -> ClusterConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(str(p), f"cannot read the file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), f"not valid YAML: {yaml_problem(exc)}") from None
    return parse_config(data)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error in one line: where (1-based line and column) and what, e.g. "line 2, column 2: expected ','
    or ']', but got ':' (while parsing a flow sequence)"."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        context = f" ({exc.context})" if exc.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{context}"
    return " ".join(str(exc).split())


def replace_section(cfg: ClusterConfig, **changes: Any) -> ClusterConfig:
    return msgspec.structs.replace(cfg, **changes)
