"""`python -m gateways.venue_sim --config configs/paper.yaml --port 0`: run the venue simulator.

Prints one JSON line when it listens (`{"event": "listening", "port": ..., ...}`), then serves
until SIGINT/SIGTERM. Fault flags inject drops, duplicates, reordering, delays, disconnects and
REST 429/5xx. `--replay FILE [--speed 1|0] [--loop] [--replay-symbol RECORDED=SERVED]` (or
`market.source: replay` in the config) serves a recording instead of the seeded market
(`gateways/venue_sim/replay.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

from gateways.venue_sim.exchange import FaultPlan, SimExchange
from gateways.venue_sim.replay import ReplayDriver, load_recording
from gateways.venue_sim.server import create_app, start_server


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gateways.venue_sim", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/paper.yaml", help="cluster config: symbols and market.* keys")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = any free port (reported on stdout)")
    g = p.add_argument_group("faults (probabilities per message / request)")
    for name in ("drop", "duplicate", "reorder", "delay", "rest-429", "rest-5xx"):
        g.add_argument(f"--{name}", type=float, default=0.0)
    g.add_argument("--delay-ms", type=float, default=0.0)
    g.add_argument("--disconnect-after", type=int, default=0, help="close each WebSocket after N messages")
    g.add_argument("--fault-seed", type=int, default=0)
    g.add_argument("--ping-interval", type=float, default=20.0, help="server ping interval, seconds")
    r = p.add_argument_group("replay (default: market.replay_path / replay_speed when market.source is replay)")
    r.add_argument("--replay", action="append", default=None, metavar="FILE",
                   help="serve this recording (raw gzip JSONL, venue messages, or a folder; SYMBOL=FILE names "
                        "the symbol of bare depth snapshots); repeatable")
    r.add_argument("--speed", type=float, default=None,
                   help="1 = the recorded pace (default), 2 = twice as fast, 0 = as fast as the feeds read it")
    r.add_argument("--loop", action="store_true", default=None,
                   help="start the recording again after its end (ids and times moved on); default market.replay_loop")
    r.add_argument("--replay-symbol", action="append", default=None, metavar="RECORDED=SERVED",
                   help="serve a recorded symbol under another name (e.g. BTCUSDT=BTC/USD for Alpaca clients); "
                        "repeatable; default market.replay_symbols")
    return p


def replay_from_args(args: argparse.Namespace, cfg: Any, exchange: SimExchange) -> ReplayDriver | None:
    """The replay the flags or the config ask for, or None (the seeded market)."""
    specs = args.replay or (cfg.market.replay_path if cfg.market.source == "replay" else None)
    if not specs:
        if args.speed is not None or args.loop or args.replay_symbol:
            raise ValueError("--speed, --loop and --replay-symbol need --replay (or market.source: replay)")
        return None
    speed = cfg.market.replay_speed if args.speed is None else args.speed
    loop = cfg.market.replay_loop if args.loop is None else args.loop
    rename = dict(cfg.market.replay_symbols)
    for pair in args.replay_symbol or ():
        recorded, sep, served = pair.partition("=")
        if not (sep and recorded and served):
            raise ValueError(f"--replay-symbol {pair!r}: expected RECORDED=SERVED, e.g. BTCUSDT=BTC/USD")
        rename[recorded] = served
    only = list(exchange.symbols)
    recording = load_recording(specs, default_symbol=only[0] if len(only) == 1 else "", rename=rename)
    return ReplayDriver(exchange, recording, speed, loop=loop)


def faults_from_args(args: argparse.Namespace) -> FaultPlan:
    return FaultPlan(drop=args.drop, duplicate=args.duplicate, reorder=args.reorder, delay=args.delay,
                     delay_ms=args.delay_ms, disconnect_after=args.disconnect_after, rest_429=args.rest_429,
                     rest_5xx=args.rest_5xx, seed=args.fault_seed)


async def serve(args: argparse.Namespace) -> int:
    from cluster.config import load_config

    cfg = load_config(args.config)
    exchange = SimExchange(cfg.symbols, cfg.market, faults_from_args(args))
    exchange.ping_interval_s = args.ping_interval
    replay = replay_from_args(args, cfg, exchange)
    runner, port = await start_server(create_app(exchange, replay=replay), args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"event": "listening", "host": args.host, "port": port,
                      "rest_url": f"http://{args.host}:{port}", "ws_url": f"ws://{args.host}:{port}",
                      "symbols": list(exchange.symbols),
                      **({"replay": replay.info()} if replay is not None else {})}), flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s venue_sim: %(message)s")
    try:
        return asyncio.run(serve(args))
    except (ValueError, OSError) as exc:  # ConfigError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
