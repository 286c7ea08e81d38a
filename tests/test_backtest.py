"""The backtest engine and the research commands, without Ray: hand-worked cases and determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from cluster.cli import main
from cluster.config import parse_config
from cluster.messages import BookUpdate, OrderIntent, Side, TimeInForce
from strategies.backtest import BacktestEngine, max_drawdown, sharpe_ratio, strategies_from_config
from strategies.base import Strategy
from strategies.market_data import frames_to_events, load_events, read_frames, sim_events, write_parquet
from tests.cli_output import json_output

REPO = Path(__file__).resolve().parents[1]
T0 = 1_704_067_200 * 10**9


def small_config(tmp_path: Path, strategies: list[dict] | None = None, risk: dict | None = None):
    data = yaml.safe_load((REPO / "configs" / "strategies.yaml").read_text())
    data["cluster"] = {"name": "bt", "data_dir": str(tmp_path / "runs")}
    data["symbols"] = [s for s in data["symbols"] if s["symbol"] in ("ETHUSDT", "BNBUSDT")]
    data["risk"] = risk or {"defaults": {"max_order_notional": 5000.0, "max_position_notional": 20000.0}}
    data["strategies"] = strategies or [
        {"name": "mm", "type": "market_maker", "symbols": ["ETHUSDT"],
         "params": {"order_qty_notional": 1000.0, "max_position_notional": 5000.0}},
        {"name": "obi", "type": "imbalance", "symbols": ["ETHUSDT", "BNBUSDT"],
         "params": {"order_qty_notional": 500.0, "max_position_notional": 2500.0}},
    ]
    return data


def test_sharpe_and_drawdown_hand_worked():
    # Increments +1, -1, +2 per 1 s: mean 2/3, sample std sqrt(7/3); annualized by sqrt(365 * 86400).
    eq = [0.0, 1.0, 0.0, 2.0]
    expected = (2 / 3) / math.sqrt(7 / 3) * math.sqrt(365 * 86400)
    assert sharpe_ratio(eq, 1.0) == pytest.approx(expected)
    assert sharpe_ratio(eq, 60.0) == pytest.approx(expected / math.sqrt(60))
    assert sharpe_ratio([0.0, 1.0, 2.0], 1.0) == 0.0  # no variance: undefined, reported 0
    assert max_drawdown([0.0, 5.0, 2.0, 6.0, 1.0, 3.0]) == 5.0
    assert max_drawdown([-2.0, -1.0]) == 2.0  # the peak starts at 0
    assert max_drawdown([1.0, 2.0]) == 0.0


class BuyOnceThenSell(Strategy):
    """Buys 1 at the ask on the first book, sells 1 at the bid on the fifth."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.n = 0

    def on_book(self, update: BookUpdate) -> list[OrderIntent]:
        self.n += 1
        if self.n == 1:
            return [self.limit(update.symbol, Side.BUY, 1.0, update.best_ask, tif=TimeInForce.IOC)]
        if self.n == 5:
            return [self.limit(update.symbol, Side.SELL, 1.0, update.best_bid, tif=TimeInForce.IOC)]
        return []


def books(mids: list[float], step_s: float = 0.5, symbol: str = "ETHUSDT") -> list[BookUpdate]:
    return [BookUpdate(venue="paper", symbol=symbol, seq=i + 1, bids=[(m - 0.5, 2.0)], asks=[(m + 0.5, 2.0)],
                       receive_ts_ns=T0 + int(i * step_s * 1e9)) for i, m in enumerate(mids)]


def test_engine_hand_worked_round_trip_with_fees_and_latency(tmp_path):
    cfg = parse_config(small_config(tmp_path, strategies=[{"name": "x", "type": "imbalance", "symbols": ["ETHUSDT"]}]))
    s = BuyOnceThenSell("x", ["ETHUSDT"], {"ETHUSDT": "paper"})
    mids = [100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0]
    # Zero latency: buy at 100.5 (the first ask), sell at 103.5 (the fifth bid); taker fee 5 bp each.
    r = BacktestEngine(cfg, strategies=[s], latency_ms=0.0, use_risk=False).run(books(mids))
    assert r.fills["price"].to_list() == [100.5, 103.5] and r.fills["side"].to_list() == ["buy", "sell"]
    fees = (100.5 + 103.5) * 5e-4
    assert r.summary["strategies"]["x"]["pnl"] == pytest.approx(3.0 - fees)
    assert r.summary["strategies"]["x"]["fees"] == pytest.approx(fees)
    assert r.summary["strategies"]["x"]["trades"] == 2
    # Equity sampled each second of event time: 0 s, 1 s, 2 s, 3 s (end) rows for x and ALL.
    eq = r.equity.filter(pl.col("strategy") == "x")
    assert eq["ts_ns"].to_list() == [T0 + 10**9, T0 + 2 * 10**9, T0 + 3 * 10**9]
    # 600 ms latency: the buy decided at 0 s on ask 100.5 reaches the venue at 0.6 s, where the book of
    # 0.5 s asks 101.5 > its limit: the IOC expires. The sell decided at 2 s (limit 103.5) meets the
    # 2.5 s book and fills at its bid, 104.5.
    s2 = BuyOnceThenSell("x", ["ETHUSDT"], {"ETHUSDT": "paper"})
    r2 = BacktestEngine(cfg, strategies=[s2], latency_ms=600.0, use_risk=False).run(books(mids))
    assert r2.fills["price"].to_list() == [104.5] and r2.fills["side"].to_list() == ["sell"]
    assert s2.positions["ETHUSDT"] == -1.0


def test_engine_risk_refusal_reaches_the_strategy(tmp_path):
    cfg = parse_config(small_config(tmp_path, strategies=[{"name": "x", "type": "imbalance", "symbols": ["ETHUSDT"]}],
                                    risk={"defaults": {"max_order_notional": 50.0}}))
    s = BuyOnceThenSell("x", ["ETHUSDT"], {"ETHUSDT": "paper"})
    r = BacktestEngine(cfg, strategies=[s], latency_ms=0.0).run(books([100.0] * 6))
    assert r.fills.height == 0
    assert r.decisions["reason"].to_list() == ["max_order_notional"] * 2  # the buy and the sell
    assert s.rejections == {"max_order_notional": 2}
    assert r.summary["strategies"]["x"]["rejected"] == 2 and r.summary["strategies"]["x"]["orders"] == 0


def test_backtest_is_deterministic_and_parquet_replay_equals_the_simulator(tmp_path):
    cfg = parse_config(small_config(tmp_path))
    events = list(sim_events(cfg, 20.0))
    a = BacktestEngine(cfg, strategies=strategies_from_config(cfg)).run(events)
    b = BacktestEngine(cfg, strategies=strategies_from_config(cfg)).run(list(sim_events(cfg, 20.0)))
    assert a.fills.height > 0 and set(a.fills["strategy"]) == {"mm", "obi"}
    assert a.fills.equals(b.fills) and a.equity.equals(b.equity) and a.summary == b.summary
    write_parquet(events, tmp_path / "data")
    replayed = load_events(tmp_path / "data")
    assert len(replayed) == len(events)
    c = BacktestEngine(cfg, strategies=strategies_from_config(cfg)).run(replayed)
    assert c.fills.equals(a.fills) and c.summary == a.summary


def test_market_data_reader_errors_and_single_file(tmp_path):
    from strategies.market_data import MarketDataError

    with pytest.raises(MarketDataError, match="no such file"):
        read_frames(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MarketDataError, match="no books"):
        read_frames(tmp_path / "empty")
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"ts_ns": [1], "symbol": ["X"], "bid_px_0": [1.0]}).write_parquet(bad)
    with pytest.raises(MarketDataError, match="lacks columns"):
        read_frames(bad)
    # One books file with fewer levels on one side: nulls end the side.
    one = tmp_path / "books.parquet"
    pl.DataFrame({"ts_ns": [2, 1], "symbol": ["X", "X"], "bid_px_0": [9.0, 8.0], "bid_qty_0": [1.0, 1.0],
                  "bid_px_1": [8.5, None], "bid_qty_1": [2.0, None], "ask_px_0": [10.0, 9.0],
                  "ask_qty_0": [1.0, 3.0]}).write_parquet(one)
    evs = frames_to_events(*read_frames(one))
    assert [e.receive_ts_ns for e in evs] == [1, 2]  # replayed in time order
    assert evs[0].bids == [(8.0, 1.0)] and evs[1].bids == [(9.0, 1.0), (8.5, 2.0)] and evs[0].venue == "paper"


def test_frames_to_events_levels_order_and_defaults():
    """A null anywhere in a level ends that side there (deeper levels are dropped); a level missing as a column
    ends every row's side; at one time trades come before books, then each file's row order; optional columns
    take their defaults; a book or trade without a time is refused by name."""
    from strategies.market_data import MarketDataError

    books = pl.DataFrame({
        "ts_ns": [5, 5, 3], "symbol": ["X", "Y", "X"], "venue": ["binance", None, "binance"],
        "bid_px_0": [9.0, 19.0, 8.0], "bid_qty_0": [1.0, 1.0, 1.0],
        "bid_px_1": [8.5, 18.5, 7.5], "bid_qty_1": [None, 2.0, 2.0],
        "bid_px_2": [8.0, 18.0, 7.0], "bid_qty_2": [3.0, 3.0, 3.0],
        "ask_px_0": [10.0, 20.0, 9.0], "ask_qty_0": [1.0, 1.0, 1.0],
        "ask_px_2": [11.0, 21.0, 10.0], "ask_qty_2": [1.0, 1.0, 1.0],  # no ask level 1: asks end at level 0
    })
    trades = pl.DataFrame({"ts_ns": [5, 4], "symbol": ["X", "X"], "price": [9.5, 9.0], "qty": [0.1, 0.2]})
    evs = frames_to_events(books, trades)
    assert [(type(e).__name__, e.receive_ts_ns) for e in evs] == [
        ("BookUpdate", 3), ("Trade", 4), ("Trade", 5), ("BookUpdate", 5), ("BookUpdate", 5)]
    x3, t4, t5, x5, y5 = evs
    assert x5.bids == [(9.0, 1.0)] and y5.bids == [(19.0, 1.0), (18.5, 2.0), (18.0, 3.0)]
    assert x3.asks == [(9.0, 1.0)] and x5.venue == "binance" and y5.venue == "paper"
    assert (x3.seq, x5.seq, y5.seq) == (3, 1, 2)  # no seq column: the row number from 1
    assert x5.exchange_ts_ns == 5 and t4.trade_id == "1" and t4.aggressor is Side.BUY and t5.price == 9.5
    (only_y,) = frames_to_events(books, None, symbols=["Y"])
    assert (only_y.symbol, only_y.bids, only_y.asks) == ("Y", y5.bids, y5.asks)
    with pytest.raises(MarketDataError, match="books: ts_ns has nulls"):
        frames_to_events(books.with_columns(pl.Series("ts_ns", [1, None, 2])))
    with pytest.raises(MarketDataError, match="trades: ts_ns has nulls"):
        frames_to_events(books, trades.with_columns(pl.Series("ts_ns", [None, 4])))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_backtest_command_records_then_replays_the_same_fills(tmp_path, capsys):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(small_config(tmp_path)))
    code, out, err = run_cli(["backtest", "--config", str(cfg_file), "--duration", "15", "--out",
                              str(tmp_path / "sim"), "--record", str(tmp_path / "data")], capsys)
    assert code == 0, err
    assert "Sharpe" in out and "obi" in out and "max DD" in out
    for name in ("fills.parquet", "decisions.parquet", "equity.parquet", "summary.json"):
        assert (tmp_path / "sim" / name).exists()
    code, out, err = run_cli(["backtest", "--config", str(cfg_file), "--data", str(tmp_path / "data"), "--out",
                              str(tmp_path / "replay"), "--set", "obi.threshold=0.2"], capsys)
    assert code == 0, err
    sim = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert sim["events"]["books"] > 0 and sim["strategies"]["ALL"]["trades"] > 0
    code, _, _ = run_cli(["backtest", "--config", str(cfg_file), "--data", str(tmp_path / "data"), "--out",
                          str(tmp_path / "replay2")], capsys)
    assert code == 0
    assert pl.read_parquet(tmp_path / "replay2" / "fills.parquet").equals(pl.read_parquet(tmp_path / "sim" / "fills.parquet"))
    # User errors are one line and exit 2.
    code, _, err = run_cli(["backtest", "--config", str(cfg_file), "--set", "obi.bogus=1"], capsys)
    assert code == 2 and "bogus" in err and err.count("\n") == 1
    code, _, err = run_cli(["backtest", "--config", str(cfg_file), "--data", str(tmp_path / "nope")], capsys)
    assert code == 2 and "no such file" in err
    code, _, err = run_cli(["backtest", "--config", str(cfg_file), "--strategy", "zzz"], capsys)
    assert code == 2 and "unknown strategy 'zzz'" in err


def test_research_pairs_ranks_the_cointegrated_pair_first(tmp_path, capsys):
    from strategies.cointegration import engle_granger

    rng = np.random.default_rng(3)
    n = 400
    x = 100 + np.cumsum(rng.normal(size=n) * 0.2)
    e = np.zeros(n)
    for i in range(1, n):
        e[i] = 0.6 * e[i - 1] + rng.normal() * 0.1
    y = 0.5 * x + 20 + e
    z = 50 + np.cumsum(rng.normal(size=n) * 0.2)
    rows = []
    for sym, mids in (("AAA", y), ("BBB", x), ("CCC", z)):
        for i, m in enumerate(mids):
            rows.append({"ts_ns": T0 + i * 10**9, "symbol": sym, "bid_px_0": m - 0.01, "bid_qty_0": 1.0,
                         "ask_px_0": m + 0.01, "ask_qty_0": 1.0})
    (tmp_path / "rec").mkdir()
    pl.DataFrame(rows).write_parquet(tmp_path / "rec" / "books.parquet")
    code, out, err = run_cli(["research", "pairs", "--data", str(tmp_path / "rec"), "--json"], capsys)
    assert code == 0, err
    ranked = json_output(out)
    assert len(ranked) == 3
    top = ranked[0]
    assert {top["y"], top["x"]} == {"AAA", "BBB"} and top["p_value"] < 0.01
    yy, xx = (y, x) if top["y"] == "AAA" else (x, y)
    ref = engle_granger(yy, xx)
    assert top["hedge_ratio"] == pytest.approx(ref.beta, abs=1e-9) and top["adf_stat"] == pytest.approx(ref.adf_stat)
    assert top["half_life_s"] == pytest.approx(ref.half_life)  # 1 s samples
    assert all(r["p_value"] > 10 * top["p_value"] and "CCC" in (r["y"], r["x"]) for r in ranked[1:])
    code, out, _ = run_cli(["research", "pairs", "--data", str(tmp_path / "rec")], capsys)
    assert code == 0 and "hedge ratio" in out and "half-life" in out and "ADF stat" in out
    code, _, err = run_cli(["research", "pairs", "--data", str(tmp_path / "nope")], capsys)
    assert code == 2 and "no such file" in err
    code, _, err = run_cli(["research", "pairs", "--data", str(tmp_path / "rec"), "--symbols", "AAA", "ZZZ"], capsys)
    assert code == 2 and "--symbols: no books for ZZZ in the data; it has ['AAA', 'BBB', 'CCC']" in err


def test_params_command_refuses_bad_values_and_needs_a_running_cluster(tmp_path, capsys):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(small_config(tmp_path)))
    code, _, err = run_cli(["params", "set", "obi", "bogus", "1", "--config", str(cfg_file)], capsys)
    assert code == 2 and "unknown parameter 'bogus'" in err
    code, _, err = run_cli(["params", "set", "obi", "decay", "2.0", "--config", str(cfg_file)], capsys)
    assert code == 2 and "decay must be in (0, 1]" in err
    code, _, err = run_cli(["params", "set", "nope", "decay", "0.4", "--config", str(cfg_file)], capsys)
    assert code == 2 and "unknown strategy 'nope'" in err
    code, _, err = run_cli(["params", "set", "obi", "decay", "0.4", "--config", str(cfg_file)], capsys)
    assert code == 2 and "no running cluster" in err


# -- the venue's view of held books ---------------------------------------------------------------------
class BuyAtAskOnBooks(Strategy):
    """An IOC buy of 2 at the ask on the books whose index (from 1) is in `on`."""

    def __init__(self, *a, on: tuple[int, ...] = (), **k):
        super().__init__(*a, **k)
        self.n = 0
        self.on = on

    def on_book(self, update: BookUpdate) -> list[OrderIntent]:
        self.n += 1
        if self.n in self.on:
            return [self.limit(update.symbol, Side.BUY, 2.0, update.best_ask, tif=TimeInForce.IOC)]
        return []


def seq_books(seqs: list[int]) -> list[BookUpdate]:
    return [BookUpdate(venue="paper", symbol="ETHUSDT", seq=s, bids=[(99.5, 2.0)], asks=[(100.5, 2.0)],
                       receive_ts_ns=T0 + i * 10**8) for i, s in enumerate(seqs)]


@pytest.mark.parametrize(("seqs", "filled"), [
    ([1, 1, 1], [2.0]),  # the second buy meets the same snapshot, whose liquidity the first one took
    ([1, 2, 1], [2.0, 2.0]),  # a new seq in between (never shown to the venue) freed the liquidity
    ([1, 2, 2], [2.0, 2.0]),
    ([1, 2, 3, 1], [2.0, 2.0]),
])
def test_held_books_free_liquidity_exactly_as_showing_every_book(tmp_path, seqs, filled):
    cfg = parse_config(small_config(tmp_path, strategies=[{"name": "x", "type": "imbalance", "symbols": ["ETHUSDT"]}]))
    s = BuyAtAskOnBooks("x", ["ETHUSDT"], {"ETHUSDT": "paper"}, on=(1, len(seqs)))
    r = BacktestEngine(cfg, strategies=[s], latency_ms=0.0, use_risk=False).run(seq_books(seqs))
    assert r.fills["qty"].to_list() == filled
    assert r.decisions.height == 2  # both buys were sent; an unfilled IOC simply expires


# -- a fixed seeded backtest: the same fills, decisions and equity as recorded -----------------------------
# Recorded from the engine as it was before the speed work (see bench/backtest_bench.py), so any change
# to the engine's loop must leave every number alone. The run exercises all four strategies, resting
# orders (market maker), cancels, IOCs, risk refusals and the equity sampling. If a change to the
# simulator, a strategy or risk is meant to change results, re-record with `golden_digest` below.
GOLDEN_CONFIG = {
    "cluster": {"name": "golden"},
    "venues": {"paper": {"type": "paper", "latency_ms": 2, "maker_fee_bps": 1.0, "taker_fee_bps": 5.0}},
    "market": {"seed": 7, "updates_per_second": 20, "depth": 20, "spread_ticks": 2, "trades_per_update": 1.0},
    "feeds": {"book_depth": 10},
    "symbols": [
        {"symbol": "BTCUSDT", "venue": "paper", "price": 60000.0, "tick_size": 0.1, "lot_size": 0.0001,
         "volatility": 0.6},
        {"symbol": "ETHUSDT", "venue": "paper", "price": 3000.0, "tick_size": 0.01, "lot_size": 0.001,
         "volatility": 0.7},
        {"symbol": "SOLUSDT", "venue": "paper", "price": 150.0, "tick_size": 0.01, "lot_size": 0.01, "volatility": 0.9},
        {"symbol": "BNBUSDT", "venue": "paper", "price": 600.0, "tick_size": 0.01, "lot_size": 0.001,
         "volatility": 0.6},
    ],
    "strategies": [
        {"name": "mm", "type": "market_maker", "symbols": ["BTCUSDT", "ETHUSDT"],
         "params": {"order_qty_notional": 1000.0, "max_position_notional": 5000.0, "requote_bps": 2.0}},
        {"name": "obi", "type": "imbalance", "symbols": ["BTCUSDT", "SOLUSDT"],
         "params": {"order_qty_notional": 500.0, "max_position_notional": 2500.0}},
        {"name": "grid", "type": "ema_grid", "symbols": ["SOLUSDT", "BNBUSDT"],
         "params": {"candle_s": 1.0, "grid_bps": 1.0, "min_margin_bps": 1.5, "max_range": 8.0, "level": 2.0,
                    "max_amount_notional": 1500.0, "min_order_notional": 20.0}},
        {"name": "pairs", "type": "pairs", "symbols": ["ETHUSDT", "BNBUSDT"],
         "params": {"window": 200, "min_samples": 100, "refit_every": 20, "max_pvalue": 0.5, "max_half_life": 400.0,
                    "entry_z": 1.5, "exit_z": 0.3, "stop_z": 4.0, "min_confirmation": -1.0, "order_notional": 1000.0}},
    ],
    "risk": {"max_mark_age_s": 5.0, "defaults": {"max_order_notional": 5000.0, "max_position_notional": 20000.0},
             "strategies": {"mm": {"max_orders_per_min": 1200, "max_orders_per_s": 50}, "grid": {"max_orders_per_min": 240}},
             "symbols": {"BTCUSDT": {"max_position_qty": 0.5}}},
}


def golden_digest(df: pl.DataFrame) -> str:
    """sha256 (16 hex) of every row's repr: exact floats, so a change in the last bit shows."""
    import hashlib

    h = hashlib.sha256()
    for row in df.iter_rows():
        h.update(repr(row).encode())
    return h.hexdigest()[:16]


GOLDEN = {
    "events": {"books": 4796, "trades": 4762}, "fills": 611, "decisions": 879, "equity_rows": 300,
    "fills_sha": "748a873d9830a416", "decisions_sha": "b0cd17d34f60c705", "equity_sha": "284c9a6aee037621",
    "first_fills": [
        [1704067200200000000, "mm", "paper", "BTCUSDT", "buy", 59997.2, 0.0166, 0.099595352, "maker", "bt-1", "paper-bt-1"],
        [1704067200250000000, "mm", "paper", "BTCUSDT", "buy", 59996.4, 0.0166, 0.099594024, "maker", "bt-5", "paper-bt-2"],
        [1704067200300000000, "mm", "paper", "ETHUSDT", "buy", 2999.83, 0.333, 0.099894339, "maker", "bt-3", "paper-bt-3"],
    ],
    "all": {"pnl": -66.765264, "realized_net": -65.742876, "unrealized": -1.022388, "fees": 59.085994,
            "sharpe": -8038.36, "max_drawdown": 66.765264, "trades": 611, "volume": 337119.23981, "orders": 695,
            "rejected": 94},
    "positions": {"mm:BTCUSDT": 0.0, "mm:ETHUSDT": 0.10199999999999998, "grid:SOLUSDT": 1.5899999999999999,
                  "obi:SOLUSDT": 3.33, "obi:BTCUSDT": 0.0, "grid:BNBUSDT": 0.094, "pairs:ETHUSDT": 0.04799999999999999,
                  "pairs:BNBUSDT": 1.534},
    "open_orders": 6,
}


def test_fixed_seeded_backtest_gives_the_recorded_results(tmp_path):
    cfg = parse_config({**GOLDEN_CONFIG, "cluster": {"name": "golden", "data_dir": str(tmp_path / "runs")}})
    events = list(sim_events(cfg, 60.0))
    r = BacktestEngine(cfg, strategies=strategies_from_config(cfg)).run(events)
    got = {
        "events": r.summary["events"], "fills": r.fills.height, "decisions": r.decisions.height,
        "equity_rows": r.equity.height, "fills_sha": golden_digest(r.fills),
        "decisions_sha": golden_digest(r.decisions), "equity_sha": golden_digest(r.equity),
        "first_fills": [list(row) for row in r.fills.head(3).iter_rows()], "all": r.summary["strategies"]["ALL"],
        "positions": r.summary["positions"], "open_orders": r.summary["open_orders"],
    }
    assert got == GOLDEN
