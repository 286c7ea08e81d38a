"""Book benchmark: raw Binance depth messages in, book applied, best bid/ask read; level updates/s on one core.

Same stream for every contender:
- `ours`: `BinanceDepthSync.on_message` (msgspec parse + validation + the documented procedure +
  `OrderBook.apply_levels`), then `best_bid()` / `best_ask()` after every message;
- `ours_feed_handler`: the whole feed path (`BinanceMarketHandler.on_message`: stream routing, counters);
- `orjson_sortedcontainers`: a plain reference (orjson.loads, float(), SortedDict set/pop, peekitem);
- `cryptofeed_order_book`: orjson.loads + cryptofeed's C `order_book.OrderBook`;
- `nautilus_rust_prebuilt`: nautilus_trader's Rust `OrderBook` (L2_MBP) applying `OrderBookDeltas`
  built before the clock starts (no JSON parsing, no object construction timed);
- `ours_book_prebuilt`: the same for our `OrderBook`: `apply_levels` of each message's levels as floats,
  built before the clock starts, then `best_bid()` / `best_ask()` (the book alone, no parsing: what
  `nautilus_rust_prebuilt` measures, and the part of `ours` that is not the wire parser).
Also: memory of a 5,000-level book (tracemalloc). Writes bench/results/book.json.
"""

from __future__ import annotations

import gc
import json
import random
import time
import tracemalloc
from typing import Any

from bench.common import write_result
from gateways.binance.depth_sync import BinanceDepthSync
from gateways.binance.market_handler import BinanceMarketHandler
from gateways.book import OrderBook

SYMBOL = "BTCUSDT"
LEVELS_PER_SIDE = 2500
MESSAGES = 20_000
LEVELS_PER_MESSAGE = 20
TARGET = 1_000_000


def make_stream(seed: int = 1) -> tuple[bytes, list[bytes], list[list[tuple[bool, float, float]]], int]:
    """(snapshot body, raw combined-stream messages, the same levels as (is_bid, price, qty), level count)."""
    rng = random.Random(seed)
    mid_tick = 6_000_000  # 60000.00 at tick 0.01
    bids = {mid_tick - 1 - i: rng.randint(1, 10**6) for i in range(LEVELS_PER_SIDE)}
    asks = {mid_tick + 1 + i: rng.randint(1, 10**6) for i in range(LEVELS_PER_SIDE)}

    def px(t: int) -> str:
        return f"{t // 100}.{t % 100:02d}"

    def qty(q: int) -> str:
        return f"{q // 10**8}.{q % 10**8:08d}"

    uid = 1_000_000
    snap = json.dumps({"lastUpdateId": uid, "bids": [[px(t), qty(q)] for t, q in sorted(bids.items(), reverse=True)],
                       "asks": [[px(t), qty(q)] for t, q in sorted(asks.items())]}).encode()
    raws, parsed, total = [], [], 0
    for _ in range(MESSAGES):
        b, a, levels = [], [], []
        for _ in range(LEVELS_PER_MESSAGE):
            is_bid = rng.random() < 0.5
            side = bids if is_bid else asks
            r = rng.random()
            if r < 0.1 and len(side) > LEVELS_PER_SIDE // 2:  # remove a level
                t = rng.choice(list(side)[:50])
                q = 0
                del side[t]
            elif r < 0.2:  # add a level within 1% of mid
                t = mid_tick - rng.randint(1, 3000) if is_bid else mid_tick + rng.randint(1, 3000)
                q = rng.randint(1, 10**6)
                side[t] = q
            else:  # resize an existing level, mostly near the touch
                keys = sorted(side, reverse=is_bid)[:200]
                t = rng.choice(keys)
                q = rng.randint(1, 10**6)
                side[t] = q
            (b if is_bid else a).append([px(t), qty(q)])
            levels.append((is_bid, t / 100, q / 1e8))
        raws.append(json.dumps({"stream": "btcusdt@depth@100ms", "data": {
            "e": "depthUpdate", "E": 1, "s": SYMBOL, "U": uid + 1, "u": uid + len(levels), "b": b, "a": a}},
            separators=(",", ":")).encode())
        uid += len(levels)
        parsed.append(levels)
        total += len(levels)
    return snap, raws, parsed, total


def _timed(fn: Any) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        gc.enable()


def bench_ours(snap: bytes, raws: list[bytes]) -> float:
    sync = BinanceDepthSync(SYMBOL, OrderBook(SYMBOL))
    sync.on_snapshot(snap)
    book = sync.book
    on_message = sync.on_message

    def run() -> None:
        for raw in raws:
            on_message(raw)
            book.best_bid()
            book.best_ask()

    t = _timed(run)
    assert sync.counters["applied"] == len(raws), sync.counters
    return t


def bench_book_prebuilt(snap: bytes, parsed: list[list[tuple[bool, float, float]]]) -> float:
    s = json.loads(snap)
    book = OrderBook(SYMBOL)
    book.load_snapshot([(float(p), float(q)) for p, q in s["bids"]], [(float(p), float(q)) for p, q in s["asks"]])
    batches = [([(p, q) for is_bid, p, q in levels if is_bid], [(p, q) for is_bid, p, q in levels if not is_bid])
               for levels in parsed]
    apply_levels = book.apply_levels

    def run() -> None:
        for bids, asks in batches:
            apply_levels(bids, asks)
            book.best_bid()
            book.best_ask()

    return _timed(run)


def bench_handler(snap: bytes, raws: list[bytes]) -> float:
    h = BinanceMarketHandler("binance", [SYMBOL])
    h.on_snapshot(SYMBOL, snap)
    book = h.symbols[SYMBOL].book
    on_message = h.on_message

    def run() -> None:
        for raw in raws:
            on_message(raw)
            book.best_bid()
            book.best_ask()

    t = _timed(run)
    assert h.symbols[SYMBOL].sync.counters["applied"] == len(raws)
    return t


def bench_orjson_sorted(snap: bytes, raws: list[bytes]) -> float:
    import orjson
    from sortedcontainers import SortedDict

    s = orjson.loads(snap)
    bids = SortedDict({-float(p): float(q) for p, q in s["bids"]})
    asks = SortedDict({float(p): float(q) for p, q in s["asks"]})

    def run() -> None:
        loads = orjson.loads
        for raw in raws:
            d = loads(raw)["data"]
            for p, q in d["b"]:
                qf = float(q)
                if qf:
                    bids[-float(p)] = qf
                else:
                    bids.pop(-float(p), None)
            for p, q in d["a"]:
                qf = float(q)
                if qf:
                    asks[float(p)] = qf
                else:
                    asks.pop(float(p), None)
            bids.peekitem(0)
            asks.peekitem(0)

    return _timed(run)


def bench_cryptofeed(snap: bytes, raws: list[bytes]) -> float:
    import orjson
    from order_book import OrderBook as CBook

    s = orjson.loads(snap)
    book = CBook()
    for p, q in s["bids"]:
        book.bids[float(p)] = float(q)
    for p, q in s["asks"]:
        book.asks[float(p)] = float(q)
    bids, asks = book.bids, book.asks

    def run() -> None:
        loads = orjson.loads
        for raw in raws:
            d = loads(raw)["data"]
            for p, q in d["b"]:
                qf = float(q)
                if qf:
                    bids[float(p)] = qf
                elif float(p) in bids:
                    del bids[float(p)]
            for p, q in d["a"]:
                qf = float(q)
                if qf:
                    asks[float(p)] = qf
                elif float(p) in asks:
                    del asks[float(p)]
            bids.index(0)
            asks.index(0)

    return _timed(run)


def bench_nautilus(snap: bytes, parsed: list[list[tuple[bool, float, float]]]) -> float:
    from nautilus_trader.model.book import OrderBook as NBook
    from nautilus_trader.model.data import BookOrder, OrderBookDelta, OrderBookDeltas
    from nautilus_trader.model.enums import BookAction, BookType, OrderSide
    from nautilus_trader.model.identifiers import InstrumentId
    from nautilus_trader.model.objects import Price, Quantity

    iid = InstrumentId.from_str(f"{SYMBOL}.BINANCE")
    book = NBook(iid, BookType.L2_MBP)
    s = json.loads(snap)
    seq = 0
    init = []
    for side, levels in ((OrderSide.BUY, s["bids"]), (OrderSide.SELL, s["asks"])):
        for p, q in levels:
            seq += 1
            init.append(OrderBookDelta(iid, BookAction.ADD, BookOrder(side, Price(float(p), 2), Quantity(float(q), 8),
                                                                      0), 0, seq, 0, 0))
    book.apply_deltas(OrderBookDeltas(iid, init))
    batches = []
    for levels in parsed:
        deltas = []
        for is_bid, p, q in levels:
            seq += 1
            side = OrderSide.BUY if is_bid else OrderSide.SELL
            action = BookAction.UPDATE if q else BookAction.DELETE
            deltas.append(OrderBookDelta(iid, action, BookOrder(side, Price(p, 2), Quantity(q, 8), 0), 0, seq, 0, 0))
        batches.append(OrderBookDeltas(iid, deltas))

    def run() -> None:
        for d in batches:
            book.apply_deltas(d)
            book.best_bid_price()
            book.best_ask_price()

    return _timed(run)


def book_memory_bytes(levels: int = 5000) -> int:
    """Bytes held by an `OrderBook` with `levels` levels (half a side each), measured with tracemalloc."""
    prices = [(60000.0 - i * 0.01, 1.0 + i) for i in range(levels // 2)]
    asks = [(60000.01 + i * 0.01, 1.0 + i) for i in range(levels // 2)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    book = OrderBook(SYMBOL)
    book.load_snapshot(prices, asks)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(book) == levels
    return after - before


def main() -> dict[str, Any]:
    snap, raws, parsed, total = make_stream()
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    contenders = {
        "ours": lambda: bench_ours(snap, raws),
        "ours_feed_handler": lambda: bench_handler(snap, raws),
        "ours_book_prebuilt": lambda: bench_book_prebuilt(snap, parsed),
        "orjson_sortedcontainers": lambda: bench_orjson_sorted(snap, raws),
        "cryptofeed_order_book": lambda: bench_cryptofeed(snap, raws),
        "nautilus_rust_prebuilt": lambda: bench_nautilus(snap, parsed),
    }
    for name, fn in contenders.items():
        try:
            secs = min(fn() for _ in range(3))
        except ImportError as exc:
            skipped[name] = f"not installed: {exc}"
            print(f"  {name:<26} skipped ({exc})")
            continue
        rate = total / secs
        results[name] = {"level_updates_per_s": round(rate), "messages_per_s": round(len(raws) / secs),
                         "seconds": round(secs, 4)}
        print(f"  {name:<26} {rate:>12,.0f} level updates/s  ({len(raws) / secs:,.0f} msgs/s)")
    ours = results["ours"]["level_updates_per_s"]
    ratios = {f"ours_vs_{k}": round(ours / v["level_updates_per_s"], 3) for k, v in results.items() if k != "ours"}
    if "ours_book_prebuilt" in results and "nautilus_rust_prebuilt" in results:  # book against book, no parsing
        ratios["ours_book_prebuilt_vs_nautilus_rust_prebuilt"] = round(
            results["ours_book_prebuilt"]["level_updates_per_s"] / results["nautilus_rust_prebuilt"]["level_updates_per_s"], 3)
    mem = book_memory_bytes()
    print(f"  5,000-level book: {mem / 1e6:.2f} MB")
    data = {
        "stream": {"messages": len(raws), "level_updates": total, "levels_per_message": LEVELS_PER_MESSAGE,
                   "book_levels": 2 * LEVELS_PER_SIDE, "note": "one core, best bid/ask read after every message"},
        "results": results, "ratios": ratios, "skipped": skipped,
        "book_5000_levels_bytes": mem,
        "targets": {"level_updates_per_s": TARGET, "met": ours >= TARGET,
                    # Like for like: both books applying levels built before the clock (no parsing).
                    "book_at_least_half_of_nautilus": (
                        "nautilus_rust_prebuilt" in results and "ours_book_prebuilt" in results
                        and results["ours_book_prebuilt"]["level_updates_per_s"]
                        >= 0.5 * results["nautilus_rust_prebuilt"]["level_updates_per_s"]),
                    # Ours parsing JSON too, against nautilus's book alone.
                    "with_parsing_at_least_half_of_nautilus_book": (
                        "nautilus_rust_prebuilt" in results
                        and ours >= 0.5 * results["nautilus_rust_prebuilt"]["level_updates_per_s"]),
                    "book_under_2mb": mem < 2_000_000},
    }
    write_result("book", data)
    return data


if __name__ == "__main__":
    main()
