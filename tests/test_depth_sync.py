"""Binance depth parsing and the documented local-order-book procedure, case by case, plus a model-based property."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateways.binance.depth_sync import (
    BinanceDepthSync,
    DepthSnapshot,
    DepthUpdateEvent,
    MalformedMessage,
    SyncResult,
    SyncState,
    parse_depth_diff,
    parse_depth_message,
    parse_depth_snapshot,
)
from gateways.book import OrderBook

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SYMBOL = "BTCUSDT"


def ev(first: int, last: int, b: list[tuple[str, str]] | None = None, a: list[tuple[str, str]] | None = None,
       symbol: str = SYMBOL) -> DepthUpdateEvent:
    return DepthUpdateEvent(e="depthUpdate", E=1_700_000_000_000, s=symbol, U=first, u=last, b=b or [], a=a or [])


def snap(last_id: int, bids: list[tuple[str, str]] | None = None, asks: list[tuple[str, str]] | None = None) -> DepthSnapshot:
    return DepthSnapshot(lastUpdateId=last_id, bids=bids if bids is not None else [("100.0", "1.0")],
                         asks=asks if asks is not None else [("101.0", "1.0")])


def new_sync(**kw: int) -> tuple[BinanceDepthSync, OrderBook]:
    book = OrderBook(SYMBOL, "binance")
    return BinanceDepthSync(SYMBOL, book, **kw), book


# ------------------------------------------------------------------------------------------ parsing


def test_parse_bare_and_combined_stream_message() -> None:
    data = {"e": "depthUpdate", "E": 1675759520848, "s": "BTCUSDT", "U": 157, "u": 160,
            "b": [["0.0024", "10"]], "a": [["0.0026", "100"], ["0.0027", "0.00000000"]]}
    bare = parse_depth_message(msgspec.json.encode(data))
    wrapped = parse_depth_message(msgspec.json.encode({"stream": "btcusdt@depth@100ms", "data": data}))
    assert bare == wrapped
    assert (bare.e, bare.E, bare.s, bare.U, bare.u) == ("depthUpdate", 1675759520848, "BTCUSDT", 157, 160)
    assert bare.b == [("0.0024", "10")]
    assert bare.a == [("0.0026", "100"), ("0.0027", "0.00000000")]
    # str input and unknown extra fields are fine
    assert parse_depth_message(msgspec.json.encode({**data, "x": 1}).decode()) == bare


GOOD = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": 2, "b": [["1.5", "2"]], "a": []}


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"{not json", "json"),
        (b"", "json"),
        (b"[1, 2]", "schema"),
        (msgspec.json.encode({k: v for k, v in GOOD.items() if k != "U"}), "schema"),
        (msgspec.json.encode({**GOOD, "U": "1"}), "schema"),
        (msgspec.json.encode({**GOOD, "b": [["1.5", "2", "3"]]}), "schema"),
        (msgspec.json.encode({**GOOD, "b": [[1.5, 2]]}), "schema"),  # numbers, not the venue's strings
        (msgspec.json.encode({"stream": "btcusdt@depth", "data": None}), "schema"),
        (msgspec.json.encode({"stream": "btcusdt@depth"}), "schema"),
        (msgspec.json.encode({"stream": "btcusdt@depth", "data": {**GOOD, "a": [["x", "1"]]}}), "non_numeric"),
        (msgspec.json.encode({**GOOD, "b": [["1.5", "abc"]]}), "non_numeric"),
        (msgspec.json.encode({**GOOD, "b": [["-1.5", "2"]]}), "negative"),
        (msgspec.json.encode({**GOOD, "a": [["1.5", "-0.1"]]}), "negative"),
        (msgspec.json.encode({**GOOD, "a": [["nan", "1"]]}), "non_finite"),
        (msgspec.json.encode({**GOOD, "a": [["1.5", "inf"]]}), "non_finite"),
        (msgspec.json.encode({**GOOD, "a": [["0", "1"]]}), "zero_price"),
        (msgspec.json.encode({**GOOD, "e": "trade"}), "event_type"),
        (msgspec.json.encode({**GOOD, "U": 5, "u": 4}), "update_ids"),
    ],
)
def test_parse_rejects_malformed(raw: bytes, kind: str) -> None:
    with pytest.raises(MalformedMessage) as info:
        parse_depth_message(raw)
    assert info.value.kind == kind
    assert isinstance(info.value, ValueError)
    assert info.value.detail
    # The hot-path parser reports the same kind, except that it takes JSON numbers where the
    # venue writes strings (msgspec's lax mode): still the same values, still validated.
    lenient = b'"U":"1"' in raw or b"[[1.5,2]]" in raw
    if lenient:
        diff = parse_depth_diff(raw)
        assert diff.U == 1 and (diff.b == [(1.5, 2.0)] or diff.b == [])
        return
    with pytest.raises(MalformedMessage) as fast_info:
        parse_depth_diff(raw)
    assert fast_info.value.kind == kind


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.decimals(min_value=0, max_value=10**9, allow_nan=False, places=8),
                          st.decimals(min_value=0, max_value=10**6, allow_nan=False, places=8)), max_size=30),
       st.booleans())
def test_fast_parser_gives_the_floats_of_the_venue_strings(levels: list, wrapped: bool) -> None:
    strs = [(str(p), str(q)) for p, q in levels]
    body = {**GOOD, "b": strs, "a": strs[::-1]}
    raw = msgspec.json.encode({"stream": "btcusdt@depth", "data": body} if wrapped else body)
    try:
        slow = parse_depth_message(raw)
    except MalformedMessage as exc:  # e.g. a zero price
        with pytest.raises(MalformedMessage) as info:
            parse_depth_diff(raw)
        assert info.value.kind == exc.kind
        return
    fast = parse_depth_diff(raw)
    assert (fast.U, fast.u, fast.s, fast.E) == (slow.U, slow.u, slow.s, slow.E)
    assert fast.b == [(float(p), float(q)) for p, q in slow.b]
    assert fast.a == [(float(p), float(q)) for p, q in slow.a]


def test_parse_snapshot_rejects_malformed() -> None:
    with pytest.raises(MalformedMessage):
        parse_depth_snapshot(b'{"lastUpdateId": 1, "bids": []}')
    with pytest.raises(MalformedMessage) as info:
        parse_depth_snapshot(b'{"lastUpdateId": 1, "bids": [["1", "-1"]], "asks": []}')
    assert info.value.kind == "negative"


def test_real_binance_snapshot_sample() -> None:
    path = SHARED_DATA / "binance" / "rest_spot_depth_snapshot.json"
    if not SHARED_DATA.is_dir():
        pytest.skip("shared data folder absent")
    raw = path.read_bytes()
    parsed = parse_depth_snapshot(raw)
    assert parsed.lastUpdateId == 14527958487
    assert len(parsed.bids) == 10 and len(parsed.asks) == 10
    assert parsed.bids[0] == ("60650.00000000", "0.00213000")

    sync, book = new_sync()
    assert sync.on_event(ev(14527958480, 14527958490, b=[("60650.00000000", "0.00000000")],
                            a=[("60650.01000000", "0.50000000")])) is SyncResult.BUFFERED
    # the body as the REST client hands it over, decoded to a dict
    assert sync.on_snapshot(msgspec.json.decode(raw)) is SyncResult.SYNCED
    assert sync.last_update_id == 14527958490
    assert book.best_bid() == (60648.08, 0.06346)
    assert book.best_ask() == (60650.01, 0.5)
    assert len(book) == 19
    assert not book.is_crossed()

    # and as raw bytes
    sync2, book2 = new_sync()
    assert sync2.on_snapshot(raw) is SyncResult.SYNCED
    assert sync2.last_update_id == 14527958487
    assert book2.best_bid() == (60650.0, 0.00213)
    assert book2.spread() == pytest.approx(0.01)


# ------------------------------------------------------------------------------------------ procedure


def test_events_are_buffered_until_snapshot() -> None:
    sync, book = new_sync()
    assert sync.state is SyncState.AWAITING_SNAPSHOT
    assert sync.on_event(ev(101, 103)) is SyncResult.BUFFERED
    assert sync.on_event(ev(104, 105)) is SyncResult.BUFFERED
    assert sync.buffered == 2 and sync.first_buffered_update_id == 101
    assert len(book) == 0
    assert sync.last_update_id == 0


def test_snapshot_older_than_first_buffered_event_is_refetched() -> None:
    sync, book = new_sync()
    sync.on_event(ev(101, 103, b=[("100.0", "5.0")]))
    # lastUpdateId 99 < U 101: go back and fetch another snapshot
    assert sync.on_snapshot(snap(99)) is SyncResult.NEED_SNAPSHOT
    assert sync.state is SyncState.AWAITING_SNAPSHOT
    assert len(book) == 0 and sync.buffered == 1
    assert sync.counters["stale_snapshots"] == 1
    # lastUpdateId 100 == U - 1 is also too old by the rule (strictly less than U)
    assert sync.on_snapshot(snap(100)) is SyncResult.NEED_SNAPSHOT
    assert sync.on_snapshot(snap(101)) is SyncResult.SYNCED
    assert sync.state is SyncState.SYNCED
    assert sync.last_update_id == 103
    assert book.best_bid() == (100.0, 5.0)


def test_first_applied_event_straddles_last_update_id_plus_one() -> None:
    sync, book = new_sync()
    sync.on_event(ev(101, 103, b=[("99.0", "9.0")]))  # u <= 105: already in the snapshot, dropped
    sync.on_event(ev(104, 107, a=[("101.0", "0"), ("102.0", "2.0")]))  # 104 <= 106 <= 107: first applied
    sync.on_event(ev(108, 110, b=[("100.0", "3.0")]))
    result = sync.on_snapshot(snap(105, bids=[("100.0", "1.0")], asks=[("101.0", "1.0")]))
    assert result is SyncResult.SYNCED
    assert sync.counters["stale_dropped"] == 1
    assert sync.counters["applied"] == 2
    assert sync.last_update_id == 110
    assert book.top(5) == ([(100.0, 3.0)], [(102.0, 2.0)])
    assert sync.buffered == 0


def test_snapshot_with_no_buffered_events_then_straddling_event() -> None:
    sync, book = new_sync()
    assert sync.on_snapshot(snap(200)) is SyncResult.SYNCED
    assert sync.last_update_id == 200
    assert sync.on_event(ev(195, 200)) is SyncResult.DROPPED_STALE
    assert sync.on_event(ev(198, 203, b=[("100.0", "0")])) is SyncResult.APPLIED
    assert sync.last_update_id == 203
    assert book.best_bid() is None


def test_synced_rule_applies_drops_stale_and_detects_gap() -> None:
    sync, book = new_sync()
    sync.on_snapshot(snap(100))
    assert sync.on_event(ev(101, 102, b=[("100.5", "2.0")])) is SyncResult.APPLIED
    assert sync.on_event(ev(101, 102, b=[("100.5", "7.0")])) is SyncResult.DROPPED_STALE  # duplicate
    assert sync.on_event(ev(90, 95)) is SyncResult.DROPPED_STALE  # late
    assert book.best_bid() == (100.5, 2.0)
    assert sync.on_event(ev(103, 103, a=[("101.0", "0")])) is SyncResult.APPLIED
    assert book.best_ask() is None
    # U = 105 > 103 + 1: update 104 was lost
    assert sync.on_event(ev(105, 106, b=[("100.7", "1.0")])) is SyncResult.GAP
    assert sync.state is SyncState.RESYNC_NEEDED
    assert len(book) == 0  # never a silently wrong book
    assert sync.last_update_id == 0
    assert sync.counters["gaps"] == 1 and sync.counters["resyncs"] == 1
    # what came after the break is kept as the start of the new buffer
    assert sync.buffered == 1 and sync.first_buffered_update_id == 105
    assert sync.on_event(ev(107, 107, b=[("100.8", "1.0")])) is SyncResult.BUFFERED
    assert sync.on_snapshot(snap(104)) is SyncResult.NEED_SNAPSHOT
    assert sync.on_snapshot(snap(105, bids=[("100.0", "1.0")], asks=[])) is SyncResult.SYNCED
    assert sync.last_update_id == 107
    assert book.top(5) == ([(100.8, 1.0), (100.7, 1.0), (100.0, 1.0)], [])


def test_gap_while_replaying_buffer() -> None:
    sync, book = new_sync()
    sync.on_event(ev(101, 103))
    sync.on_event(ev(110, 112))
    sync.on_event(ev(113, 114))
    assert sync.on_snapshot(snap(103)) is SyncResult.GAP
    assert sync.state is SyncState.RESYNC_NEEDED
    assert len(book) == 0
    assert sync.buffered == 2 and sync.first_buffered_update_id == 110
    assert sync.on_snapshot(snap(111)) is SyncResult.SYNCED
    assert sync.last_update_id == 114


def test_snapshot_while_synced_is_ignored() -> None:
    sync, book = new_sync()
    sync.on_snapshot(snap(100))
    sync.on_event(ev(101, 101, b=[("100.0", "4.0")]))
    assert sync.on_snapshot(snap(50)) is SyncResult.IGNORED
    assert sync.last_update_id == 101 and book.best_bid() == (100.0, 4.0)


def test_buffer_overflow_forces_resync() -> None:
    sync, book = new_sync(max_buffer=3)
    for i in range(3):
        assert sync.on_event(ev(10 + i, 10 + i)) is SyncResult.BUFFERED
    assert sync.on_event(ev(13, 13)) is SyncResult.OVERFLOW
    assert sync.state is SyncState.RESYNC_NEEDED
    assert sync.buffered == 1 and sync.first_buffered_update_id == 13
    assert sync.counters["overflows"] == 1 and sync.counters["resyncs"] == 1
    assert sync.on_snapshot(snap(12)) is SyncResult.NEED_SNAPSHOT
    assert sync.on_snapshot(snap(13)) is SyncResult.SYNCED


def test_reset_returns_to_awaiting_with_empty_buffer() -> None:
    sync, book = new_sync()
    sync.on_snapshot(snap(100))
    sync.on_event(ev(101, 101))
    sync.reset()
    assert sync.state is SyncState.AWAITING_SNAPSHOT
    assert sync.buffered == 0 and len(book) == 0 and sync.last_update_id == 0
    assert sync.on_event(ev(500, 501)) is SyncResult.BUFFERED


def test_malformed_input_is_counted() -> None:
    sync, book = new_sync()
    sync.on_snapshot(snap(100))
    assert sync.on_message(b"garbage") is SyncResult.MALFORMED
    assert sync.on_event(ev(101, 101, symbol="ETHUSDT")) is SyncResult.MALFORMED  # not our symbol
    assert sync.on_event(ev(102, 101)) is SyncResult.MALFORMED  # U > u
    assert sync.state is SyncState.SYNCED and sync.counters["malformed"] == 3
    # lower-case symbol from a hand-built event is still ours
    assert sync.on_event(ev(101, 101, symbol="btcusdt")) is SyncResult.APPLIED
    # a stale unusable event is harmless
    assert sync.on_event(ev(99, 100, b=[("bad", "1")])) is SyncResult.DROPPED_STALE
    # the event the book needs next is unusable: the book cannot be right any more
    assert sync.on_event(ev(102, 102, b=[("100.0", "1.0")], a=[("bad", "1")])) is SyncResult.MALFORMED
    assert sync.state is SyncState.RESYNC_NEEDED and len(book) == 0
    assert sync.counters["malformed"] == 4


def test_malformed_snapshot_changes_nothing() -> None:
    sync, book = new_sync()
    sync.on_event(ev(101, 101))
    assert sync.on_snapshot(b"{") is SyncResult.MALFORMED
    assert sync.on_snapshot({"lastUpdateId": "x", "bids": [], "asks": []}) is SyncResult.MALFORMED
    assert sync.on_snapshot(snap(105, bids=[("100.0", "nan")])) is SyncResult.MALFORMED
    assert sync.state is SyncState.AWAITING_SNAPSHOT and sync.buffered == 1
    assert sync.counters["malformed"] == 3


def test_combined_stream_bytes_end_to_end() -> None:
    sync, book = new_sync()
    raw = msgspec.json.encode({"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": 5, "s": "BTCUSDT", "U": 11, "u": 12, "b": [["100.00", "2.5"]], "a": [["101.00", "0.00"]]}})
    assert sync.on_message(raw) is SyncResult.BUFFERED
    assert sync.on_snapshot(msgspec.json.encode({"lastUpdateId": 11, "bids": [["100.00", "1.0"]],
                                                 "asks": [["101.00", "1.0"], ["102.00", "1.0"]]})) is SyncResult.SYNCED
    assert book.top(5) == ([(100.0, 2.5)], [(102.0, 1.0)])


# ------------------------------------------------------------------------------------------ property

BID_PRICES = [100 - k for k in range(6)]
ASK_PRICES = [101 + k for k in range(6)]
QTYS = [0.0, 1.0, 2.0, 3.5]


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    base = draw(st.integers(0, 1000))
    initial = {}
    for is_bid, prices in ((True, BID_PRICES), (False, ASK_PRICES)):
        for p in prices:
            q = draw(st.sampled_from(QTYS))
            if q:
                initial[(is_bid, float(p))] = q
    updates = draw(st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.sampled_from(QTYS)), min_size=1,
                            max_size=40))
    # truth: the venue's book after every update id
    states = {base: dict(initial)}
    cur = dict(initial)
    for j, (is_bid, k, q) in enumerate(updates):
        key = (is_bid, float(BID_PRICES[k] if is_bid else ASK_PRICES[k]))
        if q:
            cur[key] = q
        else:
            cur.pop(key, None)
        states[base + j + 1] = dict(cur)
    # events: contiguous id ranges, each carrying the final absolute quantity of the levels it touched
    events = []
    j = 0
    while j < len(updates):
        size = draw(st.integers(1, 4))
        chunk = updates[j:j + size]
        touched: dict[tuple[bool, float], float] = {}
        for is_bid, k, q in chunk:
            touched[(is_bid, float(BID_PRICES[k] if is_bid else ASK_PRICES[k]))] = q
        b = [(str(p), str(q)) for (is_bid, p), q in touched.items() if is_bid]
        a = [(str(p), str(q)) for (is_bid, p), q in touched.items() if not is_bid]
        events.append(ev(base + j + 1, base + j + len(chunk), b=b, a=a))
        j += len(chunk)
    # delivery: drops, duplicates, local reordering
    ops = draw(st.lists(st.sampled_from(["keep", "keep", "keep", "drop", "dup", "swap"]), min_size=len(events),
                        max_size=len(events)))
    order: list[int] = []
    for idx, op in enumerate(ops):
        if op == "keep":
            order.append(idx)
        elif op == "dup":
            order += [idx, idx]
        elif op == "swap":
            order.insert(max(len(order) - 1, 0), idx)
    # snapshots fetched at some points, a little behind or ahead of what the stream delivered
    snaps = draw(st.lists(st.tuples(st.integers(0, len(order)), st.integers(-3, 3)), max_size=4))
    actions: list[tuple[str, object]] = []
    last_id = base + len(updates)
    for pos in range(len(order) + 1):
        delivered = [events[i].u for i in order[:pos]]
        for at, offset in snaps:
            if at == pos:
                sid = min(max((max(delivered) if delivered else base) + offset, base), last_id)
                actions.append(("snap", sid))
        if pos < len(order):
            actions.append(("event", events[order[pos]]))
    return {"states": states, "events": events, "actions": actions}


def book_state(book: OrderBook) -> dict[tuple[bool, float], float]:
    bids, asks = book.top(1_000_000)
    return {**{(True, p): q for p, q in bids}, **{(False, p): q for p, q in asks}}


def truth_snapshot(state: dict[tuple[bool, float], float], sid: int) -> DepthSnapshot:
    bids = sorted(((p, q) for (is_bid, p), q in state.items() if is_bid), reverse=True)
    asks = sorted((p, q) for (is_bid, p), q in state.items() if not is_bid)
    return DepthSnapshot(lastUpdateId=sid, bids=[(str(p), str(q)) for p, q in bids],
                         asks=[(str(p), str(q)) for p, q in asks])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_synced_book_always_equals_reference(scenario: dict) -> None:
    states = scenario["states"]
    sync, book = new_sync()
    for kind, payload in scenario["actions"]:
        if kind == "snap":
            sync.on_snapshot(truth_snapshot(states[payload], payload))
        else:
            sync.on_event(payload)
        if sync.state is SyncState.SYNCED:
            assert book_state(book) == states[sync.last_update_id]
        else:
            assert len(book) == 0


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.data())
def test_clean_stream_after_snapshot_always_syncs(scenario: dict, data: st.DataObject) -> None:
    """Liveness: in-order delivery and a snapshot no older than the first buffered event always end SYNCED."""
    states = scenario["states"]
    contiguous = scenario["events"]
    split = data.draw(st.integers(1, len(contiguous)))
    sync, book = new_sync()
    for e in contiguous[:split]:
        assert sync.on_event(e) is SyncResult.BUFFERED
    sid = data.draw(st.integers(contiguous[0].U, contiguous[split - 1].u))
    assert sync.on_snapshot(truth_snapshot(states[sid], sid)) is SyncResult.SYNCED
    for e in contiguous[split:]:
        assert sync.on_event(e) is SyncResult.APPLIED
    assert sync.state is SyncState.SYNCED
    assert sync.last_update_id == contiguous[-1].u
    assert book_state(book) == states[contiguous[-1].u]
