"""Market data for backtests: the seeded simulator, stepped without a wall clock, or recorded Parquet.

Normalized Parquet layout (what `write_parquet` writes and `load_events` reads):

* books: one row per L2 snapshot, columns `ts_ns` (int64, event time: when the book was received),
  `venue`, `symbol` (str), `seq` (int64), `exchange_ts_ns` (int64), and per level i = 0..N-1 (0 = the
  touch) `bid_px_i`, `bid_qty_i`, `ask_px_i`, `ask_qty_i` (float64, null where the book has fewer levels).
* trades: one row per trade, columns `ts_ns`, `venue`, `symbol`, `trade_id` (str), `price`, `qty`
  (float64), `aggressor` ("buy" or "sell"), `exchange_ts_ns`.

`--data PATH` is a folder holding `books*.parquet` and optionally `trades*.parquet` (also in
subfolders), or one Parquet file of either kind (told apart by its columns). `venue` and
`exchange_ts_ns` are optional when reading (defaults: `paper`, `ts_ns`). Events are replayed in
`ts_ns` order; at equal times trades come before books (as the feed delivers them), then file order.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl

from cluster.config import ClusterConfig
from cluster.messages import BookUpdate, Side, Trade
from gateways.sim_feed import SimulatedFeed

Event = BookUpdate | Trade

SIM_START_NS = 1_704_067_200 * 1_000_000_000  # 2024-01-01T00:00:00Z: the simulated clock's origin
TRADE_COLUMNS = ("ts_ns", "venue", "symbol", "trade_id", "price", "qty", "aggressor", "exchange_ts_ns")


class MarketDataError(ValueError):
    """The data cannot be read as normalized books/trades; the message says what is wrong."""


def sim_events(cfg: ClusterConfig, duration_s: float, symbols: list[str] | None = None,
               start_ns: int = SIM_START_NS) -> Iterator[Event]:
    """The built-in market of `cfg` for `duration_s` seconds of simulated time, with no wall clock.

    The same feeds the cluster runs (`gateways.sim_feed.SimulatedFeed`: Binance wire format, depth
    sync, `feeds.book_depth` levels), stepped every 1 / `market.updates_per_second` seconds. Each
    step yields its trades, then its books, symbol by symbol in config order: the order a Parquet
    replay of the same events has, so both give the same backtest.
    """
    wanted = set(symbols) if symbols else None
    feeds = [SimulatedFeed(s.venue, s, cfg.market, cfg.feeds.book_depth)
             for s in cfg.symbols if wanted is None or s.symbol in wanted]
    dt_s = 1.0 / cfg.market.updates_per_second
    steps = int(round(duration_s * cfg.market.updates_per_second))
    for i in range(1, steps + 1):
        now = start_ns + int(round(i * dt_s * 1e9))
        books = []
        for feed in feeds:
            book, trades = feed.step(dt_s, now)
            yield from trades
            if book is not None:
                books.append(book)
        yield from books


# -- Parquet ------------------------------------------------------------------------------------------
def books_frame(books: list[BookUpdate], depth: int | None = None) -> pl.DataFrame:
    """Normalized book rows (see the module docstring) for these snapshots."""
    n = depth if depth is not None else max((max(len(b.bids), len(b.asks)) for b in books), default=0)
    cols: dict[str, list] = {"ts_ns": [], "venue": [], "symbol": [], "seq": [], "exchange_ts_ns": []}
    for side in ("bid", "ask"):
        for i in range(n):
            cols[f"{side}_px_{i}"] = []
            cols[f"{side}_qty_{i}"] = []
    for b in books:
        cols["ts_ns"].append(b.receive_ts_ns or b.exchange_ts_ns)
        cols["venue"].append(b.venue)
        cols["symbol"].append(b.symbol)
        cols["seq"].append(b.seq)
        cols["exchange_ts_ns"].append(b.exchange_ts_ns)
        for side, levels in (("bid", b.bids), ("ask", b.asks)):
            for i in range(n):
                px, qty = levels[i] if i < len(levels) else (None, None)
                cols[f"{side}_px_{i}"].append(px)
                cols[f"{side}_qty_{i}"].append(qty)
    schema = {"ts_ns": pl.Int64, "venue": pl.String, "symbol": pl.String, "seq": pl.Int64, "exchange_ts_ns": pl.Int64}
    schema.update({k: pl.Float64 for k in cols if k not in schema})
    return pl.DataFrame(cols, schema=schema)


def trades_frame(trades: list[Trade]) -> pl.DataFrame:
    return pl.DataFrame({
        "ts_ns": [t.receive_ts_ns or t.exchange_ts_ns for t in trades], "venue": [t.venue for t in trades],
        "symbol": [t.symbol for t in trades], "trade_id": [t.trade_id for t in trades],
        "price": [t.price for t in trades], "qty": [t.qty for t in trades],
        "aggressor": [t.aggressor.value for t in trades], "exchange_ts_ns": [t.exchange_ts_ns for t in trades],
    }, schema={"ts_ns": pl.Int64, "venue": pl.String, "symbol": pl.String, "trade_id": pl.String,
               "price": pl.Float64, "qty": pl.Float64, "aggressor": pl.String, "exchange_ts_ns": pl.Int64})


def write_parquet(events: list[Event] | Iterator[Event], folder: str | Path) -> tuple[Path, Path]:
    """Write events as `books.parquet` and `trades.parquet` in `folder` (created); returns both paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    books: list[BookUpdate] = []
    trades: list[Trade] = []
    for e in events:
        (books if isinstance(e, BookUpdate) else trades).append(e)
    bp, tp = out / "books.parquet", out / "trades.parquet"
    books_frame(books).write_parquet(bp)
    trades_frame(trades).write_parquet(tp)
    return bp, tp


def read_frames(path: str | Path) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """(books, trades or None) from a folder or a single Parquet file; MarketDataError if unusable."""
    p = Path(path)
    if not p.exists():
        raise MarketDataError(f"{p}: no such file or folder")
    if p.is_dir():
        book_files = sorted(p.rglob("books*.parquet"))
        trade_files = sorted(p.rglob("trades*.parquet"))
        if not book_files:
            raise MarketDataError(f"{p}: no books*.parquet in this folder (see strategies/market_data.py for the layout)")
        books = pl.concat([_read(f) for f in book_files], how="diagonal_relaxed")
        trades = pl.concat([_read(f) for f in trade_files], how="diagonal_relaxed") if trade_files else None
    else:
        df = _read(p)
        if "bid_px_0" in df.columns:
            books, trades = df, None
        elif "price" in df.columns:
            raise MarketDataError(f"{p}: holds trades only; a backtest needs book snapshots (bid_px_0, ...)")
        else:
            raise MarketDataError(f"{p}: not a normalized book file: no bid_px_0 column")
    _require(books, ("ts_ns", "symbol", "bid_px_0", "bid_qty_0", "ask_px_0", "ask_qty_0"), "books")
    if trades is not None:
        _require(trades, ("ts_ns", "symbol", "price", "qty"), "trades")
    return books, trades


def _read(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except Exception as exc:
        raise MarketDataError(f"{path}: cannot read as Parquet: {exc}") from None


def _require(df: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MarketDataError(f"{what} data lacks columns {missing}; has {df.columns[:12]}")


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while building events: they form no cycles, and the collector would otherwise walk the
    hundreds of thousands of level tuples and lists again at every collection (half the build time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _side_levels(books: pl.DataFrame, side: str, depth: int) -> list[list[tuple[float, float]]]:
    """Each row's levels of one side, touch first, up to the first level with a null price or quantity."""
    n = books.height
    present = [i for i in range(depth) if f"{side}_px_{i}" in books.columns and f"{side}_qty_{i}" in books.columns]
    if present != list(range(len(present))):  # a level missing as a column ends every row's side there
        present = present[:next(i for i, lv in enumerate(present) if lv != i)]
    if not present:
        return [[] for _ in range(n)]
    px = [books[f"{side}_px_{i}"] for i in present]
    qty = [books[f"{side}_qty_{i}"] for i in present]
    rows = list(zip(*[zip(p.to_list(), q.to_list(), strict=True) for p, q in zip(px, qty, strict=True)], strict=True))
    if not any(c.null_count() for c in (*px, *qty)):
        return list(map(list, rows))
    # How many levels each row has before its first null: the running product of "both present".
    valid = np.column_stack([(p.is_not_null() & q.is_not_null()).to_numpy() for p, q in zip(px, qty, strict=True)])
    counts = np.cumprod(valid, axis=1).sum(axis=1).tolist()
    return [list(row[:c]) for row, c in zip(rows, counts, strict=True)]


def frames_to_events(books: pl.DataFrame, trades: pl.DataFrame | None = None,
                     symbols: list[str] | None = None) -> list[Event]:
    """Normalized frames -> BookUpdate / Trade events in replay order (see the module docstring).

    Built column by column (levels zipped from the level columns, one sort of all rows by time) with the
    cyclic GC paused: this is most of the time a backtest from Parquet takes.
    """
    with _gc_paused():
        return _frames_to_events(books, trades, symbols)


def _frames_to_events(books: pl.DataFrame, trades: pl.DataFrame | None, symbols: list[str] | None) -> list[Event]:
    if symbols:
        books = books.filter(pl.col("symbol").is_in(symbols))
        trades = trades.filter(pl.col("symbol").is_in(symbols)) if trades is not None else None
    if books["ts_ns"].null_count():
        raise MarketDataError("books: ts_ns has nulls; every book needs its time")
    depth = 0
    while f"bid_px_{depth}" in books.columns or f"ask_px_{depth}" in books.columns:
        depth += 1
    n = books.height

    def col(name: str, default: object = None) -> list:
        return books[name].to_list() if name in books.columns else [default] * n

    ts = col("ts_ns")
    venues = [v or "paper" for v in col("venue", "paper")]
    seq = col("seq") if "seq" in books.columns else list(range(1, n + 1))
    exch = col("exchange_ts_ns") if "exchange_ts_ns" in books.columns else ts
    events: list[Event] = [
        BookUpdate(venue=v, symbol=sym, seq=int(q), bids=b, asks=a, exchange_ts_ns=int(x or t), receive_ts_ns=int(t))
        for v, sym, q, b, a, x, t in zip(venues, col("symbol"), seq, _side_levels(books, "bid", depth),
                                         _side_levels(books, "ask", depth), exch, ts, strict=True)]
    times = [int(t) for t in ts]
    if trades is not None and trades.height:
        t = trades
        if t["ts_ns"].null_count():
            raise MarketDataError("trades: ts_ns has nulls; every trade needs its time")
        m = t.height
        tts = t["ts_ns"].to_list()
        tv = t["venue"].to_list() if "venue" in t.columns else ["paper"] * m
        tid = t["trade_id"].cast(pl.String).to_list() if "trade_id" in t.columns else [str(i) for i in range(m)]
        agg = t["aggressor"].to_list() if "aggressor" in t.columns else ["buy"] * m
        tex = t["exchange_ts_ns"].to_list() if "exchange_ts_ns" in t.columns else tts
        trade_events = [
            Trade(venue=v or "paper", symbol=sym, trade_id=i, price=px, qty=q,
                  aggressor=Side.SELL if side == "sell" else Side.BUY, exchange_ts_ns=int(x or tt),
                  receive_ts_ns=int(tt))
            for v, sym, i, px, q, side, x, tt in zip(tv, t["symbol"].to_list(), tid, t["price"].to_list(),
                                                     t["qty"].to_list(), agg, tex, tts, strict=True)]
        # Time order; at equal times trades (kind 0) before books (kind 1), then each file's row order.
        kind = np.concatenate([np.ones(n, dtype=np.int8), np.zeros(m, dtype=np.int8)])
        row = np.concatenate([np.arange(n), np.arange(m)])
        order = np.lexsort((row, kind, np.array(times + [int(x) for x in tts], dtype=np.int64)))
        everything = events + trade_events
        return [everything[i] for i in order.tolist()]
    order = np.lexsort((np.arange(n), np.array(times, dtype=np.int64)))
    return [events[i] for i in order.tolist()]


def load_events(path: str | Path, symbols: list[str] | None = None) -> list[Event]:
    books, trades = read_frames(path)
    return frames_to_events(books, trades, symbols)
