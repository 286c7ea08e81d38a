"""Recording market data and replaying it through the same handlers.

Raw: every message as received, with its receive timestamp, one JSON object a line in a gzip
file: `{"ts": <receive ns>, "kind": "ws" | "rest:<SYMBOL>", "raw": "<the message text>"}`.
The text is kept verbatim (a JSON string), so a replay feeds the handler the venue's exact bytes.
Normalized: books (top levels) and trades to Parquet with polars, in the layout `backtest --data`
reads (`strategies/market_data.py`: `ts_ns` = receive time, `bid_px_i` ...), plus `receive_ts_ns`,
`crossed` and `stale`. Long recordings are written in parts (`books-<name>-0001.parquet`, ...).

`FeedRecording` is what a feed actor records when `feeds.record` turns it on.

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

    def flush(self) -> None:
        """Make what was recorded so far readable (a killed process loses at most what came after)."""
        self._file.flush()

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
    """Buffers normalized books and trades; writes them as Parquet in `folder` every `flush_rows` rows and on `close()`.

    The first part is `books[-<name>].parquet` / `trades[-<name>].parquet`, later ones add `-0001`, ...
    Adding a row only appends the message (no conversion until a part is written).
    """

    def __init__(self, folder: str | Path, depth: int = 5, name: str = "", flush_rows: int | None = None) -> None:
        self.folder = Path(folder)
        self.depth = depth
        self.name = name
        self.flush_rows = flush_rows
        self.books: list[BookUpdate] = []
        self.trades: list[Trade] = []
        self.parts = 0
        self.files: list[Path] = []
        self.rows = {"books": 0, "trades": 0}

    def add_book(self, b: BookUpdate) -> None:
        self.books.append(b)
        if self.flush_rows is not None and len(self.books) >= self.flush_rows:
            self.flush()

    def add_trade(self, t: Trade) -> None:
        self.trades.append(t)
        if self.flush_rows is not None and len(self.trades) >= self.flush_rows:
            self.flush()

    def _paths(self) -> tuple[Path, Path]:
        suffix = (f"-{self.name}" if self.name else "") + (f"-{self.parts:04d}" if self.parts else "")
        return self.folder / f"books{suffix}.parquet", self.folder / f"trades{suffix}.parquet"

    def book_frame(self, books: list[BookUpdate]) -> pl.DataFrame:
        """The backtester's normalized book rows, plus when each book arrived and its crossed/stale flags."""
        from strategies.market_data import books_frame

        return books_frame(books, self.depth).with_columns(
            pl.Series("receive_ts_ns", [b.receive_ts_ns for b in books], dtype=pl.Int64),
            pl.Series("crossed", [b.crossed for b in books], dtype=pl.Boolean),
            pl.Series("stale", [b.stale for b in books], dtype=pl.Boolean))

    @staticmethod
    def trade_frame(trades: list[Trade]) -> pl.DataFrame:
        from strategies.market_data import trades_frame

        return trades_frame(trades).with_columns(
            pl.Series("receive_ts_ns", [t.receive_ts_ns for t in trades], dtype=pl.Int64))

    def flush(self, force: bool = False) -> tuple[Path, Path] | None:
        """Write what is buffered as the next part (nothing to write and not `force`: None)."""
        if not (self.books or self.trades or force):
            return None
        books, self.books = self.books, []
        trades, self.trades = self.trades, []
        self.folder.mkdir(parents=True, exist_ok=True)
        bpath, tpath = self._paths()
        self.book_frame(books).write_parquet(bpath)
        self.trade_frame(trades).write_parquet(tpath)
        self.parts += 1
        self.files += [bpath, tpath]
        self.rows["books"] += len(books)
        self.rows["trades"] += len(trades)
        return bpath, tpath

    def close(self) -> tuple[Path, Path]:
        """Write the rest; returns the first part's (books, trades) paths (written even when empty)."""
        self.flush(force=not self.parts)
        return self.files[0], self.files[1]


def _file_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "feed"


class FeedRecording:
    """What one feed actor records (`feeds.record`): raw messages to `raw-<name>-<start>.jsonl.gz` and
    normalized books/trades to `books-<name>-<start>*.parquet` / `trades-...` in `folder`.

    The start time in the names keeps a restarted actor from appending to a file its predecessor may
    have left torn.
    """

    def __init__(self, folder: str | Path, name: str, raw: bool, normalized: bool, depth: int,
                 flush_rows: int = 20_000, flush_interval_s: float = 1.0) -> None:
        import datetime as dt
        import os

        self.folder = Path(folder)
        stem = f"{_file_name(name)}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.raw = RawRecorder(self.folder / f"raw-{stem}.jsonl.gz") if raw else None
        self.normalized = NormalizedRecorder(self.folder, depth, stem, flush_rows) if normalized else None
        self.flush_interval_s = flush_interval_s
        self._next_flush = 0.0

    def add(self, books: dict[str, BookUpdate], trades: list[Trade]) -> None:
        rec = self.normalized
        if rec is not None:
            for b in books.values():
                rec.add_book(b)
            for t in trades:
                rec.add_trade(t)

    def tick(self, now_monotonic: float) -> None:
        """Flush the raw file about once per `flush_interval_s` (called from the actor's loop)."""
        if self.raw is not None and now_monotonic >= self._next_flush:
            self._next_flush = now_monotonic + self.flush_interval_s
            self.raw.flush()

    def close(self) -> list[Path]:
        """Close everything; returns the files written."""
        out = []
        if self.raw is not None:
            self.raw.close()
            out.append(self.raw.path)
        if self.normalized is not None:
            self.normalized.close()
            out += self.normalized.files
        return out
