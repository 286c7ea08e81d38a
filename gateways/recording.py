"""Recording market data and replaying it through the same handlers.

Raw: every message as received, with its receive timestamp, one JSON object a line in a gzip
file: `{"ts": <receive ns>, "kind": "ws" | "rest:<SYMBOL>", "raw": "<the message text>"}`.
The text is kept verbatim (a JSON string), so a replay feeds the handler the venue's exact bytes.
Normalized: books (top levels) and trades to Parquet with polars, for analysis.

`replay_raw` pushes a raw recording through a `BinanceMarketHandler` (or any handler with
`on_message` / `on_snapshot`), at the recorded pace (`speed=1.0`) or as fast as possible (`None`).
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from cluster.messages import BookUpdate, Trade


class RawRecord(msgspec.Struct):
    ts: int
    kind: str
    raw: str


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(RawRecord)


class RawRecorder:
    """Appends raw messages to a gzip JSONL file; usable as a feed's `recorder`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = gzip.open(self.path, "ab")  # noqa: SIM115 - open for the recorder's life
        self.count = 0

    def record(self, kind: str, raw: bytes | str, recv_ns: int) -> None:
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")
        self._file.write(_encode(RawRecord(recv_ns, kind, text)) + b"\n")
        self.count += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RawRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_raw(path: str | Path) -> Iterator[RawRecord]:
    """The records of a raw recording, in order; an unreadable line (e.g. a torn last line) ends the file."""
    with gzip.open(Path(path), "rb") as f:
        try:
            for line in f:
                if line.strip():
                    try:
                        yield _decode.decode(line)
                    except msgspec.DecodeError:
                        return
        except EOFError:  # a recording cut off mid-write
            return


async def replay_raw(path: str | Path, handler: Any, speed: float | None = None) -> int:
    """Feed a raw recording to `handler`; `speed` 1.0 = recorded pace, 2.0 = twice as fast, None = no waiting.

    Returns the number of records replayed.
    """
    loop = asyncio.get_running_loop()
    first_ts = None
    start = loop.time()
    n = 0
    for rec in read_raw(path):
        if speed:
            if first_ts is None:
                first_ts = rec.ts
            due = start + (rec.ts - first_ts) / 1e9 / speed
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        if rec.kind == "ws":
            handler.on_message(rec.raw, rec.ts)
        elif rec.kind.startswith("rest:"):
            handler.on_snapshot(rec.kind[5:], rec.raw)
        n += 1
    return n


class NormalizedRecorder:
    """Buffers normalized books and trades; `close()` writes `books.parquet` and `trades.parquet` in `folder`."""

    def __init__(self, folder: str | Path, depth: int = 5) -> None:
        self.folder = Path(folder)
        self.depth = depth
        self.books: list[dict[str, Any]] = []
        self.trades: list[dict[str, Any]] = []

    def add_book(self, b: BookUpdate) -> None:
        row: dict[str, Any] = {"venue": b.venue, "symbol": b.symbol, "seq": b.seq, "exchange_ts_ns": b.exchange_ts_ns,
                               "receive_ts_ns": b.receive_ts_ns, "crossed": b.crossed, "stale": b.stale}
        for side, levels in (("bid", b.bids), ("ask", b.asks)):
            for i in range(self.depth):
                price, qty = levels[i] if i < len(levels) else (None, None)
                row[f"{side}_px_{i}"] = price
                row[f"{side}_qty_{i}"] = qty
        self.books.append(row)

    def add_trade(self, t: Trade) -> None:
        self.trades.append({"venue": t.venue, "symbol": t.symbol, "trade_id": t.trade_id, "price": t.price,
                            "qty": t.qty, "aggressor": t.aggressor.value, "exchange_ts_ns": t.exchange_ts_ns,
                            "receive_ts_ns": t.receive_ts_ns})

    def close(self) -> tuple[Path, Path]:
        self.folder.mkdir(parents=True, exist_ok=True)
        book_schema = {"venue": pl.Utf8, "symbol": pl.Utf8, "seq": pl.Int64, "exchange_ts_ns": pl.Int64,
                       "receive_ts_ns": pl.Int64, "crossed": pl.Boolean, "stale": pl.Boolean,
                       **{f"{s}_{k}_{i}": pl.Float64 for s in ("bid", "ask") for i in range(self.depth)
                          for k in ("px", "qty")}}
        trade_schema = {"venue": pl.Utf8, "symbol": pl.Utf8, "trade_id": pl.Utf8, "price": pl.Float64,
                        "qty": pl.Float64, "aggressor": pl.Utf8, "exchange_ts_ns": pl.Int64, "receive_ts_ns": pl.Int64}
        books = self.folder / "books.parquet"
        trades = self.folder / "trades.parquet"
        pl.DataFrame(self.books, schema=book_schema).write_parquet(books)
        pl.DataFrame(self.trades, schema=trade_schema).write_parquet(trades)
        return books, trades
