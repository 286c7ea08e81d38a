"""`python -m cluster replay-book`: rebuild a venue's book from a REST snapshot and recorded depth events.

    python -m cluster replay-book --venue binance --snapshot SNAP.json --events EVENTS.jsonl \\
        --depth 10 --out OUT.jsonl

Binance's documented procedure, applied to files: events with `u` <= the book's update id are
stale or duplicates and are dropped; an event with `U` > update id + 1 is a gap and forces a
resync (a new snapshot: the next `--snapshot`, if more than one was given; with none left the
tool stops applying and says so); otherwise its levels are set (absolute quantities, 0 removes
the level) and the update id becomes its `u`. One output line per applied event:
`{"u": ..., "bids": [[price, qty], ...], "asks": [...]}`, best first, `--depth` levels, with the
venue's own decimal strings; `{"resync": true, "reason": "..."}` where the stream forced a resync.
Malformed lines are reported on stderr with their line number and skipped; the exit code is 0
unless a file cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import msgspec
from sortedcontainers import SortedDict

from gateways.binance.depth_sync import (
    DepthSnapshot,
    MalformedMessage,
    parse_depth_message,
    parse_depth_snapshot,
)

_encode = msgspec.json.Encoder().encode


class StringBook:
    """One side per SortedDict keyed by the exact decimal value; values keep the venue's strings."""

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()  # -price -> (price str, qty str)
        self.asks: SortedDict = SortedDict()  # price -> (price str, qty str)

    def load(self, snap: DepthSnapshot) -> None:
        self.bids.clear()
        self.asks.clear()
        self.apply(snap.bids, snap.asks)

    def apply(self, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> None:
        for side, levels, sign in ((self.bids, bids, -1), (self.asks, asks, 1)):
            for p, q in levels:
                key = Decimal(p) * sign
                if Decimal(q) == 0:
                    side.pop(key, None)
                else:
                    side[key] = (p, q)

    def top(self, n: int) -> tuple[list[list[str]], list[list[str]]]:
        return ([list(self.bids.peekitem(i)[1]) for i in range(min(n, len(self.bids)))],
                [list(self.asks.peekitem(i)[1]) for i in range(min(n, len(self.asks)))])


class BookReplay:
    """The procedure over lines of a file; writes output lines and reports problems to `err`."""

    def __init__(self, snapshots: list[DepthSnapshot], depth: int, out: IO[str], err: IO[str],
                 symbol: str | None = None) -> None:
        self.snapshots = list(snapshots)
        self.depth = depth
        self.out = out
        self.err = err
        self.symbol = symbol.upper() if symbol else None
        self.book = StringBook()
        self.update_id = 0
        self.synced = False
        self.applied_since_snapshot = 0
        self.counts = dict.fromkeys(("applied", "stale", "resyncs", "malformed", "skipped_unsynced"), 0)
        self._next_snapshot()

    def _next_snapshot(self) -> bool:
        if not self.snapshots:
            self.synced = False
            return False
        snap = self.snapshots.pop(0)
        self.book.load(snap)
        self.update_id = snap.lastUpdateId
        self.applied_since_snapshot = 0
        self.synced = True
        return True

    def _report(self, lineno: int, problem: str) -> None:
        print(f"line {lineno}: {problem}; skipped", file=self.err)

    def feed_line(self, lineno: int, line: bytes) -> None:
        if not line.strip():
            return
        try:
            ev = parse_depth_message(line)
        except MalformedMessage as exc:
            self.counts["malformed"] += 1
            self._report(lineno, f"malformed ({exc.kind}): {exc.detail}")
            return
        if self.symbol is None:
            self.symbol = ev.s.upper()
        elif ev.s.upper() != self.symbol:
            self.counts["malformed"] += 1
            self._report(lineno, f"unknown symbol {ev.s!r} (this book is {self.symbol})")
            return
        if not self.synced:
            self.counts["skipped_unsynced"] += 1
            return
        while True:
            if ev.u <= self.update_id:
                self.counts["stale"] += 1  # old or duplicate
                return
            if self.update_id + 1 < ev.U:
                if self.applied_since_snapshot == 0:
                    reason = (f"snapshot too old: lastUpdateId {self.update_id} + 1 < first event U {ev.U} "
                              f"(line {lineno})")
                else:
                    reason = f"gap: event U {ev.U} > last update id {self.update_id} + 1 (line {lineno})"
                self.counts["resyncs"] += 1
                self.out.write(_encode({"resync": True, "reason": reason}).decode() + "\n")
                if self._next_snapshot():
                    continue  # re-evaluate this event against the new snapshot
                print(f"line {lineno}: resync needed and no further snapshot given: stopped applying events",
                      file=self.err)
                return
            break
        self.book.apply(ev.b, ev.a)
        self.update_id = ev.u
        self.applied_since_snapshot += 1
        self.counts["applied"] += 1
        bids, asks = self.book.top(self.depth)
        self.out.write(_encode({"u": ev.u, "bids": bids, "asks": asks}).decode() + "\n")


def _read_snapshot(path: str) -> DepthSnapshot:
    from cluster.cli import CliError

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read snapshot {path}: {exc.strerror}") from None
    try:
        return parse_depth_snapshot(raw)
    except MalformedMessage as exc:
        raise CliError(f"snapshot {path} is not a depth snapshot ({exc.kind}): {exc.detail}") from None


def cmd_replay_book(args: argparse.Namespace) -> int:
    from cluster.cli import CliError

    if args.depth < 1:
        raise CliError("--depth must be >= 1")
    snapshots = [_read_snapshot(p) for p in args.snapshot]
    try:
        events = open(args.events, "rb")  # noqa: SIM115 - closed below, after the output is written
    except OSError as exc:
        raise CliError(f"cannot read events {args.events}: {exc.strerror}") from None
    try:
        out: Any = sys.stdout if args.out == "-" else open(args.out, "w")  # noqa: SIM115
    except OSError as exc:
        events.close()
        raise CliError(f"cannot write {args.out}: {exc.strerror}") from None
    try:
        replay = BookReplay(snapshots, args.depth, out, sys.stderr, symbol=args.symbol)
        for lineno, line in enumerate(events, start=1):
            replay.feed_line(lineno, line)
    finally:
        events.close()
        if out is not sys.stdout:
            out.close()
    c = replay.counts
    print(f"replay-book: applied {c['applied']}, stale/duplicate dropped {c['stale']}, resyncs {c['resyncs']}, "
          f"malformed {c['malformed']}" + (f", not applied after the last resync {c['skipped_unsynced']}"
                                           if c["skipped_unsynced"] else ""), file=sys.stderr)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("replay-book", help="rebuild a venue's book from a depth snapshot and recorded events",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--venue", required=True, choices=["binance"], help="whose procedure and wire format")
    p.add_argument("--snapshot", required=True, action="append",
                   help="REST depth response (JSON); repeat to give the snapshots to use after resyncs, in order")
    p.add_argument("--events", required=True, help="JSONL, one raw depth event a line (bare or combined-stream)")
    p.add_argument("--depth", type=int, default=10, help="levels per side in each output line")
    p.add_argument("--out", required=True, help="output JSONL ('-' for stdout)")
    p.add_argument("--symbol", default=None, help="only this symbol (default: the first event's)")
    p.set_defaults(func=cmd_replay_book)
