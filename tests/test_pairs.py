"""Cointegration tools against statsmodels (the test-only reference) and the pairs strategy by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from cluster.messages import BookUpdate, IntentAction, OrderStatus, Side, TimeInForce
from strategies.base import StrategyParamError
from strategies.cointegration import adf, engle_granger, half_life, mackinnon_p, ols
from strategies.pairs import PairsArbitrage, hedged_quantities, round_lot
from tests.test_strategies import Host

sm = pytest.importorskip("statsmodels.api")
from statsmodels.tsa.stattools import adfuller, coint  # noqa: E402


def series(seed: int, n: int, beta: float = 1.7, noise: float = 0.8, phi: float = 0.0):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=n)) + 50.0
    e = np.zeros(n)
    for i in range(1, n):
        e[i] = phi * e[i - 1] + rng.normal() * noise
    return x, beta * x + 3.0 + e


@pytest.mark.parametrize(("seed", "n", "phi"), [(1, 60, 0.0), (2, 250, 0.5), (3, 1000, 0.9), (4, 400, 0.98)])
def test_hedge_ratio_adf_and_pvalue_match_statsmodels(seed, n, phi):
    x, y = series(seed, n, phi=phi)
    ref_ols = sm.OLS(y, sm.add_constant(x)).fit()
    ours = engle_granger(y, x)
    assert ours.beta == pytest.approx(ref_ols.params[1], abs=1e-6)
    assert ours.alpha == pytest.approx(ref_ols.params[0], abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stat, pvalue, _ = coint(y, x)
        for s in (x, y - ours.beta * x, np.cumsum(np.random.default_rng(seed).normal(size=n))):
            ref = adfuller(s, result_object=True)  # default: constant, autolag AIC, 12 (n/100)^(1/4) lags
            mine = adf(s)
            assert mine.stat == pytest.approx(ref.statistic, abs=1e-6)
            assert mine.pvalue == pytest.approx(ref.pvalue, abs=1e-6)
            assert (mine.lags, mine.nobs) == (ref.lags, ref.nobs)
    assert ours.adf_stat == pytest.approx(stat, abs=1e-6)
    assert ours.pvalue == pytest.approx(pvalue, abs=1e-6)


def test_adf_without_constant_and_fixed_lag_match_statsmodels():
    x, y = series(7, 300, phi=0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for reg in ("n", "c"):
            ref = adfuller(y - 1.7 * x, maxlag=4, regression=reg, autolag=None, result_object=True)
            mine = adf(y - 1.7 * x, maxlag=4, regression=reg, autolag=False)
            assert mine.stat == pytest.approx(ref.statistic, abs=1e-6)
            assert mine.pvalue == pytest.approx(ref.pvalue, abs=1e-6)


def test_mackinnon_p_edges_and_reference():
    from statsmodels.tsa.adfvalues import mackinnonp

    for stat in (-30.0, -5.0, -3.2, -2.62, -1.0, 0.5, 3.0):
        for reg in ("c", "n"):
            for n in (1, 2, 3):
                assert mackinnon_p(stat, reg, n) == pytest.approx(mackinnonp(stat, reg, n), abs=1e-12)
    assert mackinnon_p(-100.0) == 0.0 and mackinnon_p(10.0) == 1.0
    with pytest.raises(ValueError):
        mackinnon_p(-2.0, "ct")


def test_ols_hand_worked_and_half_life():
    # y = 1 + 2 x exactly: params (2, 1) with x first.
    x = np.array([0.0, 1.0, 2.0, 3.0])
    fit = ols(1.0 + 2.0 * x + np.array([0.1, -0.1, -0.1, 0.1]), np.column_stack([x, np.ones(4)]))
    assert fit.params[0] == pytest.approx(2.0) and fit.params[1] == pytest.approx(1.0)
    assert fit.ssr == pytest.approx(0.04)
    # e_t = 0.5 e_{t-1} exactly: de = -0.5 e_{t-1} -> half-life ln 2 / 0.5 = 1.386 updates.
    e = 64.0 * 0.5 ** np.arange(12)
    assert half_life(e) == pytest.approx(math.log(2) / 0.5, rel=1e-9)
    assert half_life(np.arange(10.0)) == math.inf  # trending: no reversion


def test_hedged_quantities_keep_the_ratio_after_rounding():
    assert round_lot(0.12345, 0.001) == 0.123 and round_lot(2.5, 0.0) == 2.5
    # beta 1.5, target 1.0 y: 1.0 y -> 1.5 x, both on their lots, exact.
    assert hedged_quantities(1.5, 1.0, 0.1, 0.1) == (1.0, 1.5)
    # beta 0.37 with lots of 0.1: of the y candidates 0.5 .. 1.5, the one whose rounded x leg is closest to 0.37 y.
    qy, qx = hedged_quantities(0.37, 1.0, 0.1, 0.1)
    best = min((abs(round(0.37 * n / 10, 1) - 0.37 * n / 10) / (0.37 * n / 10), n) for n in range(5, 16))
    assert qy == pytest.approx(best[1] / 10) and qx == pytest.approx(round(0.37 * qy, 1))
    assert abs(qx / qy - 0.37) / 0.37 < 0.02
    assert abs(qx / 0.1 - round(qx / 0.1)) < 1e-9 and abs(qy / 0.1 - round(qy / 0.1)) < 1e-9
    # A negative hedge ratio gives positive quantities (the side flips elsewhere); too small -> nothing.
    assert hedged_quantities(-1.5, 1.0, 0.1, 0.1) == (1.0, 1.5)
    assert hedged_quantities(0.01, 0.1, 0.1, 1.0) == (0.0, 0.0)


Y, X = "ETHUSDT", "BNBUSDT"
VENUES = {Y: "paper", X: "paper"}


def pair_book(symbol: str, mid: float, seq: int, bid_qty: float = 1.0, ask_qty: float = 1.0) -> BookUpdate:
    return BookUpdate(venue="paper", symbol=symbol, seq=seq, bids=[(round(mid - 0.01, 2), bid_qty)],
                      asks=[(round(mid + 0.01, 2), ask_qty)], exchange_ts_ns=10**18 + seq * 50_000_000)


def pairs_strategy(**params) -> PairsArbitrage:
    base = {"window": 200, "min_samples": 150, "refit_every": 10, "max_pvalue": 0.05, "entry_z": 2.0, "exit_z": 0.5,
            "stop_z": 8.0, "order_notional": 1000.0, "reject_backoff_updates": 0, "max_half_life": 100.0}
    s = PairsArbitrage("pairs", [Y, X], VENUES, {**base, **params})
    s.set_instruments({Y: 0.001, X: 0.01})
    return s


def feed(s: PairsArbitrage, h: Host, n: int = 200) -> int:
    """n samples of a cointegrated pair (y = 2 x + 1000 + AR(1)); entries held off by a live entry_z change."""
    entry = s.params["entry_z"]
    s.set_params({"entry_z": 7.9})
    rng = np.random.default_rng(5)
    x, e = 500.0, 0.0
    seq = 0
    for _ in range(n):
        x += rng.normal() * 0.5
        e = 0.7 * e + rng.normal() * 0.5  # AR(1) spread: half-life ln 2 / 0.3 = 2.3 samples
        y = 2.0 * x + 1000.0 + e
        seq += 1
        assert h.book(pair_book(X, round(x, 2), seq)) == []
        seq += 1
        assert h.book(pair_book(Y, round(y, 2), seq)) == []
    s.set_params({"entry_z": entry})
    return seq


def test_pairs_fits_the_hedge_ratio_and_sells_a_rich_spread_with_both_legs():
    s = pairs_strategy()
    h = Host(s)
    seq = feed(s, h)
    assert s.tradeable and s.fit.beta == pytest.approx(2.0, abs=0.1) and s.fit.pvalue < 0.01
    x = s.books[X].mid
    rich = s.fit.alpha + s.fit.beta * x + 3.0 * s.fit.resid_std  # z = 3 > entry 2
    intents = h.book(pair_book(Y, round(rich, 2), seq + 1))
    assert s.spread_position == -1
    sides = {i.symbol: i for i in intents}
    assert sides[Y].side is Side.SELL and sides[X].side is Side.BUY
    assert all(i.tif is TimeInForce.IOC and i.action is IntentAction.NEW for i in intents)
    assert sides[Y].price == s.books[Y].best_bid and sides[X].price == s.books[X].best_ask
    qy, qx = sides[Y].qty, sides[X].qty
    assert qy == pytest.approx(1000.0 / s.books[Y].mid, abs=0.06)  # near the notional
    assert abs(qx / qy - s.fit.beta) / s.fit.beta < 0.01  # the hedge ratio holds after the 0.01 lot of x
    assert abs(qx / 0.01 - round(qx / 0.01)) < 1e-9 and abs(qy / 0.001 - round(qy / 0.001)) < 1e-9
    # Both fill; when the spread comes back inside exit_z both legs are closed.
    for coid in list(s.working):
        o = s.working[coid]
        h.report(coid, OrderStatus.FILLED, o.qty, o.price)
    assert s.positions[Y] == -qy and s.positions[X] == qx
    fair = s.fit.alpha + s.fit.beta * s.books[X].mid
    out = h.book(pair_book(Y, round(fair, 2), seq + 2))
    closing = {i.symbol: i for i in out}
    assert s.spread_position == 0
    assert closing[Y].side is Side.BUY and closing[Y].qty == qy and closing[X].side is Side.SELL
    assert closing[X].qty == qx


def test_pairs_partial_fill_is_completed_leg_by_leg():
    s = pairs_strategy()
    h = Host(s)
    seq = feed(s, h)
    cheap = s.fit.alpha + s.fit.beta * s.books[X].mid - 3.0 * s.fit.resid_std
    intents = h.book(pair_book(Y, round(cheap, 2), seq + 1))
    legs = {i.symbol: i for i in intents}
    assert legs[Y].side is Side.BUY and legs[X].side is Side.SELL
    coid_y = next(c for c in s.working if s.working[c].symbol == Y)
    coid_x = next(c for c in s.working if s.working[c].symbol == X)
    h.report(coid_y, OrderStatus.PARTIALLY_FILLED, 0.1, legs[Y].price)
    h.report(coid_y, OrderStatus.CANCELED)  # IOC remainder
    h.report(coid_x, OrderStatus.FILLED, legs[X].qty, legs[X].price)
    again = h.book(pair_book(Y, round(cheap, 2), seq + 2))
    (rest,) = again
    assert rest.symbol == Y and rest.side is Side.BUY and rest.qty == pytest.approx(legs[Y].qty - 0.1)


def test_pairs_waits_for_the_order_book_to_confirm():
    s = pairs_strategy(min_confirmation=0.2)
    h = Host(s)
    seq = feed(s, h)
    rich = s.fit.alpha + s.fit.beta * s.books[X].mid + 3.0 * s.fit.resid_std
    # Selling y into a bid-heavy y book is not confirmed.
    assert h.book(pair_book(Y, round(rich, 2), seq + 1, bid_qty=5.0, ask_qty=1.0)) == []
    # y ask-heavy: (imb_x - imb_y) / 2 = (0 + 2/3) / 2 = 1/3 >= 0.2 -> both legs.
    assert len(h.book(pair_book(Y, round(rich, 2), seq + 2, bid_qty=1.0, ask_qty=5.0))) == 2


def test_pairs_not_traded_without_cointegration():
    s = pairs_strategy()
    h = Host(s)
    rng = np.random.default_rng(11)
    x, y, seq = 500.0, 2000.0, 0
    for _ in range(200):
        x += rng.normal()
        y += rng.normal() * 3
        seq += 2
        h.book(pair_book(X, round(x, 2), seq - 1))
        h.book(pair_book(Y, round(y, 2), seq))
    assert s.fit is not None and not s.tradeable
    assert h.book(pair_book(Y, round(y + 500, 2), seq + 1)) == []


def test_pairs_params_and_symbols_validated():
    with pytest.raises(StrategyParamError, match="two different symbols"):
        PairsArbitrage("p", [Y], {Y: "paper"})
    with pytest.raises(StrategyParamError, match="exit_z < entry_z"):
        pairs_strategy(exit_z=3.0)
    with pytest.raises(StrategyParamError, match="min_samples"):
        pairs_strategy(min_samples=500)
