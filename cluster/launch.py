"""Bring a cluster up from its config, run it, and take it down cleanly.

Order of start: Redis (the truth), Ray, the risk actor, gateways, feeds placed
by the plan, strategies pinned beside their feeds, subscriptions, then the
feeds start ticking. Shutdown reverses it: strategies stop, resting orders are
canceled, state is persisted, actors stop, the Redis this run started stops.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.feed import FeedActor
from actors.gateway import GatewayActor
from actors.risk import RiskActor
from actors.strategy import StrategyActor
from cluster.config import ClusterConfig, VenueSection
from cluster.placement import SHARD_RESOURCE, FeedGroup, NodeInfo, PlacementPlan, plan_placement, replan_lost
from cluster.redis_server import EmbeddedRedis, redacted
from cluster.state_store import StateStore
from gateways.secrets import SecretsError, load_credentials

log = logging.getLogger(__name__)
AUTH_MODE_ENV = "RAY_AUTH_MODE"  # Ray's switch for token authentication ("token" / "disabled")

RISK_NAME = "risk"
RISK_FLUSH_TIMEOUT_S = 5.0  # shutdown waits at most this long for risk's queued writes to reach Redis


class LaunchError(RuntimeError):
    """The cluster could not be started; the message says what failed and what to try."""


def namespace_for(cfg: ClusterConfig) -> str:
    return f"rsc-{cfg.cluster.name}"


def current_run_file(cfg: ClusterConfig) -> Path:
    return Path(cfg.cluster.data_dir) / f"{cfg.cluster.name}.current.json"


def actor_failure(exc: BaseException) -> str:
    """One line for an actor that died while being created: its name and the error its constructor raised
    (Ray's message holds the whole remote traceback), else the exception's first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Ray colours the task name
    name = re.search(r"ray::([^\s(]+):\w+\.__init__\(\)", text) or re.search(r"\bname: ([^,\s]+)", text)
    raised = [f"{m.group(1)}: {m.group(2)}"
              for m in re.finditer(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$", text, re.MULTILINE)
              if m.group(1) not in ("RayTaskError", "ActorDiedError", "RayActorError")]
    first = text.strip().splitlines()[0] if text.strip() else ""
    what = raised[-1] if raised else f"{type(exc).__name__}: {first}"
    return f"{name.group(1)}: {what}" if name else what


def join_running_cluster(cfg: ClusterConfig, logging_level: int = logging.WARNING) -> dict[str, Any]:
    """Connect this process to the Ray of `cfg`'s running cluster (a command from another shell); its run info.

    A process already connected (the driver that started the cluster, a test) keeps its connection. Ray turns
    token authentication on for a new local cluster, but a client that joins by address only sends the token
    (`~/.ray/auth_token`, or `RAY_AUTH_TOKEN`) when `RAY_AUTH_MODE=token`: the run file says whether the
    cluster wants it, and the mode is set here unless the user set one.
    """
    path = current_run_file(cfg)
    if not path.exists():
        raise LaunchError(f"no running cluster {cfg.cluster.name!r} found ({path} is missing); start one with "
                          "`make run`")
    info: dict[str, Any] = json.loads(path.read_text())
    if ray.is_initialized():
        return info
    if info.get("ray_auth") == "token" and AUTH_MODE_ENV not in os.environ:
        _enable_token_auth()
    try:
        ray.init(address=info["ray_address"], namespace=info["namespace"], logging_level=logging_level,
                 log_to_driver=False)
    except Exception as exc:
        mode = os.environ.get(AUTH_MODE_ENV, "unset")
        raise LaunchError(f"cannot join the cluster's Ray at {info.get('ray_address')} ({AUTH_MODE_ENV}={mode}): "
                          f"{type(exc).__name__}: {exc}") from None
    return info


def _enable_token_auth() -> None:
    """RAY_AUTH_MODE=token for this process. Ray reads the mode into its config once, at import: it is read
    again, as Ray itself does when it turns token auth on for a new local cluster."""
    os.environ[AUTH_MODE_ENV] = "token"
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _ray_auth_mode() -> str:
    """'token' when this process's Ray requires the token (what a joining client must then send)."""
    with contextlib.suppress(Exception):
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        if is_token_auth_enabled():
            return "token"
    return os.environ.get(AUTH_MODE_ENV, "disabled").lower()


def alive_nodes() -> list[NodeInfo]:
    """Live Ray nodes. Once any node declares the "shard" resource, only such nodes take symbols."""
    live = [n for n in ray.nodes() if n.get("Alive")]
    sharded = any(SHARD_RESOURCE in n.get("Resources", {}) for n in live)
    out = []
    for n in live:
        res = n.get("Resources", {})
        capacity = float(res.get(SHARD_RESOURCE, 0.0)) if sharded else 1.0
        out.append(NodeInfo(node_id=n["NodeID"], address=n.get("NodeManagerAddress", ""), capacity=capacity,
                            is_head="node:__internal_head__" in res))
    if out and not any(n.is_head for n in out):
        out[0] = NodeInfo(out[0].node_id, out[0].address, out[0].capacity, True)
    return out


def pinned(node_id: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


@dataclass
class ClusterRun:
    cfg: ClusterConfig
    run_dir: Path | None = None
    redis: EmbeddedRedis | None = None
    redis_url: str = ""
    store: StateStore | None = None
    started_ray: bool = False
    plan: PlacementPlan | None = None
    risk: Any = None
    gateways: dict[str, Any] = field(default_factory=dict)
    feeds: dict[str, Any] = field(default_factory=dict)
    strategies: dict[str, Any] = field(default_factory=dict)
    stats_at_start: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    api_thread: Any = None
    market_sim: Any = None  # the venue simulator process (market.source: simulator or replay)
    risk_flushed: bool = False  # risk's write-behind queue was flushed at shutdown

    # -- start ---------------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(cfg.cluster.data_dir).resolve() / f"{cfg.cluster.name}-{stamp}-{os.getpid()}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._check_credentials()
            self._start_ray()
            self._start_redis()
            self._start_market()
            self._start_actors()
            self._write_current()
            self._start_api()
        except BaseException:
            with contextlib.suppress(Exception):
                self.shutdown()  # a half-started run leaves no simulator, Redis or actors behind
            raise
        self.started_at = time.monotonic()

    def _start_redis(self) -> None:
        if self.cfg.redis.url:
            self.redis_url = self.cfg.redis.url
        else:
            assert self.run_dir is not None
            if len(ray.nodes()) > 1 or self.cfg.ray.address:
                # Other nodes must reach it: bind the head's address and require a per-run password.
                self.redis = EmbeddedRedis(self.run_dir / "redis", host=ray.util.get_node_ip_address(),
                                           password=secrets.token_hex(16))
            else:
                self.redis = EmbeddedRedis(self.run_dir / "redis")
            self.redis_url = self.redis.start()
        self.store = StateStore.from_url(self.redis_url, self.cfg.cluster.name)
        try:
            self.store.ping()
        except Exception as exc:
            raise LaunchError(f"cannot reach Redis at {redacted(self.redis_url)}: {exc}") from None
        self.stats_at_start = self.store.stats()

    def _start_ray(self) -> None:
        cfg = self.cfg.ray
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"namespace": namespace_for(self.cfg), "logging_level": logging.WARNING,
                                  "log_to_driver": True}
        try:
            if cfg.address:
                ray.init(address=cfg.address, **kwargs)
            else:
                ray.init(include_dashboard=True, dashboard_host=cfg.dashboard_host, dashboard_port=cfg.dashboard_port,
                         num_cpus=cfg.num_cpus, **kwargs)
                self.started_ray = True
        except Exception as exc:
            raise LaunchError(f"could not start or join Ray (ray.address={cfg.address or 'local'!r}): "
                              f"{type(exc).__name__}: {exc}") from None

    def _start_market(self) -> None:
        if not self.cfg.market.on_simulator:
            return
        from gateways.venue_sim.process import SimulatorProcess, SimulatorStartError

        assert self.run_dir is not None
        try:
            self.market_sim = SimulatorProcess(self.cfg, self.run_dir).start()
        except SimulatorStartError as exc:
            raise LaunchError(str(exc)) from None

    def _check_credentials(self) -> None:
        """Read the API keys of the venues traded for real before anything starts: a missing key or secrets file
        is then one line, not a gateway actor dying inside Ray. Only with a local Ray, whose actors get this
        process's environment; on a cluster joined by address the gateway reads them on its own node."""
        if self.cfg.ray.address or self.cfg.market.on_simulator:
            return
        for name, v in sorted(self.cfg.venues.items()):
            if v.type == "paper":
                continue
            try:
                load_credentials(v.type, v.secrets_file)
            except SecretsError as exc:
                raise LaunchError(f"venues.{name}: {exc}") from None

    def _gateway_venue(self, venue: str) -> tuple[VenueSection, bool]:
        """A gateway's venue section, and whether it trades on the venue simulator: with the simulator running
        (market.source simulator or replay) a Binance or Alpaca venue does, with the simulator's keys, never on
        the real venue."""
        vcfg = self.cfg.venues[venue]
        if vcfg.type == "paper" or self.market_sim is None:
            return vcfg, False
        return vcfg.on_simulator(self.market_sim.http_url), True

    def order_destinations(self) -> dict[str, str]:
        """venue -> where its gateway sends orders, in words (printed at start, so nobody trades by surprise)."""
        out = {}
        for v in sorted(self.cfg.venues):
            vcfg, simulated = self._gateway_venue(v)
            if vcfg.type == "paper":
                out[v] = "paper fills inside the gateway (no venue)"
            elif simulated:
                unread = self.cfg.venues[v].secrets_file
                out[v] = (f"the venue simulator at {vcfg.rest_url} ({vcfg.type} protocol, the simulator's keys"
                          + (f"; secrets_file {unread} is not read" if unread else "") + ")")
            else:
                out[v] = f"{vcfg.url('rest_url')}: a real {vcfg.type} endpoint, with your keys"
        return out

    def _start_actors(self) -> None:
        cfg = self.cfg
        self.plan = plan = plan_placement(cfg, alive_nodes())
        venues = sorted(cfg.venues)
        self.risk = RiskActor.options(name=RISK_NAME, get_if_exists=True, scheduling_strategy=pinned(plan.head_node)
                                      ).remote(cfg.risk, cfg.symbols, venues, self.redis_url, cfg.cluster.name)
        for v in venues:
            vcfg, simulated = self._gateway_venue(v)
            self.gateways[v] = GatewayActor.options(name=f"gateway:{v}", get_if_exists=True,
                                                    scheduling_strategy=pinned(plan.head_node)
                                                    ).remote(v, vcfg, self.redis_url, cfg.cluster.name,
                                                             RISK_NAME, simulated)
        for g in plan.feeds:
            self._create_feed(g)
        for st in cfg.strategies:
            self._create_strategy(st.name, plan.strategies[st.name])
        self._wire(feeds=[g.name for g in plan.feeds], strategies=[st.name for st in cfg.strategies])

    def _create_feed(self, g: FeedGroup) -> None:
        from actors.feed import feed_endpoints, with_record_dir

        endpoints = feed_endpoints(self.cfg, g.venue, self.market_sim.http_url if self.market_sim else "")
        symbol_cfg = self.cfg.symbol_map
        self.feeds[g.name] = FeedActor.options(name=g.name, get_if_exists=True, scheduling_strategy=pinned(g.node_id)
                                               ).remote(g.name, g.venue, [symbol_cfg[s] for s in g.symbols],
                                                        self.cfg.market, with_record_dir(self.cfg.feeds, self.run_dir),
                                                        self.cfg.feeds.transport,
                                                        endpoints)

    def _create_strategy(self, name: str, node_id: str) -> None:
        st = next(s for s in self.cfg.strategies if s.name == name)
        venues_of = {s: self.cfg.symbol_map[s].venue for s in st.symbols}
        self.strategies[name] = StrategyActor.options(
            name=f"strategy:{name}", get_if_exists=True, scheduling_strategy=pinned(node_id)
        ).remote(st.type, st.name, st.symbols, venues_of, st.params, RISK_NAME, st.timer_interval_ms,
                 self.redis_url, self.cfg.cluster.name,
                 lot_sizes={s: self.cfg.symbol_map[s].lot_size for s in st.symbols})

    def _wire(self, feeds: list[str], strategies: list[str]) -> None:
        """Wait for the named actors to be constructed, subscribe them, start them, record where they run."""
        assert self.plan is not None and self.store is not None
        handles = [self.risk, *self.gateways.values(), *(self.feeds[f] for f in feeds),
                   *(self.strategies[s] for s in strategies)]
        try:  # everything constructed (restored from Redis) before any market data flows
            ray.get([h.node_id.remote() for h in handles], timeout=120)
        except Exception as exc:
            raise LaunchError(f"actors failed to start: {actor_failure(exc)}") from None
        # Gateways send execution reports to these actors from now on (a moved strategy is a new actor).
        ray.get([gw.attach_strategy.remote(s, self.strategies[s]) for gw in self.gateways.values() for s in strategies])
        subs = []
        for st in self.cfg.strategies:
            groups = [g for g in self.plan.feeds if any(s in g.symbols for s in st.symbols)]
            home = _home_feed(groups, st.symbols, self.plan.strategies.get(st.name))
            for g in groups:
                syms = [s for s in st.symbols if s in g.symbols]
                if g.name in feeds or st.name in strategies:
                    subs.append(self.feeds[g.name].subscribe.remote(f"strategy:{st.name}", self.strategies[st.name], syms,
                                                                    compiled=g is home))
        for g in self.plan.feeds:
            if g.name in feeds:
                subs.append(self.feeds[g.name].subscribe.remote(f"gateway:{g.venue}", self.gateways[g.venue], g.symbols,
                                                                inline=True))
        ray.get(subs)
        ray.get([self.strategies[s].start_timer.remote() for s in strategies])
        nodes = ray.get([self.feeds[f].start.remote(self.risk) for f in feeds])
        for actor_name, node in zip(feeds, nodes, strict=True):
            self.store.register_actor(actor_name, json.dumps({"role": "feed", "node_id": node}).encode())
        for st_name in strategies:
            node = ray.get(self.strategies[st_name].node_id.remote())
            self.store.register_actor(f"strategy:{st_name}", json.dumps({"role": "strategy", "node_id": node}).encode())
        for v in self.gateways:
            self.store.register_actor(f"gateway:{v}", json.dumps({"role": "gateway", "node_id": self.plan.head_node}).encode())
        self.store.register_actor(RISK_NAME, json.dumps({"role": "risk", "node_id": self.plan.head_node}).encode())

    def supervise(self) -> list[str]:
        """Move the feeds and strategies of nodes that died onto live nodes (they rebuild from Redis), and wire
        again the feed actors Ray restarted in place.

        Actors are pinned with hard node affinity, so Ray cannot restart them elsewhere on its own.
        Returns the names of the actors that moved or were wired again.
        """
        if self.plan is None:
            return []
        nodes = alive_nodes()
        alive = {n.node_id for n in nodes}
        if self.plan.head_node not in alive:
            raise LaunchError("the head node (risk actor, gateways) is gone; the cluster cannot trade")
        lost_feeds = [g for g in self.plan.feeds if g.node_id not in alive]
        restarted = self._rewire_restarted_feeds([g.name for g in self.plan.feeds if g.node_id in alive])
        if not lost_feeds:
            return restarted
        new_plan = replan_lost(self.plan, nodes, {s.symbol: s.weight for s in self.cfg.symbols})
        moved_strategies = [name for name, node in new_plan.strategies.items()
                            if node != self.plan.strategies.get(name) or node not in alive]
        for g in lost_feeds:
            with contextlib.suppress(Exception):
                ray.kill(self.feeds[g.name], no_restart=True)
        for name in moved_strategies:
            with contextlib.suppress(Exception):
                ray.kill(self.strategies[name], no_restart=True)
        _wait_names_free([g.name for g in lost_feeds] + [f"strategy:{n}" for n in moved_strategies])
        self.plan = new_plan
        for g in new_plan.feeds:
            if g.name in {lf.name for lf in lost_feeds}:
                self._create_feed(g)
        for name in moved_strategies:
            self._create_strategy(name, new_plan.strategies[name])
        self._wire(feeds=[g.name for g in lost_feeds], strategies=moved_strategies)
        moved = [g.name for g in lost_feeds] + [f"strategy:{n}" for n in moved_strategies]
        log.warning("moved %s off lost nodes", moved)
        return moved

    def _rewire_restarted_feeds(self, names: list[str]) -> list[str]:
        """Feed actors Ray restarted in place (a crash) come back without subscribers and stopped: wire them again.

        A feed that does not answer within the timeout is left for the next check.
        """
        refs = {name: self.feeds[name].is_running.remote() for name in names}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=5.0)
        restarted = []
        for name, ref in refs.items():
            if ref in ready:
                try:
                    if not ray.get(ref):
                        restarted.append(name)
                except Exception:  # dead or restarting: next time
                    continue
        if restarted:
            log.warning("feed actors restarted by Ray: %s; subscribing and starting them again", restarted)
            self._wire(feeds=restarted, strategies=[])
        return restarted

    def all_actors(self) -> dict[str, Any]:
        out = {RISK_NAME: self.risk}
        out.update({f"gateway:{v}": h for v, h in self.gateways.items()})
        out.update(self.feeds)
        out.update({f"strategy:{n}": h for n, h in self.strategies.items()})
        return out

    def _start_api(self) -> None:
        """The status API, in a thread of this (otherwise idle) driver: it reads Redis, never the actors."""
        if not self.cfg.api.enabled or self.store is None:
            return
        from dashboards.api_thread import StatusApiThread

        self.api_thread = StatusApiThread(self.store, self.cfg.api)
        error = self.api_thread.start()
        if error:
            log.warning("status API not started: %s (trading goes on)", error)
            print(f"warning: status API not started: {error}; trading goes on", flush=True)
            self.api_thread = None

    def _write_current(self) -> None:
        path = current_run_file(self.cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        ctx = ray.get_runtime_context()
        info = {"cluster": self.cfg.cluster.name, "redis_url": self.redis_url, "run_dir": str(self.run_dir),
                "pid": os.getpid(), "ray_address": ctx.gcs_address, "namespace": namespace_for(self.cfg),
                "dashboard_url": _dashboard_url(), "ray_auth": _ray_auth_mode()}
        path.write_text(json.dumps(info, indent=2))

    # -- while running ----------------------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        assert self.store is not None
        stats = self._stats_delta()
        positions = self.store.positions()
        return {"elapsed_s": round(time.monotonic() - self.started_at, 1), "orders": stats.get("orders_submitted", 0),
                "fills": stats.get("fills", 0),
                "realized_pnl": round(sum(p.realized_pnl - p.fees for p in positions), 4)}

    def _stats_delta(self) -> dict[str, int]:
        assert self.store is not None
        now = self.store.stats()
        return {k: v - self.stats_at_start.get(k, 0) for k, v in now.items()}

    # -- stop --------------------------------------------------------------------------------------------
    def shutdown(self) -> dict[str, Any]:
        """Stop trading, cancel resting orders, collect the summary, stop actors and what this run started."""
        summary: dict[str, Any] = {}
        try:
            if ray.is_initialized() and self.feeds:
                summary = self._drain_and_summarize()
        finally:
            if ray.is_initialized():
                self._flush_risk()
                for h in self.all_actors().values():
                    if h is not None:
                        with contextlib.suppress(Exception):
                            ray.kill(h, no_restart=True)
                if self.started_ray:
                    ray.shutdown()
            with contextlib.suppress(OSError):
                current_run_file(self.cfg).unlink()
            if self.api_thread is not None:
                self.api_thread.stop()
            if self.market_sim is not None:
                self.market_sim.stop()
            if self.redis is not None:
                self.redis.stop()
        return summary

    def _flush_risk(self) -> None:
        """Before risk is killed: its write-behind queue (the audit of the last decisions) to Redis, retried for
        up to RISK_FLUSH_TIMEOUT_S if Redis is away. Fail-soft: shutdown goes on whatever happens."""
        if self.risk is None or self.risk_flushed:
            return
        self.risk_flushed = True
        try:
            left = ray.get(self.risk.flush.remote(RISK_FLUSH_TIMEOUT_S), timeout=RISK_FLUSH_TIMEOUT_S + 5.0)
        except Exception as exc:
            log.warning("shutdown: risk's write-behind queue not flushed: %s: %s", type(exc).__name__, exc)
            return
        if left:
            log.warning("shutdown: %d risk audit entries could not be written to Redis (lost)", left)

    def _drain_and_summarize(self) -> dict[str, Any]:
        assert self.store is not None
        strategy_stats = dict(zip(self.strategies, _get_all([s.stop.remote() for s in self.strategies.values()]),
                                  strict=True))
        _get_all([g.cancel_all.remote(None) for g in self.gateways.values()])
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            open_now = sum(len(x or []) for x in _get_all([g.open_orders.remote() for g in self.gateways.values()]))
            if open_now == 0:
                break
            time.sleep(0.1)
        feed_stats: dict[str, dict[str, int]] = {}
        for stats in _get_all([f.stop.remote() for f in self.feeds.values()]):
            feed_stats.update(stats or {})
        self._flush_risk()  # the summary counts what risk's last decisions wrote
        return build_summary(self.cfg, self.store, self._stats_delta(), feed_stats, strategy_stats,
                             [f"{k}" for k in self.all_actors()], self.plan)


def _home_feed(groups: list[FeedGroup], symbols: list[str], node_id: str | None) -> FeedGroup | None:
    """The one feed actor whose compiled graph a strategy joins (an actor takes part in one graph at a time):
    on the strategy's node, serving most of its symbols. Its other feeds deliver by actor calls."""
    local = [g for g in groups if g.node_id == node_id]
    return max(local, key=lambda g: sum(s in g.symbols for s in symbols), default=None)


def _wait_names_free(names: list[str], timeout: float = 30.0) -> None:
    """A killed named actor frees its name once Ray has marked it dead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = set(ray.util.list_named_actors())
        if not live.intersection(names):
            return
        time.sleep(0.1)
    raise LaunchError(f"actors {sorted(set(ray.util.list_named_actors()).intersection(names))} did not stop")


def _get_all(refs: list[Any], timeout: float = 10.0) -> list[Any]:
    out = []
    for r in refs:
        try:
            out.append(ray.get(r, timeout=timeout))
        except Exception as exc:
            log.warning("shutdown: an actor did not answer: %s", type(exc).__name__)
            out.append(None)
    return out


def _dashboard_url() -> str:
    with contextlib.suppress(Exception):
        url = ray.get_runtime_context().dashboard_url if hasattr(ray.get_runtime_context(), "dashboard_url") else ""
        if url:
            return url if url.startswith("http") else f"http://{url}"
    with contextlib.suppress(Exception):
        from ray._private.worker import global_worker

        url = global_worker.node.address_info.get("webui_url", "")
        return f"http://{url}" if url else ""
    return ""


def build_summary(cfg: ClusterConfig, store: StateStore, stats: dict[str, int], feed_stats: dict[str, dict[str, int]],
                  strategy_stats: dict[str, Any], actors: list[str], plan: PlacementPlan | None) -> dict[str, Any]:
    positions = store.positions()
    marks = store.marks()
    symbols = [s.symbol for s in cfg.symbols]
    net = dict.fromkeys(symbols, 0.0)
    realized = unrealized = fees = 0.0
    for p in positions:
        net[p.symbol] = net.get(p.symbol, 0.0) + p.qty
        realized += p.realized_pnl
        fees += p.fees
        unrealized += p.unrealized(marks.get(p.symbol))
    rejected: dict[str, int] = {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("rejected:") and v}
    for st in strategy_stats.values():
        for reason, n in ((st or {}).get("rejected") or {}).items():
            if reason == "risk_unavailable":  # decided in the strategy actor, never reached risk's audit
                rejected[reason] = rejected.get(reason, 0) + n
    return {
        "cluster": cfg.cluster.name,
        "symbols": symbols,
        "actors": sorted(actors),
        "orders_submitted": stats.get("orders_submitted", 0),
        "orders_rejected": rejected,
        "fills": stats.get("fills", 0),
        "fills_by_symbol": {s: stats.get(f"fills:{s}", 0) for s in symbols},
        "realized_pnl": round(realized - fees, 6),
        "fees": round(fees, 6),
        "unrealized_pnl": round(unrealized, 6),
        "positions": {s: round(q, 12) for s, q in net.items()},
        "max_abs_position": {s: store.max_abs_positions().get(s, 0.0) for s in symbols},
        "book_updates": {s: feed_stats.get(s, {}).get("applied", 0) for s in symbols},
        "placement": plan.symbol_nodes() if plan else {},
        "strategies": {k: (v or {}).get("counters", {}) for k, v in strategy_stats.items()},
    }


def summary_to_json(summary: dict[str, Any]) -> bytes:
    return msgspec.json.format(msgspec.json.encode(summary), indent=2)
