"""Performance analytics against numbers computed by hand (see the table in each test)."""

from __future__ import annotations

import math
import statistics

import pytest

from cluster.messages import Fill, Side
from dashboards.analytics import _auto_bar, analyze, bar_returns, max_drawdown

S = 1_000_000_000
T0 = 1_000 * S


def fill(i: int, t_s: float, strategy: str, symbol: str, side: Side, price: float, qty: float, fee: float) -> Fill:
    return Fill(client_order_id=f"c{i}", trade_id=f"t{i}", strategy=strategy, venue="paper", symbol=symbol, side=side,
                price=price, qty=qty, fee=fee, ts_ns=T0 + int(t_s * S))


# t     fill                       A:X cash/qty   B:Y cash/qty   fees   total equity (last fill price marks)
# 0.0   A buy  1 X @100 fee .1     -100 / 1                      0.10   -0.10
# 1.0   A sell 1 X @102 fee .1        2 / 0                      0.20    1.80   (closing, +2)
# 1.5   B sell 1 Y @50  fee .05                     50 / -1      0.25    1.75
# 2.0   A buy  2 X @101 fee .2     -200 / 2                      0.45    1.55
# 3.0   A sell 1 X @99  fee .1     -101 / 1                      0.55   -2.55   (closing, -2)
# 4.0   as_of, marks X=100 Y=49    -101+100=-1      50-49=1      0.55   -0.55
FILLS = [
    fill(1, 0.0, "A", "X", Side.BUY, 100.0, 1.0, 0.1),
    fill(2, 1.0, "A", "X", Side.SELL, 102.0, 1.0, 0.1),
    fill(5, 1.5, "B", "Y", Side.SELL, 50.0, 1.0, 0.05),
    fill(3, 2.0, "A", "X", Side.BUY, 101.0, 2.0, 0.2),
    fill(4, 3.0, "A", "X", Side.SELL, 99.0, 1.0, 0.1),
]
MARKS = {"X": 100.0, "Y": 49.0}
AS_OF = T0 + 4 * S


@pytest.fixture(scope="module")
def perf():
    return analyze(list(reversed(FILLS)), MARKS, as_of_ns=AS_OF, bar_s=1.0)  # order of input must not matter


def test_equity_curve_marks_open_positions_at_last_fill_price(perf) -> None:
    c = perf.curves["total"]
    assert c.equity.tolist() == pytest.approx([0.0, -0.1, 1.8, 1.75, 1.55, -2.55, -0.55])
    assert [(t - T0) / S for t in c.ts_ns] == [0.0, 0.0, 1.0, 1.5, 2.0, 3.0, 4.0]
    assert perf.curves["strategy:A"].equity.tolist() == pytest.approx([0.0, -0.1, 1.8, 1.8, 1.6, -2.5, -1.5])
    assert perf.curves["strategy:B"].equity.tolist() == pytest.approx([0.0, 0.0, 0.0, -0.05, -0.05, -0.05, 0.95])


def test_pnl_totals(perf) -> None:
    t = perf.total
    assert (t.fills, t.realized_pnl, t.fees, t.unrealized_pnl, t.net_pnl) == pytest.approx((5, 0.0, 0.55, 0.0, -0.55))
    assert t.turnover == pytest.approx(100 + 102 + 50 + 202 + 99)
    a, b = perf.by_strategy["A"], perf.by_strategy["B"]
    # A holds 1 X @101 marked 100: -1; B is short 1 Y @50 marked 49: +1
    assert (a.realized_pnl, a.fees, a.unrealized_pnl, a.net_pnl) == pytest.approx((0.0, 0.5, -1.0, -1.5))
    assert (b.realized_pnl, b.fees, b.unrealized_pnl, b.net_pnl) == pytest.approx((0.0, 0.05, 1.0, 0.95))
    assert perf.by_symbol["X"].net_pnl == pytest.approx(-1.5)
    assert perf.by_symbol["Y"].fills == 1


def test_win_rate_counts_closing_fills(perf) -> None:
    t = perf.total
    assert (t.closing_fills, t.wins, t.losses, t.win_rate) == (2, 1, 1, 0.5)
    assert perf.by_strategy["B"].win_rate is None  # only an opening fill


def test_drawdown_and_duration(perf) -> None:
    # peak 1.8 at t=1, trough -2.55 at t=3: 4.35; underwater from t=1 to the end (t=4): 3 s
    assert perf.total.max_drawdown == pytest.approx(4.35)
    assert perf.total.max_drawdown_duration_s == pytest.approx(3.0)
    # B: 0 -> -0.05 at t=1.5, regains 0 only at t=4 (0.95): peak at t=1.0 (last point at 0), 3 s
    assert perf.by_strategy["B"].max_drawdown == pytest.approx(0.05)
    assert perf.by_strategy["B"].max_drawdown_duration_s == pytest.approx(3.0)


def test_drawdown_recovery_ends_the_spell() -> None:
    ts = [0, 1 * S, 2 * S, 5 * S, 6 * S]
    import numpy as np

    amount, duration = max_drawdown(np.array(ts), np.array([0.0, 2.0, 1.0, 2.5, 2.4]))
    assert amount == pytest.approx(1.0)  # 2.0 -> 1.0
    assert duration == pytest.approx(4.0)  # peak 2.0 at t=1, regained at t=5 (2.5); then 2.5 -> 2.4 lasts 1 s


def test_sharpe_sortino_volatility_from_bar_returns(perf) -> None:
    c = perf.curves["total"]
    r = bar_returns(c.ts_ns, c.equity, 1.0)
    # bars end at t=1,2,3,4: equity 1.8, 1.55, -2.55, -0.55 from 0
    assert r.tolist() == pytest.approx([1.8, -0.25, -4.1, 2.0])
    returns = [1.8, -0.25, -4.1, 2.0]
    n = 365 * 86400 / 1.0
    mean = sum(returns) / 4
    sd = statistics.stdev(returns)
    down = math.sqrt(sum(min(x, 0.0) ** 2 for x in returns) / 4)
    t = perf.total
    assert t.bars == 4 and t.bar_s == 1.0
    assert t.sharpe == pytest.approx(mean / sd * math.sqrt(n))
    assert t.sortino == pytest.approx(mean / down * math.sqrt(n))
    assert t.volatility == pytest.approx(sd * math.sqrt(n))
    assert t.sharpe == pytest.approx(-0.1375 / 2.8305987 * 5615.6923, rel=1e-6)


def test_no_fills_and_too_few_bars() -> None:
    empty = analyze([], {})
    assert empty.total.fills == 0 and empty.total.net_pnl == 0.0 and empty.total.sharpe is None
    one = analyze(FILLS[:1], {"X": 101.0}, as_of_ns=T0 + S // 2, bar_s=1.0)
    assert one.total.bars == 1 and one.total.sharpe is None and one.total.volatility is None
    assert one.total.unrealized_pnl == pytest.approx(1.0)


def test_a_bar_too_short_for_the_span_is_widened() -> None:
    far = analyze(FILLS, MARKS, as_of_ns=T0 + 400 * 86400 * S, bar_s=1.0)
    assert far.total.bar_s == 300.0 and far.total.bars <= 200_000


def test_auto_bar_gives_at_least_30_bars() -> None:
    assert _auto_bar(4.0) == 1.0
    assert _auto_bar(3600.0) == 60.0
    assert _auto_bar(86400.0 * 60) == 86400.0


def test_to_dict_is_json_ready(perf) -> None:
    import json

    d = json.loads(json.dumps(perf.to_dict()))
    assert d["total"]["net_pnl"] == pytest.approx(-0.55)
    assert set(d["by_strategy"]) == {"A", "B"} and "Sharpe" in d["conventions"]


def test_the_status_table_keeps_a_space_between_columns_whatever_the_values(perf) -> None:
    import dataclasses

    from dashboards.status_reader import format_performance

    wide = dataclasses.replace(perf.total, fees=101.9759, sharpe=-11570.44, sortino=-123456.78)
    perf.by_strategy["a-strategy-with-a-long-name"] = perf.total
    text = format_performance(dataclasses.replace(perf, total=wide))
    header, *rows = text.splitlines()[1:]
    assert header.split() == ["fills", "net", "P&L", "fees", "Sharpe", "Sortino", "vol/yr", "max", "DD", "DD", "s",
                              "win", "%"]
    total = next(r for r in rows if r.split()[0] == "total")
    assert "101.9759 -11570.44 -123456.78" in total
    long_row = next(r for r in rows if "a-strategy-with-a-long-name" in r)
    assert len(long_row.split()) == len(total.split()) + 1  # "strategy NAME", each value its own word
