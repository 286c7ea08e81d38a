"""Binance spot local order book: wire parsing and the documented snapshot + diff-stream sync.

Binance's procedure ("How to manage a local order book correctly", spot):

1. Open the `<symbol>@depth` stream and buffer its events; note the `U` of the first one.
2. Fetch a REST snapshot (`GET /api/v3/depth`).
3. If the snapshot's `lastUpdateId` is strictly less than that first `U`, the snapshot is
   too old: fetch again (go back to 2).
4. Discard buffered events whose `u` <= `lastUpdateId`; the first remaining event must have
   `lastUpdateId` + 1 within its [U; u] range.
5. Set the local book to the snapshot (its update id is `lastUpdateId`), then apply the
   buffered events and every later one with the update procedure:
   - `u` <= local update id: the event is old (or a duplicate): ignore it;
   - `U` > local update id + 1: events were lost: discard the book and start over;
   - otherwise set each level to its absolute quantity (0 removes it) and set the
     local update id to `u`.

`BinanceDepthSync` is that procedure as an explicit state machine. It never does I/O: the
caller feeds it events and snapshots and reads the returned `SyncResult` (and `state`) to
know when to fetch a snapshot.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

import msgspec

from gateways.book import OrderBook

_INF = math.inf

StrLevel = tuple[str, str]


class MalformedMessage(ValueError):
    """A venue message we cannot trust. `kind` is a stable code for counters; `detail` says what was wrong."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


# ---------------------------------------------------------------------------------------------- wire types


class DepthUpdateEvent(msgspec.Struct, frozen=True):
    """One `depthUpdate` event of the diff depth stream; levels stay as the venue's decimal strings."""

    e: str  # event type, "depthUpdate"
    E: int  # event time, ms
    s: str  # symbol, upper case
    U: int  # first update id in the event
    u: int  # final update id in the event
    b: list[StrLevel]  # bids to update: [price, absolute qty]; qty "0..." removes the level
    a: list[StrLevel]  # asks to update


class DepthSnapshot(msgspec.Struct, frozen=True):
    """`GET /api/v3/depth` response body."""

    lastUpdateId: int
    bids: list[StrLevel]
    asks: list[StrLevel]


class CombinedStreamMessage(msgspec.Struct, frozen=True):
    """The `/stream?streams=...` wrapper: `{"stream": "btcusdt@depth@100ms", "data": {...}}`.

    `data` stays raw so the caller can route on `stream` before paying for the payload.
    """

    stream: str
    data: msgspec.Raw


class _MaybeWrapped(msgspec.Struct):
    # Decodes both a bare event (stream/data absent) and a wrapped one; unknown fields are skipped.
    stream: str | None = None
    data: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot sit in a union)


class DepthDiff(msgspec.Struct, gc=False):
    """A diff depth event with its levels already converted to floats: what the book applies and the buffer holds.

    The feed's hot path decodes straight into it (one pass, no per-level `float()` in Python);
    `DepthUpdateEvent` keeps the venue's strings for tools that must echo them.
    """

    e: str
    E: int
    s: str
    U: int
    u: int
    b: list[tuple[float, float]]
    a: list[tuple[float, float]]


class _FastDepthMessage(msgspec.Struct, gc=False):
    # Bare or combined-stream depth event in one decode. strict=False turns the venue's decimal
    # strings into floats inside msgspec (and also takes JSON numbers, which the venue never sends).
    stream: str | None = None
    data: DepthDiff | None = None
    e: str = ""
    E: int = 0
    s: str = ""
    U: int = -1
    u: int = -1
    b: list[tuple[float, float]] | None = None
    a: list[tuple[float, float]] | None = None


_maybe_wrapped = msgspec.json.Decoder(_MaybeWrapped)
_event_decoder = msgspec.json.Decoder(DepthUpdateEvent)
_snapshot_decoder = msgspec.json.Decoder(DepthSnapshot)
_fast_decoder = msgspec.json.Decoder(_FastDepthMessage, strict=False)


def _check_levels(levels: list[StrLevel], field: str) -> None:
    for price_s, qty_s in levels:
        try:
            price = float(price_s)
            qty = float(qty_s)
        except ValueError:
            raise MalformedMessage("non_numeric", f"{field}: level [{price_s!r}, {qty_s!r}]") from None
        if price < 0.0 or qty < 0.0:
            raise MalformedMessage("negative", f"{field}: level [{price_s!r}, {qty_s!r}]")
        if not (price < _INF and qty < _INF):  # also false for NaN
            raise MalformedMessage("non_finite", f"{field}: level [{price_s!r}, {qty_s!r}]")
        if price == 0.0:
            raise MalformedMessage("zero_price", f"{field}: level [{price_s!r}, {qty_s!r}]")


def _decode(decoder: msgspec.json.Decoder, raw: bytes | str) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:  # valid JSON, wrong shape (missing field, wrong type)
        raise MalformedMessage("schema", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise MalformedMessage("json", str(exc)) from None


def parse_depth_message(raw: bytes | str) -> DepthUpdateEvent:
    """Parse a diff depth event, bare or wrapped in a combined-stream message, and validate it fully.

    Raises `MalformedMessage` for bad JSON, a wrong shape or event type, U > u, and prices or
    quantities that are non-numeric, negative, non-finite (or a zero price): none of them may
    reach the book.
    """
    outer = _decode(_maybe_wrapped, raw)
    if len(outer.data):
        raw = outer.data
    elif outer.stream is not None:
        raise MalformedMessage("schema", "combined-stream message without `data`")
    ev: DepthUpdateEvent = _decode(_event_decoder, raw)
    if ev.e != "depthUpdate":
        raise MalformedMessage("event_type", f"expected depthUpdate, got {ev.e!r}")
    if ev.u < ev.U or ev.U < 0:
        raise MalformedMessage("update_ids", f"U={ev.U} u={ev.u}")
    _check_levels(ev.b, "b")
    _check_levels(ev.a, "a")
    return ev


def _levels_ok(levels: list[tuple[float, float]]) -> bool:
    for price, qty in levels:  # noqa: SIM110 - a plain loop is faster than all() over a generator here
        if not (0.0 < price < _INF and 0.0 <= qty < _INF):  # also false for NaN
            return False
    return True


def parse_depth_diff(raw: bytes | str) -> DepthDiff:
    """`parse_depth_message` for the hot path: the same checks, levels as floats, about twice as fast.

    A message the fast decoder rejects, or one with a bad level, goes through `parse_depth_message`
    so the `MalformedMessage` names the same kind and detail either way.
    """
    try:
        m = _fast_decoder.decode(raw)
    except msgspec.DecodeError:  # ValidationError included
        parse_depth_message(raw)  # raises the precise error
        raise MalformedMessage("schema", "depth event levels must be decimal strings") from None
    d = m.data
    if d is None:
        if m.stream is not None:
            raise MalformedMessage("schema", "combined-stream message without `data`")
        if m.b is None or m.a is None or m.U < 0 or m.u < 0 or not m.s or not m.e:
            parse_depth_message(raw)
            raise MalformedMessage("schema", "depth event without its fields")
        d = m
    if d.e != "depthUpdate":
        raise MalformedMessage("event_type", f"expected depthUpdate, got {d.e!r}")
    if d.u < d.U or d.U < 0:
        raise MalformedMessage("update_ids", f"U={d.U} u={d.u}")
    if not (_levels_ok(d.b) and _levels_ok(d.a)):
        parse_depth_message(raw)
        raise MalformedMessage("non_finite", "depth level out of range")
    return d if type(d) is DepthDiff else DepthDiff(d.e, d.E, d.s, d.U, d.u, d.b, d.a)


def diff_of_event(ev: DepthUpdateEvent) -> DepthDiff:
    """The float form of an already validated `DepthUpdateEvent`."""
    return DepthDiff(ev.e, ev.E, ev.s, ev.U, ev.u, [(float(p), float(q)) for p, q in ev.b],
                     [(float(p), float(q)) for p, q in ev.a])


def parse_depth_snapshot(raw: bytes | str) -> DepthSnapshot:
    """Parse and validate a `GET /api/v3/depth` body; raises `MalformedMessage` like `parse_depth_message`."""
    snap: DepthSnapshot = _decode(_snapshot_decoder, raw)
    if snap.lastUpdateId < 0:
        raise MalformedMessage("update_ids", f"lastUpdateId={snap.lastUpdateId}")
    _check_levels(snap.bids, "bids")
    _check_levels(snap.asks, "asks")
    return snap


# ---------------------------------------------------------------------------------------------- sync


class SyncState(enum.Enum):
    AWAITING_SNAPSHOT = "awaiting_snapshot"  # buffering events until a usable snapshot arrives
    SYNCED = "synced"  # the book is the venue's book as of `last_update_id`
    RESYNC_NEEDED = "resync_needed"  # sync was lost (gap, overflow, bad event): book cleared, buffering, fetch a snapshot


class SyncResult(str, enum.Enum):
    """What one `on_event` / `on_snapshot` call did."""

    BUFFERED = "buffered"  # kept until a snapshot arrives
    APPLIED = "applied"  # applied to the book
    DROPPED_STALE = "dropped_stale"  # u <= local update id: old or duplicate, ignored
    GAP = "gap"  # U > local update id + 1: events lost, book discarded, state RESYNC_NEEDED
    OVERFLOW = "overflow"  # buffer full while waiting for a snapshot: state RESYNC_NEEDED, buffer restarted
    MALFORMED = "malformed"  # unusable message; if it was the event the book needed next, RESYNC_NEEDED
    NEED_SNAPSHOT = "need_snapshot"  # snapshot older than the first buffered event: fetch another
    SYNCED = "synced"  # snapshot loaded and buffered events replayed: state SYNCED
    IGNORED = "ignored"  # snapshot while already SYNCED: the live book is newer, nothing changed


_COUNTERS = ("applied", "stale_dropped", "gaps", "malformed", "resyncs", "buffered", "overflows", "snapshots",
             "stale_snapshots")


class BinanceDepthSync:
    """Keeps `book` equal to Binance's book for `symbol` using the documented snapshot + diff procedure.

    The book is only meaningful while `state` is SYNCED; on any loss of sync it is cleared, so
    a reader can never see a silently wrong book.
    """

    def __init__(self, symbol: str, book: OrderBook, max_buffer: int = 10_000) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer must be >= 1")
        self.symbol = symbol.upper()
        self.book = book
        self.max_buffer = max_buffer
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._state = SyncState.AWAITING_SNAPSHOT
        self._buffer: list[DepthDiff] = []
        self._update_id = 0

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> SyncState:
        return self._state

    @property
    def last_update_id(self) -> int:
        """Update id the book reflects (the last applied `u`, or the snapshot's `lastUpdateId`); 0 with no book."""
        return self._update_id

    @property
    def buffered(self) -> int:
        """Events waiting for a snapshot."""
        return len(self._buffer)

    @property
    def last_buffered_update_id(self) -> int:
        """`u` of the last buffered event; 0 with none."""
        return self._buffer[-1].u if self._buffer else 0

    @property
    def first_buffered_update_id(self) -> int | None:
        """`U` of the first buffered event: a snapshot must be at least this new."""
        return self._buffer[0].U if self._buffer else None

    def reset(self) -> None:
        """Start the procedure over: empty book and buffer, AWAITING_SNAPSHOT (e.g. after a reconnect)."""
        self.book.clear()
        self._buffer = []
        self._update_id = 0
        self._state = SyncState.AWAITING_SNAPSHOT

    def _lose_sync(self, pending: list[DepthDiff]) -> None:
        # "Discard your local order book and restart the process from the beginning": the stream
        # is still open, so the events already received after the break start the new buffer.
        self.book.clear()
        self._buffer = pending
        self._update_id = 0
        self._state = SyncState.RESYNC_NEEDED
        self.counters["resyncs"] += 1

    # ------------------------------------------------------------------ events

    def on_message(self, raw: bytes | str) -> SyncResult:
        """Parse one raw depth message (bare or combined-stream) and feed it; a malformed one is counted, not raised."""
        try:
            ev = parse_depth_diff(raw)
        except MalformedMessage:
            self.counters["malformed"] += 1
            return SyncResult.MALFORMED
        return self.on_diff(ev)

    def on_event(self, ev: DepthUpdateEvent) -> SyncResult:
        """`on_diff` for an event parsed by `parse_depth_message` (venue strings)."""
        try:
            diff = diff_of_event(ev)
        except ValueError:
            # Unusable levels still carry usable ids: a stale one is dropped as stale, and the one
            # the book needs next fails in the book's own validation and forces a resync.
            nan = (math.nan, math.nan)
            diff = DepthDiff(ev.e, ev.E, ev.s, ev.U, ev.u, [nan], [])
        return self.on_diff(diff)

    def on_diff(self, ev: DepthDiff) -> SyncResult:
        """Buffer the event (no book yet) or apply the update procedure to it (SYNCED)."""
        if ev.s != self.symbol and ev.s.upper() != self.symbol:
            self.counters["malformed"] += 1
            return SyncResult.MALFORMED
        if ev.u < ev.U:
            self.counters["malformed"] += 1
            return SyncResult.MALFORMED
        if self._state is SyncState.SYNCED:
            return self._apply(ev)
        buf = self._buffer
        if len(buf) >= self.max_buffer:
            # No snapshot for too long. Keeping only the newest events would also be valid, but an
            # unbounded wait is the caller's problem to see: report it and restart the buffer here.
            self.counters["overflows"] += 1
            self._lose_sync([ev])
            return SyncResult.OVERFLOW
        buf.append(ev)
        self.counters["buffered"] += 1
        return SyncResult.BUFFERED

    def _apply(self, ev: DepthDiff) -> SyncResult:
        uid = self._update_id
        if ev.u <= uid:
            self.counters["stale_dropped"] += 1
            return SyncResult.DROPPED_STALE
        if uid + 1 < ev.U:
            self.counters["gaps"] += 1
            self._lose_sync([ev])
            return SyncResult.GAP
        try:
            self.book.apply_levels(ev.b, ev.a)  # validates everything before changing anything
        except ValueError:
            # This was the event the book needed next; without it the book cannot be right.
            self.counters["malformed"] += 1
            self._lose_sync([])
            return SyncResult.MALFORMED
        self._update_id = ev.u
        self.counters["applied"] += 1
        return SyncResult.APPLIED

    # ------------------------------------------------------------------ snapshots

    def on_snapshot(self, snap: DepthSnapshot | bytes | str | Mapping[str, Any]) -> SyncResult:
        """Load a REST snapshot and replay the buffered events.

        Accepts a parsed `DepthSnapshot`, the raw body, or the body decoded to a dict.
        Returns NEED_SNAPSHOT (too old: fetch again, buffer kept), SYNCED, GAP (a buffered event
        does not connect: RESYNC_NEEDED, fetch again), MALFORMED (unusable snapshot, nothing
        changed) or IGNORED (already SYNCED).
        """
        if self._state is SyncState.SYNCED:
            return SyncResult.IGNORED
        try:
            if isinstance(snap, (bytes, bytearray, memoryview, str)):
                snap = parse_depth_snapshot(bytes(snap) if isinstance(snap, memoryview) else snap)
            elif not isinstance(snap, DepthSnapshot):
                try:
                    snap = msgspec.convert(snap, DepthSnapshot)
                except msgspec.ValidationError as exc:
                    raise MalformedMessage("schema", str(exc)) from None
            last_id = snap.lastUpdateId
            buf = self._buffer
            if buf and last_id < buf[0].U:
                self.counters["stale_snapshots"] += 1
                return SyncResult.NEED_SNAPSHOT
            bids = [(float(p), float(q)) for p, q in snap.bids]
            asks = [(float(p), float(q)) for p, q in snap.asks]
            self.book.load_snapshot(bids, asks)  # atomic: raises before changing anything
        except ValueError:  # MalformedMessage included
            self.counters["malformed"] += 1
            return SyncResult.MALFORMED
        self._update_id = last_id
        self._state = SyncState.SYNCED
        self._buffer = []
        self.counters["snapshots"] += 1
        for i, ev in enumerate(buf):
            result = self._apply(ev)
            if self._state is not SyncState.SYNCED:
                # Gap (or a bad event) during replay: what was received after it starts the new buffer.
                self._buffer.extend(buf[i + 1:])
                return SyncResult.GAP if result is SyncResult.GAP else result
        return SyncResult.SYNCED
