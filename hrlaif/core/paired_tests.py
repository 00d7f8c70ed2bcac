"""Paired tests that hold their level at small n, and the power behind every reported MDE.

- Continuous paired scores (rewards, pass@1 from several samples): the sign-flip permutation test
  of mean(d) = 0 (`signflip_p`). Under H0 (differences symmetric about 0) every sign pattern is
  equally likely, so the test's type-I error is at most alpha at every n: exact enumeration of
  all 2^n patterns for n <= EXACT_N, otherwise SIGNFLIP_DRAWS patterns drawn with a fixed seed
  (p = (1 + #{|T*| >= |T|}) / (1 + draws), which keeps the level exactly). A percentile
  bootstrap p has type-I error 0.11 at n = 8 (tests/test_small_n.py).
- Its CI below T_CI_N items is the paired t interval (a percentile bootstrap is too narrow there).
- MDE: the smallest true difference the reported test detects with the stated power.
  Continuous: the two-sided paired t test's, from the noncentral t distribution (the sign-flip
  test's power matches it within a point at n >= 12 for normal differences). 0/1 scores: computed
  exactly for the cell's test (exact McNemar and Tango's score test both below alpha) by summing
  over the number of discordant items, with the discordance rate taken as sd^2 (the variance of
  d in {-1, 0, 1} under no difference); infinite when even a difference of sd^2 (every discordant
  item better) is detected with less than the stated power.
Every function here accepts arrays of many data sets at once (rows), so the tests' simulations
stay vectorised.
"""
from __future__ import annotations

import functools
import math

import numpy as np

EXACT_N = 12  # 4096 sign patterns: exact enumeration up to here
SIGNFLIP_DRAWS = 5000
SIGNFLIP_SEED = 0
T_CI_N = 30  # below this many items the CI of a continuous difference is the paired t interval


def _patterns(n: int) -> np.ndarray:
    """Every +-1 sign pattern of length n (2^n x n), or SIGNFLIP_DRAWS seeded draws."""
    if n <= EXACT_N:
        codes = np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]
        return np.where(codes & 1, -1.0, 1.0)
    rng = np.random.default_rng(SIGNFLIP_SEED)
    return np.where(rng.random((SIGNFLIP_DRAWS, n)) < 0.5, -1.0, 1.0)


def signflip_p(d) -> np.ndarray | float:
    """Two-sided sign-flip permutation p of mean(d) = 0; d is (n,) or (datasets, n)."""
    x = np.atleast_2d(np.asarray(d, dtype=float))
    n = x.shape[1]
    if n == 0:
        return 1.0 if np.ndim(d) == 1 else np.ones(len(x))
    signs = _patterns(n)
    obs = np.abs(x.sum(axis=1))
    tol = 1e-9 * np.maximum(1.0, np.abs(x).sum(axis=1))
    count = np.zeros(len(x))
    for chunk in np.array_split(signs, max(1, len(signs) // 1000)):
        count += (np.abs(x @ chunk.T) >= (obs - tol)[:, None]).sum(axis=1)
    p = count / len(signs) if n <= EXACT_N else (1 + count) / (1 + len(signs))
    p = np.minimum(1.0, p)
    return float(p[0]) if np.ndim(d) == 1 else p


def t_ci(d, alpha: float = 0.05) -> tuple[float, float]:
    """Paired t interval of mean(d)."""
    from scipy import stats as sps

    d = np.asarray(d, dtype=float)
    n = len(d)
    if n < 2:
        return (float("nan"), float("nan"))
    half = sps.t.ppf(1 - alpha / 2, n - 1) * d.std(ddof=1) / math.sqrt(n)
    return (float(d.mean() - half), float(d.mean() + half))


def t_mde(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest |mean difference| a two-sided level-alpha paired t test on n items detects with
    `power` (noncentral t), for differences of standard deviation sd."""
    from scipy import stats as sps
    from scipy.optimize import brentq

    if n <= 1 or not math.isfinite(sd):
        return float("inf")
    df, tc = n - 1, sps.t.ppf(1 - alpha / 2, n - 1)
    # the far tail's cdf underflows to NaN at large nc: it is 0 there
    f = lambda nc: float(np.nan_to_num(sps.nct.sf(tc, df, nc), nan=1.0)  # noqa: E731
                         + np.nan_to_num(sps.nct.cdf(-tc, df, nc), nan=0.0)) - power
    hi = 12.0
    while f(hi) < 0:  # few items (t's critical value is large): the power needs a larger shift
        hi *= 2
        if hi > 1e4:
            return float("inf")
    return brentq(f, 0.0, hi, xtol=1e-10) * sd / math.sqrt(n)


@functools.lru_cache(maxsize=32)
def _reject_below(n: int, alpha: float) -> np.ndarray:
    """For D = 0..n discordant items: the largest count of the smaller side that the cell's test
    (exact McNemar and Tango's score test at 0, both p < alpha) rejects at, -1 when none."""
    from scipy import stats as sps

    D = np.arange(n + 1)[:, None]
    k = np.arange(n // 2 + 1)[None, :]
    inside = k * 2 < D  # k = D / 2 is no evidence either way
    p_exact = np.minimum(1.0, 2 * sps.binom.cdf(k, D, 0.5))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(D > 0, (D - 2 * k) / np.sqrt(np.maximum(D, 1)), 0.0)
    p_tango = 2 * sps.norm.sf(z)
    reject = inside & (np.maximum(p_exact, p_tango) < alpha)
    return reject.sum(axis=1) - 1  # the test is monotone in k: rejections are k = 0..lo


def mcnemar_power(delta, psi: float, n: int, alpha: float = 0.05):
    """Power of the cell's 0/1 test on n items when a share psi of items differ (discordant) and
    the mean difference is delta (better - worse share); delta may be an array."""
    from scipy import stats as sps

    lo = _reject_below(n, alpha)
    D = np.arange(n + 1)
    w = sps.binom.pmf(D, n, psi)
    delta = np.atleast_1d(np.asarray(delta, dtype=float))
    worse = np.clip((psi - delta) / (2 * psi), 0.0, 1.0)[:, None]
    pw = sps.binom.cdf(lo[None, :], D[None, :], worse) + sps.binom.cdf(lo[None, :], D[None, :], 1 - worse)
    out = (np.where(lo[None, :] >= 0, pw, 0.0) * w[None, :]).sum(axis=1)
    return out if out.size > 1 else float(out[0])


def mcnemar_mde(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest difference of two paired 0/1 scores that the cell's test detects with `power`;
    discordance psi = sd^2 (at most 1)."""
    psi = min(1.0, sd * sd)
    if n <= 1 or psi <= 0 or mcnemar_power(psi, psi, n, alpha) < power:
        return float("inf")
    lo, hi = 0.0, psi
    for _ in range(3):  # power rises with delta: bracket the crossing on a grid, twice refined (2 vectorised calls)
        grid = np.linspace(lo, hi, 65)
        k = int(np.argmax(np.atleast_1d(mcnemar_power(grid, psi, n, alpha)) >= power))
        lo, hi = grid[max(k - 1, 0)], grid[k]
    return float(hi)
