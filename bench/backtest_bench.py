"""Book events per second through a backtest of the imbalance strategy, on one core, and nautilus_trader's.

The events are the seeded simulator's (one symbol, BTCUSDT of configs/paper.yaml, 10 levels), made
once before timing. Ours: `strategies.backtest.BacktestEngine` with `OrderBookImbalance`, the risk
engine and the paper fill model, timed over the replay alone (loading is reported apart). Theirs:
nautilus_trader's `BacktestEngine` (L2 book, one venue) over the same books as `OrderBookDepth10`
records, with an equivalent trivial strategy that computes the same weighted imbalance per book and
sends nothing. The target is 200 000 book events/s for ours.

Also `ours_cli_path`: the same events as `python -m cluster backtest` and `sweep` hand the engine, i.e.
through the normalized frames (`books_frame` / `trades_frame` -> `frames_to_events`); same books, same
fills, but the events are laid out in memory as one batch, which is friendlier to the CPU cache. Its
`load_seconds` is the time `frames_to_events` takes to build them (best of 3), and
`book_events_per_s_with_load` counts it in: what a backtest from Parquet costs once the file is read.

And `ours_ceilings`: the same replay with less in it, to show where the target stands. `engine_only`: a
strategy that sends nothing and computes nothing (the base class: the latest book kept, lot inferred),
so the event loop, the venue's view of the books and the equity samples alone. `signal_only`: the
imbalance strategy with a threshold no book reaches (0.999), so its per-book signal but no order. What
the full run takes beyond `signal_only` is the order path (risk, paper venue, reports, positions).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec

from bench.common import write_result
from cluster.config import load_config
from cluster.messages import BookUpdate
from strategies.backtest import BacktestEngine, strategies_from_config
from strategies.base import Strategy
from strategies.market_data import books_frame, frames_to_events, sim_events, trades_frame

REPO = Path(__file__).resolve().parents[1]
SYMBOL = "BTCUSDT"
TARGET = 200_000


def make_events(seconds: float) -> tuple[Any, list]:
    cfg = load_config(REPO / "configs" / "paper.yaml")
    cfg = msgspec.structs.replace(cfg, strategies=[s for s in cfg.strategies if s.type == "imbalance"])
    return cfg, list(sim_events(cfg, seconds, [SYMBOL]))


def run_ours(cfg: Any, events: list, repeats: int = 5, make: Any = None) -> dict[str, Any]:
    """Best of `repeats` replays; `make()` gives the strategies (default: the config's imbalance strategy)."""
    books = sum(1 for e in events if isinstance(e, BookUpdate))
    best = None
    result = None
    for _ in range(repeats):
        strategies = make() if make is not None else strategies_from_config(cfg, only=["obi"])
        engine = BacktestEngine(cfg, strategies=strategies)
        t = time.perf_counter()
        result = engine.run(events)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    assert result is not None and best is not None
    return {"book_events": books, "events": len(events), "seconds": round(best, 4),
            "book_events_per_s": round(books / best), "events_per_s": round(len(events) / best),
            "fills": result.fills.height, "orders": result.summary["strategies"]["ALL"]["orders"]}


def run_ceilings(cfg: Any, events: list) -> dict[str, Any]:
    """Book events/s of the same replay with no strategy work, and with the signal but no orders."""
    obi = next(s for s in cfg.strategies if s.name == "obi")
    sym = cfg.symbol_map

    def engine_only() -> list[Strategy]:
        s = Strategy("obi", obi.symbols, {x: sym[x].venue for x in obi.symbols})
        s.set_instruments({x: sym[x].lot_size for x in obi.symbols})
        return [s]

    def signal_only() -> list[Strategy]:
        return strategies_from_config(cfg, only=["obi"], overrides={"obi": {"threshold": 0.999}})

    out = {}
    for name, make in (("engine_only", engine_only), ("signal_only", signal_only)):
        r = run_ours(cfg, events, make=make)
        out[name] = {"book_events_per_s": r["book_events_per_s"], "seconds": r["seconds"], "orders": r["orders"]}
    return out


def run_nautilus(events: list) -> dict[str, Any]:
    try:
        import nautilus_trader
        from nautilus_trader.backtest.engine import BacktestEngine as NtEngine
        from nautilus_trader.backtest.engine import BacktestEngineConfig
        from nautilus_trader.config import LoggingConfig, StrategyConfig
        from nautilus_trader.model.currencies import USDT
        from nautilus_trader.model.data import BookOrder, OrderBookDepth10
        from nautilus_trader.model.enums import AccountType, BookType, OmsType, OrderSide
        from nautilus_trader.model.identifiers import TraderId, Venue
        from nautilus_trader.model.objects import Money, Price, Quantity
        from nautilus_trader.test_kit.providers import TestInstrumentProvider
        from nautilus_trader.trading.strategy import Strategy as NtStrategy
    except ImportError as exc:
        return {"error": f"nautilus_trader not installed: {exc}"}

    instrument = TestInstrumentProvider.btcusdt_binance()

    class ImbalanceConfig(StrategyConfig, frozen=True):
        instrument_id: str = str(instrument.id)

    class TrivialImbalance(NtStrategy):
        """The same weighted imbalance per book as ours; sends no orders."""

        def __init__(self, config: ImbalanceConfig):
            super().__init__(config)
            self.books = 0
            self.weights = [0.5**i for i in range(5)]
            self.last = 0.0

        def on_start(self) -> None:
            self.subscribe_order_book_depth(instrument.id)

        def on_order_book_depth(self, depth: Any) -> None:
            self.books += 1
            b = sum(float(o.size) * w for o, w in zip(depth.bids, self.weights, strict=False))
            a = sum(float(o.size) * w for o, w in zip(depth.asks, self.weights, strict=False))
            self.last = (b - a) / (a + b) if a + b > 0 else 0.0

    def side(levels: list, which: Any) -> list:
        out = [BookOrder(which, Price(p, 2), Quantity(q, 6), 0) for p, q in levels[:10]]
        while len(out) < 10:
            out.append(BookOrder(which, Price(0, 2), Quantity(0, 6), 0))
        return out

    t0 = time.perf_counter()
    data = []
    for e in events:
        if not isinstance(e, BookUpdate):
            continue
        ts = e.receive_ts_ns
        data.append(OrderBookDepth10(instrument.id, side(e.bids, OrderSide.BUY), side(e.asks, OrderSide.SELL),
                                     [1] * 10, [1] * 10, 0, e.seq, ts, ts))
    convert_s = time.perf_counter() - t0
    engine = NtEngine(BacktestEngineConfig(trader_id=TraderId("BENCH-001"), logging=LoggingConfig(bypass_logging=True)))
    engine.add_venue(venue=Venue("BINANCE"), oms_type=OmsType.NETTING, account_type=AccountType.CASH,
                     base_currency=None, starting_balances=[Money(1_000_000, USDT), Money(10, instrument.base_currency)],
                     book_type=BookType.L2_MBP)
    engine.add_instrument(instrument)
    engine.add_data(data)
    strategy = TrivialImbalance(ImbalanceConfig())
    engine.add_strategy(strategy)
    t = time.perf_counter()
    engine.run()
    dt = time.perf_counter() - t
    books = strategy.books
    engine.dispose()
    return {"version": nautilus_trader.__version__, "book_events": len(data), "books_seen_by_strategy": books,
            "seconds": round(dt, 4), "book_events_per_s": round(len(data) / dt) if dt > 0 else None,
            "conversion_seconds": round(convert_s, 3)}


def run(seconds: float = 1500.0) -> dict[str, Any]:
    t = time.perf_counter()
    cfg, events = make_events(seconds)
    make_s = time.perf_counter() - t
    ours = run_ours(cfg, events)
    print(f"backtest (ours): {ours['book_events_per_s']:,} book events/s ({ours['events_per_s']:,} events/s incl. "
          f"trades), {ours['fills']} fills; target {TARGET:,}/s")
    ceilings = run_ceilings(cfg, events)
    print(f"backtest (ours) with less in it: {ceilings['engine_only']['book_events_per_s']:,} book events/s with no "
          f"strategy work, {ceilings['signal_only']['book_events_per_s']:,}/s with the imbalance signal and no orders "
          f"({ceilings['signal_only']['orders']} orders)")
    frames = (books_frame([e for e in events if isinstance(e, BookUpdate)]),
              trades_frame([e for e in events if not isinstance(e, BookUpdate)]))
    load_s = []
    for _ in range(3):
        t = time.perf_counter()
        cli_events = frames_to_events(*frames)
        load_s.append(time.perf_counter() - t)
    cli = run_ours(cfg, cli_events)
    assert (cli["fills"], cli["orders"]) == (ours["fills"], ours["orders"]), (cli, ours)
    # What `cluster backtest --data` spends once the Parquet is read: building the events, then the replay.
    cli["load_seconds"] = round(min(load_s), 4)
    cli["book_events_per_s_with_load"] = round(cli["book_events"] / (cli["seconds"] + cli["load_seconds"]))
    print(f"backtest (ours, events as the backtest command builds them): {cli['book_events_per_s']:,} book events/s; "
          f"{cli['book_events_per_s_with_load']:,}/s counting the {cli['load_seconds']:.2f} s that building "
          f"{len(cli_events):,} events from the frames takes")
    theirs = run_nautilus(events)
    if "error" in theirs:
        print(f"nautilus_trader: {theirs['error']}")
    else:
        ratio = ours["book_events_per_s"] / theirs["book_events_per_s"]
        theirs["ours_over_theirs"] = round(ratio, 2)
        print(f"nautilus_trader {theirs['version']}: {theirs['book_events_per_s']:,} book events/s "
              f"(trivial imbalance strategy, L2 book); ours {ratio:.1f}x")
    return {"ours": ours, "ours_cli_path": cli, "ours_ceilings": ceilings, "nautilus_trader": theirs,
            "target": {"book_events_per_s": TARGET},
            "data": {"symbol": SYMBOL, "simulated_seconds": seconds, "generation_seconds": round(make_s, 2),
                     "levels": cfg.feeds.book_depth}}


def main() -> None:
    write_result("backtest", run())


if __name__ == "__main__":
    main()
