"""`order`, `cancel-all`, `flatten`: trade by hand on a running cluster, always through the risk actor.

`order` submits an intent as strategy `manual`, waits for the order to reach a
final state (or `--wait` seconds) and prints it; `--notional` asks for a market
order for an amount of quote currency instead of `--qty` (risk checks it as
notional / mid, the venue decides the quantity). `cancel-all` asks each gateway
to cancel its open orders. `flatten` sends, per symbol with a non-zero net
position, a market order the other way (through risk, like any order), in whole
lots: what a notional order bought off the lot grid leaves less than a lot.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from typing import Any

MANUAL_STRATEGY = "manual"


def register(sub: Any) -> None:
    from cluster.cli import DEFAULT_CONFIG

    p = sub.add_parser("order", help="send one order through the risk actor and print its final state")
    p.add_argument("--venue", required=True)
    p.add_argument("--symbol", required=True)
    p.add_argument("--side", required=True, choices=["buy", "sell"])
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--qty", type=float, help="quantity in base units")
    size.add_argument("--notional", type=float,
                      help="market orders only: an amount of quote currency (e.g. USDT) instead of --qty")
    p.add_argument("--price", type=float, default=None)
    p.add_argument("--type", dest="order_type", choices=["limit", "market"], default=None,
                   help="default: limit with --price, else market")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a final state")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_order)

    c = sub.add_parser("cancel-all", help="cancel every open order (of one venue)")
    c.add_argument("--venue", default=None)
    c.add_argument("--config", default=DEFAULT_CONFIG)
    c.set_defaults(func=cmd_cancel_all)

    f = sub.add_parser("flatten", help="close every net position (of one venue) with market orders via risk")
    f.add_argument("--venue", default=None)
    f.add_argument("--config", default=DEFAULT_CONFIG)
    f.set_defaults(func=cmd_flatten)


def _connect(cfg: Any) -> Any:
    """Join the running cluster's Ray namespace; returns the `ray` module.

    A process already connected to Ray (the driver that started the cluster, a test) uses its connection.
    """
    import ray

    from cluster.launch import join_running_cluster

    join_running_cluster(cfg, logging.ERROR)
    return ray


def _venues(cfg: Any, venue: str | None) -> list[str]:
    from cluster.cli import CliError

    if venue is not None and venue not in cfg.venues:
        raise CliError(f"unknown venue {venue!r}; configured: {sorted(cfg.venues)}")
    return [venue] if venue else sorted(cfg.venues)


def build_intent(args: argparse.Namespace, cfg: Any) -> Any:
    from cluster.cli import CliError
    from cluster.messages import OrderIntent, OrderType, Side

    _venues(cfg, args.venue)
    if args.symbol not in cfg.symbol_map:
        raise CliError(f"unknown symbol {args.symbol!r}; configured: {sorted(cfg.symbol_map)}")
    notional = getattr(args, "notional", None)
    if notional is not None:
        if not (math.isfinite(notional) and notional > 0):
            raise CliError(f"--notional must be a positive finite amount of quote currency, got {notional!r}")
        if args.order_type == "limit" or args.price is not None:
            raise CliError("--notional is for market orders only: drop --price / --type limit, or use --qty")
        return OrderIntent(strategy=MANUAL_STRATEGY, venue=args.venue, symbol=args.symbol, side=Side(args.side),
                           qty=0.0, notional=notional, order_type=OrderType.MARKET, created_ts_ns=time.time_ns())
    if not (math.isfinite(args.qty) and args.qty > 0):
        raise CliError(f"--qty must be a positive finite number, got {args.qty!r}")
    otype = args.order_type or ("limit" if args.price is not None else "market")
    if otype == "limit" and (args.price is None or not args.price > 0):
        raise CliError("a limit order needs --price > 0")
    return OrderIntent(strategy=MANUAL_STRATEGY, venue=args.venue, symbol=args.symbol, side=Side(args.side),
                       qty=args.qty, order_type=OrderType(otype), price=args.price if otype == "limit" else None,
                       created_ts_ns=time.time_ns())


def _submit_and_wait(ray: Any, intent: Any, wait_s: float) -> tuple[Any, Any]:
    risk = ray.get_actor("risk")
    decision = ray.get(risk.submit.remote(intent), timeout=10)
    if not decision.approved:
        return decision, None
    gw = ray.get_actor(f"gateway:{intent.venue}")
    deadline = time.monotonic() + wait_s
    order = None
    while time.monotonic() < deadline:
        order = ray.get(gw.order.remote(decision.client_order_id), timeout=5)
        if order is not None and order.status.is_terminal:
            break
        time.sleep(0.1)
    return decision, order


def _print_order(order: Any) -> None:
    size = f"{order.qty:g}" if order.notional is None else f"notional {order.notional:g} (est. qty {order.qty:g})"
    print(f"{order.client_order_id} {order.symbol} {order.side.value} {size} "
          f"{order.order_type.value}{' @ ' + format(order.price, 'g') if order.price else ''}: {order.status.value}, "
          f"filled {order.filled_qty:g}{' @ ' + format(order.avg_fill_price, 'g') if order.filled_qty else ''}"
          f"{' (' + order.reason + ')' if order.reason else ''}")


def cmd_order(args: argparse.Namespace) -> int:
    from cluster.config import load_config

    cfg = load_config(args.config)
    intent = build_intent(args, cfg)
    ray = _connect(cfg)
    decision, order = _submit_and_wait(ray, intent, args.wait)
    if not decision.approved:
        print(f"rejected by risk: {decision.reason.value}{': ' + decision.detail if decision.detail else ''}")
        return 1
    if order is None:
        print(f"{decision.client_order_id}: approved, no state recorded yet")
        return 1
    _print_order(order)
    return 0 if order.status.value != "rejected" else 1


def cmd_cancel_all(args: argparse.Namespace) -> int:
    from cluster.config import load_config

    cfg = load_config(args.config)
    venues = _venues(cfg, args.venue)
    ray = _connect(cfg)
    for v in venues:
        n = ray.get(ray.get_actor(f"gateway:{v}").cancel_all.remote(None), timeout=10)
        print(f"{v}: cancel requested for {n} order(s)")
    return 0


def cmd_flatten(args: argparse.Namespace) -> int:
    from cluster.cli import connect_store
    from cluster.config import load_config
    from cluster.messages import OrderIntent, OrderType, Side

    cfg = load_config(args.config)
    venues = _venues(cfg, args.venue)
    store = connect_store(cfg)
    net: dict[tuple[str, str], float] = {}
    for p in store.positions():
        if p.venue in venues:
            net[(p.venue, p.symbol)] = net.get((p.venue, p.symbol), 0.0) + p.qty
    ray = _connect(cfg)
    for v in venues:
        ray.get(ray.get_actor(f"gateway:{v}").cancel_all.remote(None), timeout=10)
    rc = sent = 0
    for (venue, symbol), qty in sorted(net.items()):
        lot = cfg.symbol_map[symbol].lot_size if symbol in cfg.symbol_map else 0.0
        size = whole_lots(abs(qty), lot)
        if size <= 0.0:
            if abs(qty) >= 1e-12:
                print(f"{venue} {symbol}: {abs(qty):g} left, less than one lot ({lot:g})")
            continue
        sent += 1
        intent = OrderIntent(strategy=MANUAL_STRATEGY, venue=venue, symbol=symbol,
                             side=Side.SELL if qty > 0 else Side.BUY, qty=size, order_type=OrderType.MARKET,
                             created_ts_ns=time.time_ns())
        decision, order = _submit_and_wait(ray, intent, 10.0)
        if not decision.approved:
            print(f"{venue} {symbol}: rejected by risk: {decision.reason.value}")
            rc = 1
        elif order is not None:
            _print_order(order)
    if not sent:
        print("nothing to flatten")
    return rc


def whole_lots(qty: float, lot: float) -> float:
    """`qty` rounded down to the lot grid risk checks orders against (within its 1e-6 lot tolerance)."""
    if lot <= 0.0:
        return qty
    steps = qty / lot
    n = round(steps) if abs(steps - round(steps)) <= 1e-6 else math.floor(steps)
    return round(n * lot, 12)
