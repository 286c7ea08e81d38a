"""Property: over random event streams (gaps, duplicates, reordering, bad events), whenever the handler
says SYNCED its book is exactly the venue's book at its update id (a plain dict reference model)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gateways.binance.depth_sync import SyncState
from gateways.binance.market_handler import BinanceMarketHandler

PRICES = [f"{p}.{c}" for p in range(95, 106) for c in (0, 5)]


@st.composite
def venue_history(draw):
    """The venue's true sequence of events and its book after each one (bids below 100, asks above)."""
    uid = draw(st.integers(1, 10**9))
    book = {"b": {}, "a": {}}
    events, books = [], {uid: ({}, {})}
    for _ in range(draw(st.integers(1, 40))):
        n = draw(st.integers(1, 3))
        change = {"b": [], "a": []}
        for _ in range(draw(st.integers(0, 5))):
            side = draw(st.sampled_from("ba"))
            price = draw(st.sampled_from([p for p in PRICES if (float(p) < 100) == (side == "b")]))
            qty = draw(st.sampled_from(["0", "0.000", "1.5", "2", "10.25"]))
            change[side].append([price, qty])
            if float(qty) == 0:
                book[side].pop(float(price), None)
            else:
                book[side][float(price)] = float(qty)
        events.append({"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": uid + 1, "u": uid + n, **change})
        uid += n
        books[uid] = (dict(book["b"]), dict(book["a"]))
    return events, books


@st.composite
def delivered(draw):
    """What the client receives: the true events with drops, duplicates, swaps and garbage mixed in."""
    events, books = draw(venue_history())
    out = []
    for ev in events:
        action = draw(st.sampled_from(["send"] * 6 + ["drop", "dup", "garbage", "bad_level"]))
        msg = json.dumps({"stream": "btcusdt@depth@100ms", "data": ev})
        if action == "drop":
            continue
        if action == "garbage":
            out.append('{"stream": "btcusdt@depth@100ms", "data": {"e": "depthUpdate"}}')
        if action == "bad_level":
            bad = dict(ev, b=[["-1", "1"]])
            out.append(json.dumps({"stream": "btcusdt@depth@100ms", "data": bad}))
            continue  # the real event is lost: its ids never arrive intact
        out.append(msg)
        if action == "dup":
            out.append(msg)
    if len(out) > 2 and draw(st.booleans()):
        i = draw(st.integers(0, len(out) - 2))
        out[i], out[i + 1] = out[i + 1], out[i]
    snapshot_at = draw(st.integers(0, len(out)))
    return out, books, snapshot_at


@settings(max_examples=150, deadline=None)
@given(delivered())
def test_synced_book_always_equals_the_venue_book(case):
    msgs, books, snapshot_at = case
    ids = sorted(books)
    handler = BinanceMarketHandler("binance", ["BTCUSDT"])
    feed = handler.symbols["BTCUSDT"]

    def fetch_snapshot(received: int) -> None:
        # The venue answers with its book as of the newest event it has produced so far.
        uid = ids[min(received, len(ids) - 1)]
        bids, asks = books[uid]
        handler.on_snapshot("BTCUSDT", json.dumps({
            "lastUpdateId": uid, "bids": [[str(p), str(q)] for p, q in sorted(bids.items(), reverse=True)],
            "asks": [[str(p), str(q)] for p, q in sorted(asks.items())]}))

    for i, raw in enumerate(msgs):
        handler.on_message(raw)
        if feed.needs_snapshot and i >= snapshot_at:
            fetch_snapshot(i + 1)
        if feed.sync.state is SyncState.SYNCED:
            bids, asks = books[feed.sync.last_update_id]
            assert feed.book.top(100) == (sorted(bids.items(), reverse=True), sorted(asks.items()))
        else:
            assert len(feed.book) == 0  # an unsynced book is empty, never silently wrong
    stats = handler.stats()["BTCUSDT"]
    assert stats["applied"] <= len(ids) - 1
