"""Binance spot market data, bytes to books and trades, without I/O.

One handler serves every symbol of one combined-stream connection
(`/stream?streams=<s>@depth@100ms/<s>@bookTicker/<s>@trade`): it routes each message on its
`stream`, runs the documented local-order-book procedure (`BinanceDepthSync`) per symbol, and
turns trades into `Trade` messages. Nothing it receives can raise out of `on_message`: bad
input is counted per kind, logged once per kind with a sample, and skipped. The I/O around it
(WebSocket, REST snapshots, reconnects) is `gateways.binance.feed.BinanceFeed`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import msgspec

from cluster.messages import BookUpdate, Side, Trade
from gateways.binance.depth_sync import (
    BinanceDepthSync,
    MalformedMessage,
    SyncResult,
    SyncState,
    parse_depth_diff,
)
from gateways.book import OrderBook

log = logging.getLogger(__name__)

_INF = math.inf


class ErrorTally:
    """Counts bad input per kind and logs the first one of each kind with a sample (never a flood)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: dict[str, int] = {}

    def add(self, kind: str, sample: bytes | str, detail: str = "") -> None:
        n = self.counts.get(kind, 0)
        self.counts[kind] = n + 1
        if n == 0:
            text = sample if isinstance(sample, str) else bytes(sample).decode("utf-8", "replace")
            log.warning("%s: skipped %s message (%s); later ones are only counted. sample: %.300s",
                        self.name, kind, detail, text)

    def decode(self, decoder: msgspec.json.Decoder, raw: bytes | str) -> Any | None:
        """Decode a frame's outer shape; bad JSON or a bad shape is counted and gives None."""
        try:
            return decoder.decode(raw)
        except msgspec.ValidationError as exc:
            self.add("schema_envelope", raw, str(exc))
        except msgspec.DecodeError as exc:
            self.add("json", raw, str(exc))
        return None


class _Envelope(msgspec.Struct):
    stream: str = ""
    data: msgspec.Raw = msgspec.Raw()


class _TradeEvent(msgspec.Struct):
    """`trade` (id in `t`) or `aggTrade` (id in `a`) payload."""

    e: str
    s: str
    p: str
    q: str
    T: int
    m: bool
    t: int = -1
    a: int = -1


class _BookTicker(msgspec.Struct):
    u: int
    s: str
    b: str
    B: str
    a: str
    A: str


_envelope = msgspec.json.Decoder(_Envelope)
_trade_decoder = msgspec.json.Decoder(_TradeEvent)
_ticker_decoder = msgspec.json.Decoder(_BookTicker)


def _positive(s: str, what: str, allow_zero: bool = False) -> float:
    try:
        x = float(s)
    except ValueError:
        raise MalformedMessage("non_numeric", f"{what}={s!r}") from None
    if x < 0.0:
        raise MalformedMessage("negative", f"{what}={s!r}")
    if not x < _INF:
        raise MalformedMessage("non_finite", f"{what}={s!r}")
    if x == 0.0 and not allow_zero:
        raise MalformedMessage("zero_price" if what == "p" else "zero_qty", f"{what}={s!r}")
    return x


class SymbolFeed:
    """One symbol's book, sync state and counters."""

    __slots__ = ("symbol", "book", "sync", "counters", "last_trade_id", "last_msg_ns", "exchange_ms",
                 "ticker", "changed", "stale", "errors", "ever_synced")

    def __init__(self, venue: str, symbol: str) -> None:
        self.symbol = symbol
        self.book = OrderBook(symbol, venue)
        self.sync = BinanceDepthSync(symbol, self.book)
        self.counters: dict[str, int] = dict.fromkeys(
            ("trades", "tickers", "duplicates", "out_of_order", "trade_duplicates", "crossed", "stale_alarms",
             "snapshot_requests"), 0)
        self.last_trade_id = -1
        self.last_msg_ns = 0
        self.exchange_ms = 0
        self.ticker: tuple[float, float, float, float] | None = None  # bid, bid qty, ask, ask qty
        self.changed = False
        self.stale = False
        self.errors: dict[str, int] = {}  # bad messages on this symbol's streams, by kind
        self.ever_synced = False  # until then there is no book to publish (not even an invalid one)

    @property
    def needs_snapshot(self) -> bool:
        """Binance: fetch the snapshot once the first event is buffered (and again after a resync)."""
        return self.sync.state is not SyncState.SYNCED and self.sync.buffered > 0

    def stats(self) -> dict[str, int]:
        return {**self.sync.counters, **self.counters, **{f"error:{k}": n for k, n in self.errors.items()},
                "synced": int(self.sync.state is SyncState.SYNCED), "last_update_id": self.sync.last_update_id}


class BinanceMarketHandler:
    """Routes combined-stream messages to per-symbol books; `drain()` hands out what changed."""

    def __init__(self, venue: str, symbols: Iterable[str], book_depth: int = 10, stale_after_s: float = 2.0,
                 depth_speed: str = "@100ms", trades: str = "trade", book_ticker: bool = True) -> None:
        self.venue = venue
        self.depth = book_depth
        self.stale_after_ns = int(stale_after_s * 1e9)
        self.symbols: dict[str, SymbolFeed] = {s.upper(): SymbolFeed(venue, s.upper()) for s in symbols}
        self.errors = ErrorTally(f"binance feed {venue}")
        self.trades: list[Trade] = []
        self._streams: dict[str, tuple[SymbolFeed, str]] = {}
        for sym, feed in self.symbols.items():
            low = sym.lower()
            self._streams[f"{low}@depth{depth_speed}"] = (feed, "depth")
            self._streams[f"{low}@{trades}"] = (feed, "trade")
            if book_ticker:
                self._streams[f"{low}@bookTicker"] = (feed, "ticker")

    # ------------------------------------------------------------------ subscription

    def streams(self) -> list[str]:
        """Stream names for `/stream?streams=` (or a SUBSCRIBE request)."""
        return list(self._streams)

    def combined_path(self) -> str:
        return "/stream?streams=" + "/".join(self._streams)

    # ------------------------------------------------------------------ messages

    def on_message(self, raw: bytes | str, recv_ns: int = 0) -> None:
        """Parse and apply one raw combined-stream message; never raises for bad input."""
        env = self.errors.decode(_envelope, raw)
        if env is None:
            return
        route = self._streams.get(env.stream)
        if route is None:
            if not env.stream and not len(env.data):
                # Control answers ({"result": null, "id": 1}) and errors are not market data.
                self.errors.add("control", raw, "not a stream message")
            else:
                self.errors.add("unknown_stream", raw, f"stream {env.stream!r}")
            return
        feed, kind = route
        feed.last_msg_ns = recv_ns
        if feed.stale:
            feed.stale = False
            feed.changed = True  # publish the recovery
        try:
            if kind == "depth":
                self._on_depth(feed, env.data)
            elif kind == "trade":
                self._on_trade(feed, env.data, recv_ns)
            else:
                self._on_ticker(feed, env.data)
        except MalformedMessage as exc:
            self.errors.add(exc.kind, raw, exc.detail)
            feed.errors[exc.kind] = feed.errors.get(exc.kind, 0) + 1

    def _on_depth(self, feed: SymbolFeed, data: msgspec.Raw) -> None:
        sync = feed.sync
        try:
            ev = parse_depth_diff(data)
        except MalformedMessage:
            sync.counters["malformed"] += 1
            raise
        if ev.s != feed.symbol:
            raise MalformedMessage("unknown_symbol", f"event for {ev.s!r} on {feed.symbol}'s stream")
        if sync.state is SyncState.SYNCED and ev.u <= sync.last_update_id:
            feed.counters["duplicates" if ev.u == sync.last_update_id else "out_of_order"] += 1
        result = sync.on_diff(ev)
        if result is SyncResult.APPLIED:
            feed.changed = True
            feed.exchange_ms = ev.E
        elif result is SyncResult.GAP or result is SyncResult.MALFORMED or result is SyncResult.OVERFLOW:
            feed.changed = True  # publish that the book is gone (empty, not tradeable)

    def _on_trade(self, feed: SymbolFeed, data: msgspec.Raw, recv_ns: int) -> None:
        try:
            t = _trade_decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise MalformedMessage("schema", str(exc)) from None
        except msgspec.DecodeError as exc:
            raise MalformedMessage("json", str(exc)) from None
        if t.s != feed.symbol:
            raise MalformedMessage("unknown_symbol", f"trade for {t.s!r} on {feed.symbol}'s stream")
        trade_id = t.t if t.e == "trade" else t.a
        if trade_id < 0:
            raise MalformedMessage("schema", f"{t.e} without an id")
        price = _positive(t.p, "p")
        qty = _positive(t.q, "q")
        if trade_id <= feed.last_trade_id:
            feed.counters["trade_duplicates"] += 1
            return
        feed.last_trade_id = trade_id
        feed.counters["trades"] += 1
        self.trades.append(Trade(venue=self.venue, symbol=feed.symbol, trade_id=str(trade_id), price=price, qty=qty,
                                 aggressor=Side.SELL if t.m else Side.BUY, exchange_ts_ns=t.T * 1_000_000,
                                 receive_ts_ns=recv_ns))

    def _on_ticker(self, feed: SymbolFeed, data: msgspec.Raw) -> None:
        try:
            t = _ticker_decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise MalformedMessage("schema", str(exc)) from None
        except msgspec.DecodeError as exc:
            raise MalformedMessage("json", str(exc)) from None
        if t.s != feed.symbol:
            raise MalformedMessage("unknown_symbol", f"bookTicker for {t.s!r} on {feed.symbol}'s stream")
        feed.ticker = (_positive(t.b, "b"), _positive(t.B, "B", True), _positive(t.a, "a"), _positive(t.A, "A", True))
        feed.counters["tickers"] += 1

    # ------------------------------------------------------------------ snapshots

    def wanting_snapshot(self) -> list[str]:
        return [s for s, f in self.symbols.items() if f.needs_snapshot]

    def on_snapshot(self, symbol: str, body: bytes | str) -> SyncResult:
        """Feed a `GET /api/v3/depth` body; the result says whether another fetch is needed."""
        feed = self.symbols[symbol]
        result = feed.sync.on_snapshot(body)
        if result is SyncResult.MALFORMED:
            self.errors.add("snapshot", body, "unusable depth snapshot")
        if result is SyncResult.SYNCED or result is SyncResult.GAP:
            feed.changed = True
        return result

    def reset(self) -> None:
        """A new connection: everything received before it may be incomplete, so every book restarts."""
        for feed in self.symbols.values():
            feed.sync.reset()
            feed.changed = True

    # ------------------------------------------------------------------ output

    def check_stale(self, now_ns: int) -> list[str]:
        """Symbols that just went stale (no message for `stale_after_s`): their book is flagged, an alarm is raised."""
        out = []
        for sym, feed in self.symbols.items():
            if not feed.stale and feed.last_msg_ns and now_ns - feed.last_msg_ns > self.stale_after_ns:
                feed.stale = True
                feed.changed = True
                feed.counters["stale_alarms"] += 1
                out.append(sym)
                log.warning("binance feed %s: %s is stale: no message for %.1f s", self.venue, sym,
                            (now_ns - feed.last_msg_ns) / 1e9)
        return out

    def drain(self, now_ns: int = 0) -> tuple[dict[str, BookUpdate], list[Trade]]:
        """Book updates of the symbols that changed since the last drain, and the trades received."""
        books: dict[str, BookUpdate] = {}
        for sym, feed in self.symbols.items():
            if not feed.changed:
                continue
            feed.changed = False
            synced = feed.sync.state is SyncState.SYNCED
            if not synced and not feed.ever_synced:
                continue  # an empty book first would tell subscribers nothing, and mislead what they infer
            feed.ever_synced = True
            update = feed.book.to_update(seq=feed.sync.last_update_id, depth=self.depth,
                                         exchange_ts_ns=feed.exchange_ms * 1_000_000, receive_ts_ns=now_ns,
                                         stale=feed.stale or not synced)
            if update.crossed:
                feed.counters["crossed"] += 1
            books[sym] = update
        trades, self.trades = self.trades, []
        return books, trades

    def stats(self) -> dict[str, dict[str, int]]:
        """Per symbol: sync counters, trades, duplicates, errors by kind; plus `conn_error:<kind>` for
        messages that could not be routed to a symbol (bad JSON, unknown stream), shared by the connection."""
        shared = {f"conn_error:{k}": n for k, n in self.errors.counts.items()
                  if k in ("json", "schema_envelope", "unknown_stream", "control")}
        return {s: {**f.stats(), **shared} for s, f in self.symbols.items()}

    def error_counts(self) -> dict[str, int]:
        return dict(self.errors.counts)
