"""`python -m cluster params set|get STRATEGY [KEY VALUE]`: change a running strategy's parameters.

Finds the running cluster through `<cluster.data_dir>/<cluster.name>.current.json` (written by `run`),
joins its Ray namespace and calls `set_params` on the actor `strategy:<STRATEGY>`. The strategy class
validates the value (all or nothing); a refusal is printed as one line and nothing changes.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cluster.config import load_config


def register(sub: Any) -> None:
    p = sub.add_parser("params", help="show or change a running strategy's parameters")
    ps = p.add_subparsers(dest="action", required=True)
    s = ps.add_parser("set", help="set one parameter of a running strategy (validated by the strategy)")
    s.add_argument("strategy")
    s.add_argument("key")
    s.add_argument("value", help="a YAML scalar: 0.3, 5, true, text")
    s.add_argument("--config", default="configs/paper.yaml")
    s.set_defaults(func=cmd_params)
    g = ps.add_parser("get", help="print a running strategy's parameters")
    g.add_argument("strategy")
    g.add_argument("--config", default="configs/paper.yaml")
    g.set_defaults(func=cmd_params)


def cmd_params(args: argparse.Namespace) -> int:
    from cluster.cli import CliError
    from cluster.commands.backtest import parse_value
    from strategies import create_strategy
    from strategies.base import StrategyParamError

    cfg = load_config(args.config)
    st = next((s for s in cfg.strategies if s.name == args.strategy), None)
    if st is None:
        raise CliError(f"unknown strategy {args.strategy!r}; configured: {[s.name for s in cfg.strategies]}")
    change: dict[str, Any] = {}
    if args.action == "set":
        change = {args.key: parse_value(args.value)}
        # Unknown keys and wrong types are refused here, before touching the cluster.
        venues = {s: cfg.symbol_map[s].venue for s in st.symbols}
        probe = create_strategy(st.type, st.name, st.symbols, venues, st.params)
        try:
            probe.set_params(change)
        except StrategyParamError as exc:
            raise CliError(str(exc)) from None
    actor = connect_strategy(cfg, args.strategy)
    import ray

    try:
        params = ray.get(actor.set_params.remote(change), timeout=10)
    except Exception as exc:
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, StrategyParamError) or isinstance(exc, StrategyParamError):
            raise CliError(str(cause).splitlines()[-1] if "\n" in str(cause) else str(cause)) from None
        raise CliError(f"strategy:{args.strategy} did not answer: {type(exc).__name__}: {exc}") from None
    if args.action == "set":
        print(f"strategy:{args.strategy} {args.key} = {params[args.key]!r}")
    else:
        print(json.dumps(params, indent=2, sort_keys=True))
    return 0


def connect_strategy(cfg: Any, name: str) -> Any:
    """The actor handle of `strategy:<name>` in the running cluster of `cfg`."""
    import ray

    from cluster.cli import CliError
    from cluster.launch import join_running_cluster

    info = join_running_cluster(cfg)
    try:
        return ray.get_actor(f"strategy:{name}", namespace=info["namespace"])
    except ValueError:
        raise CliError(f"no actor strategy:{name} in the running cluster {cfg.cluster.name!r}") from None
