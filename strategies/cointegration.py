"""Engle-Granger cointegration with numpy alone: OLS hedge ratio, ADF test, MacKinnon p-values, half-life.

The pairs strategy and `python -m cluster research pairs` use these; statsmodels is only the tests'
reference (`adfuller`, `coint`, `OLS`), matched to 1e-6. The conventions are statsmodels' defaults:

* `adf(x)`: the regression  dx_t = a + g x_{t-1} + sum_i b_i dx_{t-i} + e_t  ("c"; "n" drops a), the
  statistic is the t-value of g. The lag order is chosen by AIC over 0..maxlag on a common sample,
  maxlag = ceil(12 * (nobs / 100) ** (1/4)) capped at nobs // 2 - ntrend - 1, then re-estimated on
  the longest sample the chosen lag allows. The p-value is MacKinnon's (1994) approximation.
* `engle_granger(y, x)`: step 1 regresses y on x with a constant (y = alpha + beta * x + e);
  step 2 runs the ADF test without constant on e (it has zero mean by construction), and the p-value
  uses MacKinnon's table for N = 2 variables with a constant, as `statsmodels.tsa.stattools.coint`.
* `half_life(e)`: from  de_t = a + lam * e_{t-1}:  -ln 2 / lam updates (inf when lam >= 0: no reversion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# MacKinnon (1994) response-surface coefficients, as statsmodels.tsa.adfvalues holds them; row = N - 1.
_TAU_MAX = {"n": [math.inf, 1.51, 0.86, 0.88, 1.05, 1.24], "c": [2.74, 0.92, 0.55, 0.61, 0.79, 1.0]}
_TAU_MIN = {"n": [-19.04, -19.62, -21.21, -23.25, -21.63, -25.74],
            "c": [-18.83, -18.86, -23.48, -28.07, -25.96, -23.27]}
_TAU_STAR = {"n": [-1.04, -1.53, -2.68, -3.09, -3.07, -3.77], "c": [-1.61, -2.62, -3.13, -3.47, -3.78, -3.93]}
_SMALL_SCALE = (1.0, 1.0, 1e-2)
_LARGE_SCALE = (1.0, 1e-1, 1e-1, 1e-2)
_TAU_SMALLP = {
    "n": [[0.6344, 1.2378, 3.2496], [1.9129, 1.3857, 3.5322], [2.7648, 1.4502, 3.4186],
          [3.4336, 1.4835, 3.19], [4.0999, 1.5533, 3.59], [4.5388, 1.5344, 2.9807]],
    "c": [[2.1659, 1.4412, 3.8269], [2.92, 1.5012, 3.9796], [3.4699, 1.4856, 3.164],
          [3.9673, 1.4777, 2.6315], [4.5509, 1.5338, 2.9545], [5.1399, 1.6036, 3.4445]],
}
_TAU_LARGEP = {
    "n": [[0.4797, 9.3557, -0.6999, 3.3066], [1.5578, 8.558, -2.083, -3.3549], [2.2268, 6.8093, -3.2362, -5.4448],
          [2.7654, 6.4502, -3.0811, -4.4946], [3.2684, 6.8051, -2.6778, -3.4972], [3.7268, 7.167, -2.3648, -2.8288]],
    "c": [[1.7339, 9.3202, -1.2745, -1.0368], [2.1945, 6.4695, -2.9198, -4.2377], [2.5893, 4.5168, -3.6529, -5.0074],
          [3.0387, 4.5452, -3.3666, -4.1921], [3.5049, 5.2098, -2.9158, -3.3468], [3.9489, 5.8933, -2.5359, -2.721]],
}


def _norm_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def mackinnon_p(stat: float, regression: str = "c", n_vars: int = 1) -> float:
    """MacKinnon's approximate asymptotic p-value of a (co)integration t-statistic.

    `regression` is "c" (constant) or "n" (none); `n_vars` the number of integrated series (1 for
    ADF, 2 for a pair's Engle-Granger test).
    """
    if regression not in _TAU_MAX:
        raise ValueError(f"regression must be 'c' or 'n', got {regression!r}")
    if not 1 <= n_vars <= 6:
        raise ValueError(f"n_vars must be 1..6, got {n_vars}")
    i = n_vars - 1
    if stat > _TAU_MAX[regression][i]:
        return 1.0
    if stat < _TAU_MIN[regression][i]:
        return 0.0
    if stat <= _TAU_STAR[regression][i]:
        coef = [c * s for c, s in zip(_TAU_SMALLP[regression][i], _SMALL_SCALE, strict=True)]
    else:
        coef = [c * s for c, s in zip(_TAU_LARGEP[regression][i], _LARGE_SCALE, strict=True)]
    poly = 0.0
    for c in reversed(coef):  # c0 + c1 t + c2 t^2 (+ c3 t^3)
        poly = poly * stat + c
    return _norm_cdf(poly)


@dataclass(frozen=True)
class OlsFit:
    params: np.ndarray
    tvalues: np.ndarray
    resid: np.ndarray
    ssr: float
    nobs: int

    @property
    def aic(self) -> float:
        """statsmodels' OLS AIC: -2 llf + 2 k, llf the Gaussian log-likelihood at sigma^2 = ssr / n."""
        n = self.nobs
        llf = -n / 2.0 * (math.log(2.0 * math.pi) + math.log(self.ssr / n) + 1.0)
        return -2.0 * llf + 2.0 * len(self.params)


def ols(y: np.ndarray, x: np.ndarray) -> OlsFit:
    """Least squares of y on the columns of x (no constant added), with classical t-values."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    pinv = np.linalg.pinv(x)
    params = pinv @ y
    resid = y - x @ params
    ssr = float(resid @ resid)
    n, k = x.shape
    scale = ssr / (n - k)
    cov = scale * (pinv @ pinv.T)
    with np.errstate(divide="ignore", invalid="ignore"):
        tvalues = params / np.sqrt(np.diag(cov))
    return OlsFit(params=params, tvalues=tvalues, resid=resid, ssr=ssr, nobs=n)


@dataclass(frozen=True)
class AdfResult:
    stat: float
    pvalue: float
    lags: int
    nobs: int


def default_maxlag(nobs: int, regression: str = "c") -> int:
    ntrend = 1 if regression == "c" else 0
    return min(nobs // 2 - ntrend - 1, int(math.ceil(12.0 * (nobs / 100.0) ** 0.25)))


def _adf_design(x: np.ndarray, dx: np.ndarray, lags: int, const_first: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """Rows t = lags+1 .. n-1: [level x_{t-1}, dx_{t-1} .. dx_{t-lags}] (+ a constant column), target dx_t."""
    nobs = len(dx) - lags
    cols = [x[lags:lags + nobs]]
    cols += [dx[lags - i:lags - i + nobs] for i in range(1, lags + 1)]
    design = np.column_stack(cols)
    if const_first is not None:
        ones = np.ones((nobs, 1))
        design = np.hstack([ones, design]) if const_first else np.hstack([design, ones])
    return design, dx[lags:]


def adf(series: np.ndarray, maxlag: int | None = None, regression: str = "c", autolag: bool = True,
        n_vars: int = 1) -> AdfResult:
    """Augmented Dickey-Fuller test (see the module docstring); `n_vars` = 2 gives Engle-Granger p-values."""
    x = np.asarray(series, dtype=np.float64)
    if regression not in ("c", "n"):
        raise ValueError(f"regression must be 'c' or 'n', got {regression!r}")
    if x.ndim != 1 or len(x) < 8:
        raise ValueError("adf needs a 1-d series of at least 8 observations")
    if x.max() == x.min():
        raise ValueError("adf: the series is constant")
    nobs = len(x)
    ntrend = 1 if regression == "c" else 0
    if maxlag is None:
        maxlag = default_maxlag(nobs, regression)
        if maxlag < 0:
            raise ValueError("adf: the series is too short")
    elif maxlag > nobs // 2 - ntrend - 1:
        raise ValueError("adf: maxlag must be less than nobs/2 - 1 - ntrend")
    dx = np.diff(x)
    const = True if regression == "c" else None
    lags = maxlag
    if autolag:
        full, target = _adf_design(x, dx, maxlag, const)
        start = ntrend + 1  # columns before the first lagged difference
        best = min((ols(target, full[:, :start + k]).aic, k) for k in range(maxlag + 1))
        lags = best[1]
    design, target = _adf_design(x, dx, lags, None if regression == "n" else False)
    fit = ols(target, design)
    stat = float(fit.tvalues[0])
    return AdfResult(stat=stat, pvalue=mackinnon_p(stat, regression, n_vars), lags=lags, nobs=len(target))


def half_life(resid: np.ndarray) -> float:
    """Updates for a deviation of the spread to halve: -ln 2 / lam from de_t = a + lam e_{t-1}."""
    e = np.asarray(resid, dtype=np.float64)
    if len(e) < 3:
        return math.inf
    fit = ols(np.diff(e), np.column_stack([np.ones(len(e) - 1), e[:-1]]))
    lam = float(fit.params[1])
    return -math.log(2.0) / lam if lam < -1e-9 else math.inf  # (a trend leaves float noise around 0)


@dataclass(frozen=True)
class Cointegration:
    """Engle-Granger result for y = alpha + beta * x + e."""

    alpha: float
    beta: float  # hedge ratio: units of x per unit of y
    adf_stat: float
    pvalue: float
    lags: int
    half_life: float
    resid_std: float
    nobs: int


def engle_granger(y: np.ndarray, x: np.ndarray, maxlag: int | None = None) -> Cointegration:
    """Two-step Engle-Granger test of y against x (see the module docstring)."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if y.shape != x.shape or y.ndim != 1:
        raise ValueError("engle_granger needs two 1-d series of the same length")
    step1 = ols(y, np.column_stack([x, np.ones(len(x))]))
    beta, alpha = float(step1.params[0]), float(step1.params[1])
    resid = step1.resid
    test = adf(resid, maxlag=maxlag, regression="n", n_vars=2)
    pvalue = mackinnon_p(test.stat, "c", 2)
    return Cointegration(alpha=alpha, beta=beta, adf_stat=test.stat, pvalue=pvalue, lags=test.lags,
                         half_life=half_life(resid), resid_std=float(np.std(resid, ddof=1)), nobs=len(y))
