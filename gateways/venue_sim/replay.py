"""Replaying recorded market data on the simulator's Binance and Alpaca WebSockets and Binance REST.

Input (`load_recording`): the raw recordings `gateways/recording.py` writes (gzip JSONL, one
`{"ts", "kind", "raw"}` a line), or files of venue messages as Binance or Alpaca sent them (one
JSON document, or one message a line, gzip or not: combined-stream messages, bare `depthUpdate` /
`trade` / `aggTrade` / `bookTicker` events, REST `GET /api/v3/depth` bodies, Alpaca frames), or a
folder of such files (e.g. the real samples in `shared/data/binance/`). Messages that are not
market data (`exchangeInfo`, user-data events, control answers) are skipped and counted. A bare
depth snapshot names no symbol: it takes the one of `SYMBOL=PATH`, else the only symbol of its
file, else the only symbol configured.

Serving (`ReplayDriver`): every recorded message is sent verbatim (the venue's bytes) at the
recorded pace (receive timestamps; `speed` 2 = twice as fast) or as fast as the subscribers read
it (`speed` 0, never overflowing a subscriber's queue), starting when the first subscriber has
subscribed. Per symbol the simulator keeps the venue's book built from the replayed diffs
(`ReplayMarket`) and answers `GET /api/v3/depth` from it with `lastUpdateId` = the last applied `u`,
so a feed syncing against the replay follows Binance's documented procedure: the book starts from
the recording's first snapshot, diffs with `u` <= the book's id are skipped, and where the
recording itself has a gap the book jumps to the recording's next snapshot (the recorder's own
resync). A recording without snapshots builds the book from its diffs alone.

Looping (`loop=True`, `market.replay_loop`, `--loop`): after the last record the recording starts
again, as a venue would after a restart that kept its ids going. Each pass after the first serves
the messages with update ids, trade and aggregate-trade ids and event times moved past everything
served before (ids of a pass stay contiguous; between passes the depth ids jump by at least 2), so a
feed sees a gap at the seam and resyncs by Binance's procedure from the REST snapshot (the
recording's first book, ids moved alike), and never takes a trade for a duplicate. Alpaca frames
are served as recorded in every pass.

Derived streams: `aggTrade` from `trade` (and `trade` from `aggTrade`) when the recording holds only
one of them, `bookTicker` from the book when it holds none, Alpaca trades/quotes/order books from
the Binance messages (`alpaca_market`); Alpaca frames in a recording go to Alpaca subscribers as
they are.
"""

from __future__ import annotations

import asyncio
import gzip
import heapq
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from sortedcontainers import SortedDict

from gateways.binance.depth_sync import (
    DepthSnapshot,
    DepthUpdateEvent,
    MalformedMessage,
    parse_depth_message,
    parse_depth_snapshot,
)

log = logging.getLogger(__name__)

MIN_PASS_S = 0.1  # a looping replay starts a pass at most this often
ALPACA_STREAM = "alpaca"  # the envelope `stream` of Alpaca frames handed to the protocol modules
_GZIP_MAGIC = b"\x1f\x8b"


class ReplayError(ValueError):
    """The recording cannot be served; the message names the file and what is wrong."""


# ---------------------------------------------------------------------------------------------- records


class _RawRecord(msgspec.Struct):
    ts: int
    kind: str
    raw: str


class _Probe(msgspec.Struct):
    """Just enough of any Binance message (combined, bare event or REST body) to classify it."""

    stream: str | None = None
    data: msgspec.Raw = msgspec.Raw()
    e: str | None = None
    E: int | None = None
    s: str | None = None
    lastUpdateId: int | None = None
    u: int | None = None
    b: Any = None
    B: Any = None
    a: Any = None
    A: Any = None
    symbols: Any = None
    result: Any = None
    id: Any = None


class _AlpacaProbe(msgspec.Struct):
    T: str = ""
    S: str = ""
    t: Any = None


class _TradeFields(msgspec.Struct):
    E: int = 0
    s: str = ""
    a: int = -1
    l: int = -1  # noqa: E741 - Binance's field name
    p: str = ""
    q: str = ""
    T: int = 0
    m: bool = False


_raw_record = msgspec.json.Decoder(_RawRecord)
_probe = msgspec.json.Decoder(_Probe)
_alpaca_items = msgspec.json.Decoder(list[msgspec.Raw])
_alpaca_probe = msgspec.json.Decoder(_AlpacaProbe)
_trade_fields = msgspec.json.Decoder(_TradeFields)
_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Record:
    """One replayable message. `msg`: the combined-stream message handed to the protocol modules
    (snapshots: the REST body); `event`: the parsed depth event or snapshot."""

    ts: int | None
    symbol: str
    kind: str  # depth | trade | aggTrade | bookTicker | snapshot | alpaca
    msg: bytes
    event: DepthUpdateEvent | DepthSnapshot | None = None


def _wrap(stream: str, data: bytes) -> bytes:
    return b'{"stream":"' + stream.encode() + b'","data":' + data + b"}"


@dataclass
class Recording:
    """The records of every input file, merged in receive-time order."""

    records: list[Record]
    symbols: list[str]
    skipped: dict[str, int] = field(default_factory=dict)  # by kind: not market data, malformed, ...
    files: list[Path] = field(default_factory=list)

    def kinds(self, symbol: str) -> set[str]:
        return {r.kind for r in self.records if r.symbol == symbol}


class _FileParser:
    def __init__(self, path: Path, symbol: str, skipped: dict[str, int]) -> None:
        self.path = path
        self.symbol = symbol
        self.skipped = skipped
        self.out: list[Record] = []
        self.last_ts: int | None = None

    def skip(self, kind: str, where: str, detail: str = "") -> None:
        n = self.skipped.get(kind, 0)
        self.skipped[kind] = n + 1
        if n == 0:
            log.warning("replay %s%s: skipped a message (%s)%s; later ones are only counted", self.path, where, kind,
                        f": {detail}" if detail else "")

    def message(self, raw: bytes, ts: int | None, where: str, rest_symbol: str | None = None) -> None:
        """Classify one venue message and append its record(s)."""
        body = raw.strip()
        if not body:
            return
        try:
            if rest_symbol is not None:
                snap = parse_depth_snapshot(body)
                self._add(Record(ts, rest_symbol, "snapshot", body, snap))
                return
            if body[:1] == b"[":
                self._alpaca(body, ts, where)
                return
            p = _probe.decode(body)
        except (msgspec.DecodeError, MalformedMessage) as exc:
            self.skip("malformed", where, str(exc))
            return
        stream, data, inner = None, body, p
        if p.stream is not None and len(p.data):
            stream, data = p.stream, bytes(p.data)
            try:
                inner = _probe.decode(data)
            except msgspec.DecodeError as exc:
                self.skip("malformed", where, str(exc))
                return
        if ts is None and inner.E is not None:
            ts = inner.E * 1_000_000
        if inner.lastUpdateId is not None:
            try:
                snap = parse_depth_snapshot(data)
            except MalformedMessage as exc:
                self.skip("malformed", where, str(exc))
                return
            self._add(Record(ts, "", "snapshot", data, snap))  # symbol filled in per file
            return
        e = inner.e
        if e == "depthUpdate":
            try:
                ev = parse_depth_message(data)
            except MalformedMessage as exc:
                self.skip("malformed", where, str(exc))
                return
            self._add(Record(ts, ev.s, "depth", _wrap(stream or f"{ev.s.lower()}@depth", data), ev))
        elif e in ("trade", "aggTrade") and inner.s:
            self._add(Record(ts, inner.s, e, _wrap(f"{inner.s.lower()}@{e}", data)))
        elif e is None and inner.s and inner.u is not None and inner.B is not None and inner.A is not None:
            self._add(Record(ts, inner.s, "bookTicker", _wrap(f"{inner.s.lower()}@bookTicker", data)))
        elif inner.symbols is not None:
            self.skip("exchange_info", where)
        elif e is not None:
            self.skip(f"not_market_data:{e}", where)
        elif inner.id is not None or inner.result is not None:
            self.skip("control", where)
        else:
            self.skip("unknown", where, body[:120].decode("utf-8", "replace"))

    def _alpaca(self, body: bytes, ts: int | None, where: str) -> None:
        for item in _alpaca_items.decode(body):
            p = _alpaca_probe.decode(item)
            if p.T in ("t", "q", "o", "b", "d", "u") and p.S:
                self._add(Record(ts, p.S, "alpaca", _wrap(ALPACA_STREAM, bytes(item))))
            elif p.T in ("success", "subscription", "error"):
                self.skip("control", where)
            else:
                self.skip("unknown", where, bytes(item)[:120].decode("utf-8", "replace"))

    def _add(self, rec: Record) -> None:
        if rec.ts is None:
            rec.ts = self.last_ts
        else:
            self.last_ts = rec.ts
        self.out.append(rec)

    def finish(self, default_symbol: str) -> list[Record]:
        """Give bare snapshots their symbol (see the module docstring)."""
        bare = [r for r in self.out if r.kind == "snapshot" and not r.symbol]
        if bare:
            own = {r.symbol for r in self.out if r.symbol}
            symbol = self.symbol or (own.pop() if len(own) == 1 else "") or default_symbol
            if not symbol:
                raise ReplayError(f"{self.path}: a depth snapshot names no symbol; give it as SYMBOL={self.path}")
            for r in bare:
                r.symbol = symbol
        return self.out


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror}") from None
    if data[:2] == _GZIP_MAGIC:
        with gzip.open(path, "rb") as f:
            chunks = []
            try:
                while chunk := f.read(1 << 20):
                    chunks.append(chunk)
            except (EOFError, OSError):  # a recording cut off mid-write: keep what is readable
                log.warning("replay %s: the gzip stream ends early; replaying what was written", path)
            data = b"".join(chunks)
    return data


def _parse_file(path: Path, symbol: str, default_symbol: str, skipped: dict[str, int]) -> list[Record]:
    data = _read_bytes(path)
    parser = _FileParser(path, symbol, skipped)
    lines = data.splitlines()
    first = next((ln for ln in lines if ln.strip()), b"")
    try:
        _raw_record.decode(first)
        raw_format = True
    except msgspec.DecodeError:
        raw_format = False
    if raw_format:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = _raw_record.decode(line)
            except msgspec.DecodeError:
                if n < len(lines):
                    parser.skip("malformed", f":{n}", "not a recording line")
                continue  # a torn last line ends the recording
            rest = rec.kind[5:] if rec.kind.startswith("rest:") else None
            if rest is None and rec.kind != "ws":
                parser.skip(f"kind:{rec.kind}", f":{n}")
                continue
            parser.message(rec.raw.encode(), rec.ts, f":{n}", rest)
    else:
        try:  # one JSON document (a pretty-printed sample), else one message a line
            doc = msgspec.json.decode(data)
        except msgspec.DecodeError:
            doc = None
        if doc is not None:
            parser.message(data, None, "")
        else:
            for n, line in enumerate(lines, 1):
                parser.message(line, None, f":{n}")
    return parser.finish(default_symbol)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and
                      (p.suffix in (".json", ".jsonl", ".gz", ".ndjson") or p.name.endswith(".jsonl.gz")))
    if not path.exists():
        raise ReplayError(f"{path}: no such file or folder")
    return [path]


def load_recording(specs: str | Iterable[str], default_symbol: str = "",
                   rename: Mapping[str, str] | None = None) -> Recording:
    """Read every file of `specs` (paths, folders or `SYMBOL=PATH`) into one time-ordered recording.

    Each file keeps its own order; files are merged by timestamp (messages without one, like a
    bare REST snapshot, keep their place in their file, or come first). `rename` ({recorded symbol:
    served symbol}) serves a recorded market under another name, e.g. a Binance BTCUSDT recording as
    Alpaca's BTC/USD: the messages stay as recorded, and the simulator keeps that market's book, feeds
    the Alpaca streams (which name it BTC/USD) and matches orders on it under the new name.
    """
    from cluster.config import replay_specs

    skipped: dict[str, int] = {}
    per_file: list[list[Record]] = []
    files: list[Path] = []
    for symbol, spec in replay_specs(list(specs) if not isinstance(specs, str) else specs):
        for path in _files(Path(spec).expanduser()):
            files.append(path)
            per_file.append(_parse_file(path, symbol, default_symbol, skipped))
    if not files:
        raise ReplayError(f"no recording files in {specs!r}")
    records = list(heapq.merge(*per_file, key=lambda r: -1 if r.ts is None else r.ts))
    first_ts = next((r.ts for r in records if r.ts is not None), 0)
    for r in records:
        if r.ts is None:
            r.ts = first_ts
    symbols = list(dict.fromkeys(r.symbol for r in records))
    if rename:
        symbols = _renamed(records, symbols, rename)
    return Recording(records, symbols, skipped, files)


def _renamed(records: list[Record], symbols: list[str], rename: Mapping[str, str]) -> list[str]:
    """Give the records of each renamed symbol its new name (see `load_recording`); the symbols after it."""
    absent = [s for s in rename if s not in symbols]
    if absent:
        raise ReplayError(f"replay symbols: the recording has no {absent}; it has {symbols}")
    served = [rename.get(s, s) for s in symbols]
    twice = sorted({s for s in served if served.count(s) > 1})
    if twice:
        raise ReplayError(f"replay symbols: {twice} would be served twice (renamed onto another recorded symbol)")
    for r in records:
        r.symbol = rename.get(r.symbol, r.symbol)
    return served


# ---------------------------------------------------------------------------------------------- books


class ReplayMarket:
    """The replayed venue's book of one symbol, with the venue's decimal strings.

    Same surface as `market_sim.SimulatedMarket` where the protocol modules and matchers read it:
    `snapshot(limit)` (a `GET /api/v3/depth` body), `book_levels()`, `update_id`, `mid`.
    """

    def __init__(self, symbol: str, snapshots: list[tuple[int, DepthSnapshot]] | None = None,
                 recorded_kinds: set[str] | None = None) -> None:
        self.symbol = symbol
        self.recorded_kinds = recorded_kinds or set()
        self._bids: SortedDict = SortedDict()  # price -> (price string, qty string)
        self._asks: SortedDict = SortedDict()
        self._update_id = 0
        self._snapshots = snapshots or []  # (record index, snapshot), in recording order
        self._next_snap = 0
        self.id_shift = 0  # added to every recorded update id: the pass's move (see "Looping")
        self.counters = dict.fromkeys(("applied", "skipped", "gaps", "jumps", "unrecoverable_gaps", "snapshots"), 0)

    @property
    def update_id(self) -> int:
        return self._update_id

    @property
    def mid(self) -> float | None:
        if not self._bids or not self._asks:
            return None
        return (self._bids.peekitem(-1)[0] + self._asks.peekitem(0)[0]) / 2.0

    def _load(self, snap: DepthSnapshot) -> None:
        self._bids = SortedDict({float(p): (p, q) for p, q in snap.bids if float(q) > 0})
        self._asks = SortedDict({float(p): (p, q) for p, q in snap.asks if float(q) > 0})
        self._update_id = snap.lastUpdateId + self.id_shift
        self.counters["snapshots"] += 1

    def _jump(self, index: int) -> bool:
        """Load the recording's next snapshot at or after `index` that is newer than the book."""
        while self._next_snap < len(self._snapshots):
            i, snap = self._snapshots[self._next_snap]
            self._next_snap += 1
            if i >= index and snap.lastUpdateId + self.id_shift > self._update_id:
                self._load(snap)
                return True
        return False

    def start(self, first_depth: DepthUpdateEvent | None) -> None:
        """The book before the first replayed message: the first snapshot, else empty just before the first diff."""
        if self._jump(0):
            return
        if first_depth is not None:
            self._update_id = first_depth.U - 1 + self.id_shift

    def restart(self, id_shift: int, first_depth: DepthUpdateEvent | None) -> None:
        """A new pass of a looping replay: the recording's first book again, its ids moved by `id_shift`."""
        self._bids, self._asks = SortedDict(), SortedDict()
        self._next_snap = 0
        self.id_shift = id_shift
        self._update_id = 0
        self.start(first_depth)

    def apply(self, ev: DepthUpdateEvent, index: int) -> None:
        """One replayed diff, with the venue's update procedure (see the module docstring)."""
        U, u = ev.U + self.id_shift, ev.u + self.id_shift  # noqa: N806 - Binance's field names
        if u <= self._update_id:
            self.counters["skipped"] += 1
            return
        if self._update_id + 1 < U:
            self.counters["gaps"] += 1
            while True:
                if not self._jump(index):
                    # No later snapshot: the venue's book is whatever its diffs make it.
                    self.counters["unrecoverable_gaps"] += 1
                    break
                self.counters["jumps"] += 1
                if u <= self._update_id:
                    self.counters["skipped"] += 1
                    return
                if self._update_id + 1 >= U:
                    break
        for levels, side in ((ev.b, self._bids), (ev.a, self._asks)):
            for p, q in levels:
                if float(q) == 0.0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = (p, q)
        self._update_id = u
        self.counters["applied"] += 1

    def apply_alpaca(self, item: bytes) -> None:
        """An Alpaca frame element: order book (`o`, `r` = full book) or a stock quote (`q`, the book's top)."""
        m = msgspec.json.decode(item)
        if m.get("T") == "o":
            if m.get("r"):
                self._bids, self._asks = SortedDict(), SortedDict()
            for key, side in (("b", self._bids), ("a", self._asks)):
                for lv in m.get(key) or []:
                    p, s = float(lv["p"]), float(lv["s"])
                    if s == 0.0:
                        side.pop(p, None)
                    else:
                        side[p] = (repr(p), repr(s))
        elif m.get("T") == "q" and "/" not in self.symbol:
            self._bids = SortedDict({float(m["bp"]): (repr(float(m["bp"])), repr(float(m["bs"])))})
            self._asks = SortedDict({float(m["ap"]): (repr(float(m["ap"])), repr(float(m["as"])))})

    def snapshot(self, limit: int = 1000) -> bytes:
        """`GET /api/v3/depth` body: `lastUpdateId` = the last applied `u`; levels as the venue wrote them."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        bids = [self._bids.peekitem(-1 - i)[1] for i in range(min(limit, len(self._bids)))]
        asks = [self._asks.peekitem(i)[1] for i in range(min(limit, len(self._asks)))]
        return _encode({"lastUpdateId": self._update_id, "bids": bids, "asks": asks})

    def book_levels(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The book as floats, best first (for matchers and tests)."""
        return ([(p, float(q)) for p, (_, q) in reversed(self._bids.items())],
                [(p, float(q)) for p, (_, q) in self._asks.items()])


# ---------------------------------------------------------------------------------------------- driver


@dataclass
class SubscriberProbe:
    """What a protocol module tells the driver: how many subscribers, and the longest outgoing queue."""

    subscribers: Callable[[], int]
    backlog: Callable[[], int]


class ReplayDriver:
    """Serves a `Recording` through a `SimExchange` in place of its seeded markets (see the module docstring)."""

    def __init__(self, exchange: Any, recording: Recording, speed: float = 1.0, *, wait_for_subscriber: bool = True,
                 batch: int = 256, max_backlog: int = 1000, loop: bool = False) -> None:
        if not (0.0 <= speed < float("inf")):
            raise ReplayError(f"replay speed must be >= 0 (0 = full speed), got {speed!r}")
        self.exchange = exchange
        self.recording = recording
        self.speed = speed
        self.wait_for_subscriber = wait_for_subscriber
        self.batch = batch
        self.max_backlog = max_backlog
        self.probes: list[SubscriberProbe] = []
        self.position = 0
        self.finished = False
        self.loop = loop
        self.passes = 0  # passes served to the end
        self._spans = _IdSpans(recording.records) if loop else None
        self._shift = _Shift()
        self.started_at: float | None = None
        records = recording.records
        snaps: dict[str, list[tuple[int, DepthSnapshot]]] = {}
        kinds: dict[str, set[str]] = {}
        for i, r in enumerate(records):
            kinds.setdefault(r.symbol, set()).add(r.kind)
            if r.kind == "snapshot":
                snaps.setdefault(r.symbol, []).append((i, r.event))  # type: ignore[arg-type]
        self.markets: dict[str, ReplayMarket] = {}
        for sym in [*exchange.symbols, *recording.symbols]:
            if sym not in self.markets:
                self.markets[sym] = ReplayMarket(sym, snaps.get(sym), kinds.get(sym, set()))
        missing = [s for s in exchange.symbols if s not in kinds]
        if missing:
            log.warning("replay: the recording has no messages for %s; they stay empty", missing)
        for sym, market in self.markets.items():
            first = next((r.event for r in records if r.symbol == sym and r.kind == "depth"), None)
            market.start(first)  # type: ignore[arg-type]
        # The protocol modules and matchers read `exchange.markets`; the recording is the market now.
        exchange.markets.clear()
        exchange.markets.update(self.markets)
        exchange.source = self._take
        self._pending: dict[str, list[bytes]] = {}
        self._first_depth = {sym: next((r.event for r in records if r.symbol == sym and r.kind == "depth"), None)
                             for sym in self.markets}

    @property
    def records(self) -> int:
        return len(self.recording.records)

    def info(self) -> dict[str, Any]:
        return {"records": self.records, "symbols": self.recording.symbols, "speed": self.speed, "loop": self.loop,
                "files": [str(f) for f in self.recording.files], "skipped": self.recording.skipped}

    def add_probe(self, probe: SubscriberProbe) -> None:
        self.probes.append(probe)

    def _take(self, dt_s: float) -> dict[str, list[bytes]]:
        out, self._pending = self._pending, {}
        return out

    def advance(self, end: int) -> dict[str, list[bytes]]:
        """Apply records [position, end) to the books; their messages by symbol (derived streams added)."""
        out: dict[str, list[bytes]] = {}
        records = self.recording.records
        shift = self._shift if self.passes else None  # the first pass serves the venue's bytes verbatim
        for i in range(self.position, end):
            r = records[i]
            market = self.markets[r.symbol]
            if r.kind == "snapshot":
                continue  # used when the book needed it (start or a gap in the recording)
            if r.kind == "depth":
                market.apply(r.event, i)  # type: ignore[arg-type]
            elif r.kind == "alpaca":
                market.apply_alpaca(r.msg[len(b'{"stream":"alpaca","data":'):-1])
            msg = r.msg if shift is None or r.kind == "alpaca" else shift.apply(r)
            msgs = out.setdefault(r.symbol, [])
            msgs.append(msg)
            if r.kind == "aggTrade" and "trade" not in market.recorded_kinds:
                msgs.append(_trade_from_agg(msg))
        self.position = end
        return out

    def _subscribers(self) -> int:
        return sum(p.subscribers() for p in self.probes)

    def _backlog(self) -> int:
        return max((p.backlog() for p in self.probes), default=0)

    def _emit(self, end: int) -> None:
        self._pending = self.advance(end)
        self.exchange.step(0.0)

    def next_pass(self) -> None:
        """Start the recording again, its ids and times moved past everything served (see "Looping")."""
        assert self._spans is not None, "next_pass needs loop=True"
        self._shift = self._shift.after(self._spans)
        for sym, market in self.markets.items():
            market.restart(self._shift.ids.get(sym, 0), self._first_depth.get(sym))
        self.passes += 1
        self.position = 0

    async def run(self) -> None:
        """Serve the whole recording (see the module docstring), again and again when looping; then keep the
        final books."""
        ex = self.exchange
        ex.running = True
        n = len(self.recording.records)
        if self.wait_for_subscriber and self.probes:
            while ex.running and not self._subscribers():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # let the first subscriber's other subscriptions arrive
        loop = asyncio.get_running_loop()
        self.started_at = loop.time()
        log.info("replay: serving %d records of %s at %s%s", n, self.recording.symbols,
                 "full speed" if not self.speed else f"{self.speed:g}x", ", looping" if self.loop else "")
        while True:
            began = loop.time()
            await self._serve_pass(n)
            if not (self.loop and n and ex.running):
                break
            # A recording of a few messages (or without receive times) would otherwise loop as fast as the CPU allows.
            await asyncio.sleep(max(0.0, MIN_PASS_S - (loop.time() - began)))
            self.next_pass()
            log.info("replay: pass %d", self.passes + 1)
        if self.position >= n:
            self.finished = True
            log.info("replay: finished (%d records in %.2f s); serving the final books", n,
                     loop.time() - self.started_at)
        while ex.running:  # keep serving REST and the open connections
            await asyncio.sleep(0.2)

    async def _serve_pass(self, n: int) -> None:
        ex = self.exchange
        records = self.recording.records
        loop = asyncio.get_running_loop()
        ts0 = records[0].ts if n else 0
        start = loop.time()
        while ex.running and self.position < n:
            if self.speed:
                now_ts = ts0 + int((loop.time() - start) * self.speed * 1e9)
                end = self.position
                while end < n and (records[end].ts or 0) <= now_ts:
                    end += 1
                if end == self.position:
                    wait = ((records[end].ts or 0) - now_ts) / 1e9 / self.speed
                    await asyncio.sleep(min(max(wait, 0.0), 1.0))
                    continue
                self._emit(end)
                await asyncio.sleep(0)
            else:
                while ex.running and self._backlog() > self.max_backlog:
                    await asyncio.sleep(0.002)
                self._emit(min(n, self.position + self.batch))
                await asyncio.sleep(0)


class _DataIds(msgspec.Struct):
    """The ids and times of a replayed message's `data` that a looping replay moves."""

    E: int | None = None
    T: int | None = None
    U: int | None = None
    u: int | None = None
    t: int | None = None
    a: Any = None  # aggTrade: its id; depth: the asks; bookTicker: the best ask price
    f: int | None = None
    l: int | None = None  # noqa: E741 - Binance's field name


class _EnvelopeIds(msgspec.Struct):
    data: _DataIds | None = None
    lastUpdateId: int | None = None


_envelope_ids = msgspec.json.Decoder(_EnvelopeIds)


class _IdSpans:
    """Per symbol, how far the recording's update ids, trade ids and aggregate-trade ids reach; and its times."""

    def __init__(self, records: list[Record]) -> None:
        self.ids: dict[str, tuple[int, int]] = {}
        self.trades: dict[str, tuple[int, int]] = {}
        self.aggs: dict[str, tuple[int, int]] = {}
        times: list[int] = []
        for r in records:
            if r.kind == "alpaca":
                continue
            try:
                env = _envelope_ids.decode(r.msg)
            except msgspec.DecodeError:  # loaded records are well formed; a shape we do not know moves nothing
                log.warning("replay: cannot read the ids of a %s record of %s", r.kind, r.symbol)
                continue
            d = env.data
            if env.lastUpdateId is not None:
                _widen(self.ids, r.symbol, env.lastUpdateId, env.lastUpdateId)
            if d is None:
                continue
            if d.U is not None and d.u is not None:
                _widen(self.ids, r.symbol, d.U, d.u)
            elif d.u is not None:  # bookTicker
                _widen(self.ids, r.symbol, d.u, d.u)
            for tid in (d.t, d.f, d.l):
                if tid is not None and tid >= 0:
                    _widen(self.trades, r.symbol, tid, tid)
            if r.kind == "aggTrade" and isinstance(d.a, int):
                _widen(self.aggs, r.symbol, d.a, d.a)
            times += [x for x in (d.E, d.T) if x]
        self.time_ms = (max(times) - min(times) + 1) if times else 1


def _widen(spans: dict[str, tuple[int, int]], symbol: str, low: int, high: int) -> None:
    lo, hi = spans.get(symbol, (low, high))
    spans[symbol] = (min(lo, low), max(hi, high))


@dataclass
class _Shift:
    """What one pass of a looping replay adds to the recorded ids (per symbol) and times (ms)."""

    ids: dict[str, int] = field(default_factory=dict)
    trades: dict[str, int] = field(default_factory=dict)
    aggs: dict[str, int] = field(default_factory=dict)
    time_ms: int = 0

    def after(self, spans: _IdSpans) -> _Shift:
        """The next pass: update ids past this pass's by a gap of >= 2 (the feed resyncs at the seam), trade ids
        just past them (contiguous), times past the recording's span."""
        def moved(current: dict[str, int], reach: dict[str, tuple[int, int]], gap: int) -> dict[str, int]:
            return {sym: current.get(sym, 0) + hi - lo + gap for sym, (lo, hi) in reach.items()}

        return _Shift(moved(self.ids, spans.ids, 2), moved(self.trades, spans.trades, 1),
                      moved(self.aggs, spans.aggs, 1), self.time_ms + spans.time_ms)

    def apply(self, r: Record) -> bytes:
        """The record's message with this pass's ids and times (a Binance combined-stream message)."""
        env = msgspec.json.decode(r.msg)
        d = env.get("data") if isinstance(env, dict) else None
        if not isinstance(d, dict):
            return r.msg
        ids, trades = self.ids.get(r.symbol, 0), self.trades.get(r.symbol, 0)
        for key, by in (("U", ids), ("u", ids), ("t", trades), ("f", trades), ("l", trades),
                        ("E", self.time_ms), ("T", self.time_ms)):
            v = d.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0:  # -1: no such trade
                d[key] = v + by
        if r.kind == "aggTrade" and isinstance(d.get("a"), int):
            d["a"] += self.aggs.get(r.symbol, 0)
        return _encode(env)


def _trade_from_agg(msg: bytes) -> bytes:
    """A `trade` event standing for an `aggTrade` (a recording with aggregate trades only): id = last trade id."""
    env = _probe.decode(msg)
    t = _trade_fields.decode(env.data)
    data = _encode({"e": "trade", "E": t.E, "s": t.s, "t": t.l if t.l >= 0 else t.a, "p": t.p, "q": t.q, "T": t.T,
                    "m": t.m, "M": True})
    return _wrap(f"{t.s.lower()}@trade", data)

