"""`python -m cluster limits ...`: change risk limits and trading states while the cluster runs.

    limits show                      the config's limits, the overrides in force, trading states
    limits set KEY VALUE             e.g. `defaults.max_order_qty 2`, `symbols.BTCUSDT.max_position_qty 0.1`,
                                     `strategies.mm.max_orders_per_min 30`, `max_drawdown_pct 3`; VALUE `null`
                                     means no limit at that scope
    limits unset KEY                 drop an override (back to the config's value)
    limits state SCOPE STATE         SCOPE: global | venue:V | strategy:S | symbol:SYM; STATE: active |
                                     reducing | halted (halted also cancels the scope's resting orders)

Every change is validated against the `risk` schema before it is written to Redis, and
appended to the audit stream; the risk actor applies it within a quarter second.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import msgspec
import yaml

from cluster.config import ClusterConfig, ConfigError, load_config
from risk.limits import apply_overrides
from risk.trading_state import TradingState, TradingStatus, decode_status, encode_status


def register(sub: Any) -> None:
    from cluster.cli import DEFAULT_CONFIG

    p = sub.add_parser("limits", help="show or change risk limits and trading states while running")
    cmds = p.add_subparsers(dest="limits_command", required=True)
    show = cmds.add_parser("show", help="limits from the config, overrides in force, trading states")
    show.add_argument("--json", action="store_true")
    st = cmds.add_parser("set", help="override one limit (validated, audited)")
    st.add_argument("key")
    st.add_argument("value")
    un = cmds.add_parser("unset", help="drop an override")
    un.add_argument("key")
    state = cmds.add_parser("state", help="set a scope's trading state")
    state.add_argument("scope")
    state.add_argument("state", choices=[s.value for s in TradingState])
    state.add_argument("--reason", default="set by operator")
    for c in (show, st, un, state):
        c.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_limits)


def cmd_limits(args: argparse.Namespace) -> int:
    from cluster.cli import CliError, connect_store

    cfg = load_config(args.config)
    store = connect_store(cfg)
    current = store.limit_overrides()
    if args.limits_command == "show":
        return _show(cfg, store, current, args.json)
    if args.limits_command == "set":
        value = _parse_value(args.value)
        proposed = {**{k: json.loads(v) for k, v in current.items()}, args.key: value}
        try:
            validate_overrides(cfg, proposed)
        except ConfigError as exc:
            raise CliError(str(exc)) from None
        store.set_limit_override(args.key, json.dumps(value))
        _audit(store, "limits", {"key": args.key, "value": value,
                                 "previous": json.loads(current[args.key]) if args.key in current else None})
        print(f"risk limit {args.key} = {json.dumps(value)}; the risk actor applies it within a second")
        return 0
    if args.limits_command == "unset":
        if args.key not in current:
            raise CliError(f"no override {args.key!r}; overrides in force: {sorted(current) or 'none'}")
        store.set_limit_override(args.key, None)
        _audit(store, "limits", {"key": args.key, "value": None, "previous": json.loads(current[args.key]),
                                 "unset": True})
        print(f"risk limit override {args.key} removed (back to the config's value)")
        return 0
    # state
    scope = args.scope
    _check_scope(cfg, scope)
    target = TradingState(args.state)
    status = TradingStatus(state=target, reason=args.reason, source="operator", ts_ns=time.time_ns())
    store.set_trading_state(scope, None if target is TradingState.ACTIVE else encode_status(status))
    _audit(store, "trading_state", {"scope": scope, "state": target.value, "source": "operator",
                                    "reason": args.reason, "user": os.environ.get("USER", "")})
    print(f"trading state {scope} -> {target.value}" + (" (its resting orders are canceled)"
                                                       if target is TradingState.HALTED else ""))
    return 0


def validate_overrides(cfg: ClusterConfig, overrides: dict[str, Any]) -> None:
    """Raise ConfigError (naming the key) unless the config's risk section with these overrides is valid."""
    section = apply_overrides(cfg.risk, overrides)
    section.validate({s.symbol for s in cfg.symbols}, {s.name for s in cfg.strategies}, set(cfg.venues))


def _parse_value(text: str) -> Any:
    from cluster.cli import CliError

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise CliError(f"value {text!r} is not a number, true/false, null or a word") from None
    if isinstance(value, (dict, list)):
        raise CliError(f"value {text!r} must be a single number, true/false, null or a word")
    return value


def _check_scope(cfg: ClusterConfig, scope: str) -> None:
    from cluster.cli import CliError

    kind, _, name = scope.partition(":")
    known = {"venue": set(cfg.venues), "strategy": {s.name for s in cfg.strategies},
             "symbol": {s.symbol for s in cfg.symbols}}
    if scope == "global":
        return
    if kind not in known or not name:
        raise CliError(f"scope {scope!r} must be global, venue:NAME, strategy:NAME or symbol:SYMBOL")
    if name not in known[kind]:
        raise CliError(f"unknown {kind} {name!r}; configured: {sorted(known[kind])}")


def _audit(store: Any, kind: str, data: dict[str, Any]) -> None:
    data = {**data, "ts_ns": time.time_ns(), "by": "cli"}
    store.audit_event(kind, json.dumps(data).encode())


def full_builtins(obj: Any) -> Any:
    """Like msgspec.to_builtins, but keeping fields at their defaults (config Structs omit them)."""
    if isinstance(obj, msgspec.Struct):
        return {f: full_builtins(getattr(obj, f)) for f in obj.__struct_fields__}
    if isinstance(obj, dict):
        return {k: full_builtins(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [full_builtins(v) for v in obj]
    return msgspec.to_builtins(obj)


def _show(cfg: ClusterConfig, store: Any, current: dict[str, str], as_json: bool) -> int:
    overrides = {k: json.loads(v) for k, v in current.items()}
    try:
        effective = apply_overrides(cfg.risk, overrides)
    except ConfigError:
        effective = cfg.risk
    states = {}
    for scope, raw in store.trading_states().items():
        try:
            st = decode_status(raw)
            states[scope] = {"state": st.state.value, "reason": st.reason, "source": st.source}
        except (msgspec.DecodeError, msgspec.ValidationError):
            states[scope] = {"state": "halted", "reason": f"unreadable {raw!r}", "source": "?"}
    out = {"overrides": overrides, "effective": full_builtins(effective), "trading_states": states}
    if as_json:
        print(json.dumps(out, indent=2))
        return 0
    print("effective risk limits:")
    print(yaml.safe_dump(out["effective"], sort_keys=True).rstrip())
    print(f"overrides in force: {json.dumps(overrides) if overrides else 'none'}")
    print("trading states: " + (", ".join(f"{k}={v['state']} ({v['reason']})" for k, v in states.items())
                                if states else "all active"))
    return 0
