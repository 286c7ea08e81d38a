"""`python -m cluster ...`: run the cluster and operate it.

Every command reads the same config; errors are one clear line on stderr and a
non-zero exit code, never a traceback, for anything a user can get wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cluster.config import ClusterConfig, ConfigError, load_config
from cluster.redis_server import RedisStartError

DEFAULT_CONFIG = "configs/paper.yaml"


class CliError(RuntimeError):
    """A user-facing failure: printed as one line, exit code 2."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ConfigError, CliError, RedisStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from cluster.launch import LaunchError

        if isinstance(exc, LaunchError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cluster", description="Ray strategy cluster")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start Redis, Ray and the cluster; trade until Ctrl-C or --duration")
    run.add_argument("--config", default=DEFAULT_CONFIG)
    run.add_argument("--duration", type=float, default=None, help="seconds to run, then shut down cleanly")
    run.add_argument("--summary-json", default=None, help="write the end-of-run summary here")
    run.add_argument("--verbose", action="store_true")
    run.set_defaults(func=cmd_run)

    st = sub.add_parser("status", help="actors and nodes, positions, P&L, open orders, risk state")
    st.add_argument("--config", default=DEFAULT_CONFIG)
    st.add_argument("--json", action="store_true", help="print JSON instead of tables")
    st.add_argument("--run", default=None, metavar="DIR|last",
                    help="a stopped run: its folder, or `last` (its Redis is started again from the run's files)")
    st.set_defaults(func=cmd_status)

    ks = sub.add_parser("kill-switch", help="stop new orders (and cancel resting ones) or allow them again")
    ks.add_argument("state", choices=["on", "off"])
    ks.add_argument("--venue", default=None, help="only this venue")
    ks.add_argument("--strategy", default=None, help="only this strategy")
    ks.add_argument("--config", default=DEFAULT_CONFIG)
    ks.set_defaults(func=cmd_kill_switch)

    # Further commands live one per module in cluster/commands/, each with `register(subparsers)`.
    import importlib
    import pkgutil

    import cluster.commands

    for mod in sorted(pkgutil.iter_modules(cluster.commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"cluster.commands.{mod.name}").register(sub)
    return p


# -- run -------------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.duration is not None and args.duration <= 0:
        raise CliError("--duration must be > 0 seconds")
    from cluster.launch import ClusterRun, summary_to_json

    run = ClusterRun(cfg)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    summary: dict[str, Any] = {}
    try:
        print(f"starting cluster {cfg.cluster.name!r}: {len(cfg.symbols)} symbols, {len(cfg.strategies)} strategies")
        run.start()
        # ray.init puts its own SIGTERM handler in place (a stack dump, then exit: no clean shutdown); ours again.
        signal.signal(signal.SIGTERM, _raise_interrupt)
        _print_started(run)
        deadline = time.monotonic() + args.duration if args.duration else None
        next_report = time.monotonic() + 5.0
        next_check = time.monotonic() + 2.0
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
            if time.monotonic() >= next_check:
                next_check += 2.0
                for name in run.supervise():
                    print(f"supervisor: {name} restored (moved off a lost node, or restarted and wired again)",
                          flush=True)
            if time.monotonic() >= next_report:
                next_report += 5.0
                p = run.progress()
                print(f"[{p['elapsed_s']:>6.1f}s] orders {p['orders']:>6}  fills {p['fills']:>6}  "
                      f"realized P&L {p['realized_pnl']:>12.4f}", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: shutting down cleanly", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        summary = run.shutdown()
    if summary:
        print(format_summary(summary))
        if args.summary_json:
            Path(args.summary_json).write_bytes(summary_to_json(summary))
            print(f"summary written to {args.summary_json}")
    return 0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _print_started(run: Any) -> None:
    from cluster.launch import _dashboard_url, current_run_file
    from cluster.redis_server import redacted
    from risk.venue_rates import venue_rate_warnings

    shown = redacted(run.redis_url)
    where = f"; with its password in {current_run_file(run.cfg)}" if shown != run.redis_url else ""
    print(f"redis: {shown}  (data in {run.run_dir}{where})")
    if run.api_thread is not None:
        print(f"status API: {run.api_thread.url}/status  (OpenAPI at /openapi.json)")
    url = _dashboard_url()
    if url:
        print(f"ray dashboard: {url}")
    for name in sorted(run.all_actors()):
        print(f"  actor {name}")
    for venue, where in run.order_destinations().items():
        print(f"orders on {venue}: {where}")
    for line in venue_rate_warnings(run.cfg):
        print(f"warning: {line}")
    print("trading; Ctrl-C stops cleanly", flush=True)


def format_summary(s: dict[str, Any]) -> str:
    lines = ["", f"summary of cluster {s['cluster']!r}",
             f"{'symbol':<12}{'book updates':>14}{'fills':>8}{'position':>14}{'max |position|':>16}"]
    for sym in s["symbols"]:
        lines.append(f"{sym:<12}{s['book_updates'].get(sym, 0):>14}{s['fills_by_symbol'].get(sym, 0):>8}"
                     f"{s['positions'].get(sym, 0.0):>14.6g}{s['max_abs_position'].get(sym, 0.0):>16.6g}")
    rej = ", ".join(f"{k}={v}" for k, v in sorted(s["orders_rejected"].items())) or "none"
    lines += [f"orders submitted {s['orders_submitted']}, rejected: {rej}",
              f"fills {s['fills']}, realized P&L (net of fees {s['fees']:.4f}) {s['realized_pnl']:.4f}, "
              f"unrealized {s['unrealized_pnl']:.4f}"]
    return "\n".join(lines)


# -- operating a running cluster -------------------------------------------------------------------------
def connect_store(cfg: ClusterConfig) -> Any:
    """The Redis of the config, or of the running cluster started with this config."""
    from cluster.launch import current_run_file
    from cluster.state_store import StateStore

    url = cfg.redis.url
    if not url:
        path = current_run_file(cfg)
        if not path.exists():
            raise CliError(f"no running cluster {cfg.cluster.name!r} found ({path} is missing) and redis.url is "
                           "empty; start one with `make run`, set redis.url, or read a stopped run with --run last")
        url = json.loads(path.read_text())["redis_url"]
    store = StateStore.from_url(url, cfg.cluster.name)
    try:
        store.ping()
    except Exception as exc:
        raise CliError(f"cannot reach Redis at {url}: {exc}") from None
    return store


def finished_run_dir(cfg: ClusterConfig, run: str) -> Path:
    """The folder of a stopped run: `run` itself, or with "last" the newest `<data_dir>/<name>-*` run of `cfg`."""
    if run != "last":
        path = Path(run)
        if not (path / "redis").is_dir():
            raise CliError(f"--run {run}: not a run folder (no redis/ in it); runs are <data_dir>/<name>-<time>-<pid>")
        return path
    runs = sorted((p for p in Path(cfg.cluster.data_dir).glob(f"{cfg.cluster.name}-*") if (p / "redis").is_dir()),
                  key=lambda p: p.stat().st_mtime)
    if not runs:
        raise CliError(f"--run last: no run of {cfg.cluster.name!r} with its own Redis in {cfg.cluster.data_dir}/")
    return runs[-1]


@contextlib.contextmanager
def open_store(cfg: ClusterConfig, run: str | None = None) -> Iterator[Any]:
    """The state store to read: the running cluster's (see `connect_store`), or with `run` a stopped run's,
    whose Redis is started again from the run folder's append-only file for as long as it is read."""
    if not run:
        yield connect_store(cfg)
        return
    from cluster.redis_server import EmbeddedRedis
    from cluster.state_store import StateStore

    folder = finished_run_dir(cfg, run)
    redis_server = EmbeddedRedis(folder / "redis")
    try:
        url = redis_server.start()
    except RedisStartError as exc:
        raise CliError(f"--run {folder}: cannot start its Redis again: {exc}") from None
    try:
        yield StateStore.from_url(url, cfg.cluster.name)
    finally:
        redis_server.stop()


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    with open_store(cfg, args.run) as store:
        return _print_status(cfg, store, args)


def _print_status(cfg: ClusterConfig, store: Any, args: argparse.Namespace) -> int:
    positions = store.positions()
    marks = store.marks()
    stats = store.stats()
    actors = {k: json.loads(v) for k, v in store.actors().items()}
    open_orders = store.open_orders()
    status = {
        "cluster": cfg.cluster.name,
        "actors": actors,
        "positions": [{"strategy": p.strategy, "symbol": p.symbol, "qty": p.qty, "avg_price": p.avg_price,
                       "realized_pnl": p.realized_pnl, "fees": p.fees,
                       "unrealized_pnl": p.unrealized(marks.get(p.symbol))} for p in positions],
        "open_orders": [{"client_order_id": o.client_order_id, "strategy": o.strategy, "symbol": o.symbol,
                         "side": o.side.value, "qty": o.qty, "price": o.price, "status": o.status.value,
                         "filled": o.filled_qty} for o in open_orders],
        "kill_switches": sorted(store.kill_switches()),
        "decisions": {"orders_submitted": stats.get("orders_submitted", 0),
                      "rejected": {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("rejected:")}},
        "fills": stats.get("fills", 0),
        "risk": _risk_state(store),
    }
    from dashboards.status_reader import StatusReader, format_performance

    perf = StatusReader(store, live=not args.run).performance()
    status["performance"] = perf.to_dict()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"cluster {cfg.cluster.name!r}")
    print("actors:")
    for name, info in sorted(actors.items()):
        print(f"  {name:<36} {info.get('role', ''):<9} node {info.get('node_id', '')[:12]}")
    print("positions:")
    print(f"  {'strategy':<16}{'symbol':<12}{'qty':>12}{'avg price':>14}{'realized':>12}{'unrealized':>12}")
    for p in status["positions"]:
        print(f"  {p['strategy']:<16}{p['symbol']:<12}{p['qty']:>12.6g}{p['avg_price']:>14.6g}"
              f"{p['realized_pnl'] - p['fees']:>12.4f}{p['unrealized_pnl']:>12.4f}")
    total = sum(p["realized_pnl"] - p["fees"] for p in status["positions"])
    unreal = sum(p["unrealized_pnl"] for p in status["positions"])
    print(f"  P&L: realized (net of fees) {total:.4f}, unrealized {unreal:.4f}, fills {status['fills']}")
    print(f"open orders: {len(open_orders)}")
    for o in status["open_orders"][:20]:
        print(f"  {o['client_order_id']:<24}{o['strategy']:<16}{o['symbol']:<12}{o['side']:<5}{o['qty']:>10.6g} "
              f"@ {o['price']}  {o['status']}")
    print(f"risk: kill switches {status['kill_switches'] or 'off'}; orders {status['decisions']['orders_submitted']}, "
          f"rejected by reason {status['decisions']['rejected'] or '{}'}")
    rk = status["risk"]
    states = ", ".join(f"{k}={v.get('state')} ({v.get('reason', '')})" for k, v in rk["trading_states"].items())
    print(f"risk: trading states {states or 'all active'}; equity {rk.get('equity', '?')}, peak "
          f"{rk.get('peak_equity', '?')}, drawdown {rk.get('drawdown_pct', '?')}%; "
          f"limit overrides {rk['limit_overrides'] or 'none'}")
    for scope, dd in rk.get("drawdowns", {}).items():
        limit = f" (breaker at {dd['max_drawdown_pct']:g}%)" if "max_drawdown_pct" in dd else ""
        print(f"risk: drawdown {scope}: equity {dd.get('equity', '?')}, peak {dd.get('peak_equity', '?')}, "
              f"drawdown {dd.get('drawdown_pct', '?')}%{limit}")
    print(format_performance(perf))
    return 0


def _risk_state(store: Any) -> dict[str, Any]:
    """Trading states, limit overrides and the loss breakers' numbers, as the risk actor last wrote them."""
    states = {}
    for scope, raw in store.trading_states().items():
        try:
            states[scope] = json.loads(raw)
        except ValueError:
            states[scope] = {"state": "halted", "reason": "unreadable"}
    values = store.risk_values()
    out: dict[str, Any] = {"trading_states": states,
                           "limit_overrides": {k: json.loads(v) for k, v in store.limit_overrides().items()}}
    for k in ("equity", "peak_equity", "drawdown_pct"):
        if k in values:
            out[k] = round(float(values[k]), 4)
    out["drawdowns"] = _scope_drawdowns(values.get("drawdowns", ""))
    return out


def _scope_drawdowns(raw: str) -> dict[str, dict[str, float]]:
    """Per-scope (venue, strategy) equity, peak and drawdown from risk's `drawdowns` JSON, sorted by scope.
    `global` is left out (it is the top-level equity/peak/drawdown), and so are scopes without numbers."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    out: dict[str, dict[str, float]] = {}
    for scope in sorted(data if isinstance(data, dict) else {}):
        fields = data[scope]
        if scope == "global" or not isinstance(fields, dict):
            continue
        nums = {k: round(float(v), 4) for k, v in fields.items() if isinstance(v, int | float)}
        if "drawdown_pct" in nums:
            out[scope] = nums
    return out


def cmd_kill_switch(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.venue and args.strategy:
        raise CliError("give --venue or --strategy, not both")
    if args.venue and args.venue not in cfg.venues:
        raise CliError(f"unknown venue {args.venue!r}; configured: {sorted(cfg.venues)}")
    if args.strategy and args.strategy not in {s.name for s in cfg.strategies}:
        raise CliError(f"unknown strategy {args.strategy!r}")
    scope = f"venue:{args.venue}" if args.venue else f"strategy:{args.strategy}" if args.strategy else "global"
    store = connect_store(cfg)
    store.set_kill_switch(scope, args.state == "on")
    print(f"kill switch {scope} {args.state}; the risk actor applies it to the next order"
          + (" and cancels resting orders" if args.state == "on" else ""))
    return 0
