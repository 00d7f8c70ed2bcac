"""Confidence intervals and paired tests used by every report, alarm and the gate.

Conventions (also printed in reports):
- 0/1 metrics (accuracy, pass@1, satisfaction, toxicity) use the Wilson score interval,
  which stays inside [0, 1] and behaves at n small or p near 0/1.
- Other means use a percentile bootstrap over items (fixed seed: reports are reproducible).
- Accuracies over pairs (label accuracy, reward-model accuracy) resample whole prompts
  (`cluster_bootstrap_mean`): the pairs of one prompt share its responses, so they are not
  independent draws.
- Win ratio counts a tie as half a win; its CI is a bootstrap over judged items.
- Paired differences (`paired_diff`): for 0/1 scores the exact McNemar p and the exact CI
  conditional on the discordant items (it excludes 0 exactly when p < alpha); otherwise the
  sign-flip permutation p (level held at every n) with a paired t CI below 30 items, a percentile
  bootstrap CI above (hrlaif.core.paired_tests).
- Invalid items (`score: null`) follow INVALID_RULE.
- Non-inferiority (the gate, `paired_noninferiority`): for 0/1 scores Tango's score interval of
  the difference of paired proportions (Tango 1998), which does not collapse when few items
  differ; otherwise a paired t interval whose half-width is at least what n items can show
  (`min_margin`).
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Mapping, Sequence

import numpy as np

from hrlaif.core.paired_tests import EXACT_N, T_CI_N, mcnemar_mde, signflip_p, t_ci, t_mde

Z95 = 1.959963984540054
# Below this many items a CI is not shown: a percentile or Wilson interval at n < 5 says little.
MIN_N_CI = 5
INVALID_RULE = ("An invalid item (\"score\": null: the judge or classifier gave no usable answer) is excluded "
                "from its model's score and from both sides of every paired comparison (Δ and its p, the "
                "HRLAIF-vs-RLAIF contrast, the alarms), and counted: invalid=K beside a score, excluded K beside a "
                "paired difference; the gate's verdict counts it at the worst case for the candidate instead.")
# stdlib normal quantiles: importing scipy.stats would double a report's start-up time.
_NORM = NormalDist()


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0, 1, 0.0, 1.0, True, False) for v in values)


def bootstrap_mean(values: Sequence[float], iters: int = 2000, seed: int = 0) -> tuple[float, float]:
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return (float("nan"), float("nan"))
    if len(x) == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(iters, len(x)))].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def mean_ci(values: Sequence[float]) -> dict:
    """{score, n, ci95} for a list of per-item scores; picks Wilson for 0/1 data."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        return {"score": float("nan"), "n": 0, "ci95": [float("nan"), float("nan")]}
    score = sum(vals) / n
    lo, hi = wilson(sum(vals), n) if is_binary(vals) else bootstrap_mean(vals)
    return {"score": score, "n": n, "ci95": [lo, hi]}


def cluster_bootstrap_mean(values: Sequence[float], clusters: Sequence, iters: int = 2000,
                           seed: int = 0) -> dict:
    """{score, n, n_clusters, ci95, ci_method} of the mean of `values`, with a percentile bootstrap
    that resamples whole clusters (e.g. every pair of one prompt), so correlated items are not
    counted as independent evidence. The resampled statistic is sum / count over the drawn
    clusters (a ratio estimator: clusters of different sizes weigh by their size, as in the point
    estimate). Fewer than two clusters: no interval (NaN bounds)."""
    x = np.asarray(values, dtype=float)
    if len(x) != len(clusters):
        raise ValueError("values and clusters differ in length")
    out = {"score": float(x.mean()) if len(x) else float("nan"), "n": int(len(x)),
           "n_clusters": len(set(clusters)), "ci95": [float("nan"), float("nan")],
           "ci_method": "cluster_bootstrap"}
    if out["n_clusters"] < 2:
        return out
    ids = {c: i for i, c in enumerate(dict.fromkeys(clusters))}
    idx = np.array([ids[c] for c in clusters])
    sums = np.bincount(idx, weights=x)
    counts = np.bincount(idx).astype(float)
    draw = np.random.default_rng(seed).integers(0, len(sums), size=(iters, len(sums)))
    means = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    out["ci95"] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
    return out


def win_ratio(outcomes: Sequence[float], iters: int = 2000, seed: int = 0) -> dict:
    """outcomes: 1 win, 0.5 tie, 0 loss (per prompt, after both orders)."""
    x = [float(o) for o in outcomes]
    wins = sum(1 for o in x if o == 1.0)
    ties = sum(1 for o in x if o == 0.5)
    losses = sum(1 for o in x if o == 0.0)
    n = len(x)
    ratio = (wins + 0.5 * ties) / n if n else float("nan")
    lo, hi = bootstrap_mean(x, iters, seed) if n else (float("nan"), float("nan"))
    return {"score": ratio, "n": n, "ci95": [lo, hi], "wins": wins, "ties": ties, "losses": losses}


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p from the discordant counts b (1 -> 0) and c (0 -> 1): the binomial
    test of min(b, c) successes in b + c trials at 1/2, doubled. Exact integer arithmetic."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (no overflow at large n)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0 or p >= 1.0:
        return 1.0 if p <= 0.0 else 0.0
    logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    i = np.arange(k + 1)
    logc = logfact[n] - logfact[i] - logfact[n - i]
    return float(np.exp(logc + i * math.log(p) + (n - i) * math.log1p(-p)).sum())


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper-Pearson) CI of a binomial proportion, by bisection on the binomial tails:
    the set of p that a two-sided exact test with alpha/2 in each tail does not reject."""
    def solve(f) -> float:  # f increasing in p, root in [0, 1]
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(lambda p: (1 - _binom_cdf(k - 1, n, p)) - alpha / 2)
    upper = 1.0 if k == n else solve(lambda p: alpha / 2 - _binom_cdf(k, n, p))
    return lower, upper


def mcnemar_diff_ci(b: int, c: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """CI of the paired difference (c - b) / n of two 0/1 scores on n items, conditional on the b + c
    discordant items: the exact CI of the share c / (b + c) mapped to the difference. It excludes 0
    exactly when the exact McNemar p < alpha, so a cell's CI and its p never disagree."""
    d = b + c
    if d == 0:
        return (0.0, 0.0)
    lo, hi = clopper_pearson(c, d, alpha)
    return (d / n * (2 * lo - 1), d / n * (2 * hi - 1))


def mcnemar_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact McNemar test on paired 0/1 scores (two-sided)."""
    b01 = sum(1 for x, y in zip(a, b) if x >= 0.5 and y < 0.5)
    c10 = sum(1 for x, y in zip(a, b) if x < 0.5 and y >= 0.5)
    return mcnemar_exact(b01, c10)


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], iters: int = 5000,
                          seed: int = 0) -> dict:
    """Mean of (b - a) with a percentile bootstrap CI and the sign-flip permutation p
    (hrlaif.core.paired_tests: a bootstrap p does not hold its level at small n)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = len(d)
    if n == 0:
        return {"diff": float("nan"), "ci95": [float("nan"), float("nan")], "p": 1.0, "boot": np.zeros(0)}
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, n, size=(iters, n))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"diff": float(d.mean()), "ci95": [float(lo), float(hi)], "p": signflip_p(d), "boot": boot}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], iters: int = 10000,
                     seed: int = 0) -> tuple[np.ndarray, float, str]:
    """(bootstrap distribution of mean(b - a), two-sided p, test name) over paired items: exact
    McNemar for 0/1 scores, else the sign-flip permutation test (hrlaif.core.paired_tests)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a)
    if is_binary(a) and is_binary(b):
        d = b - a
        # Resampling items of a {-1, 0, 1} variable = drawing the three counts from a multinomial:
        # an exact bootstrap that stays cheap for MMLU-sized n.
        probs = [np.mean(d > 0), np.mean(d < 0), np.mean(d == 0)]
        counts = np.random.default_rng(seed).multinomial(n, probs, size=iters)
        return (counts[:, 0] - counts[:, 1]) / n, mcnemar_p(a, b), "mcnemar_exact"
    # paired_bootstrap_diff materialises iters x n indices; cap the product at ~20M.
    iters = int(min(iters, max(2000, 2e7 // max(n, 1))))
    res = paired_bootstrap_diff(a, b, iters=iters, seed=seed)
    return res["boot"], res["p"], "signflip_exact" if n <= EXACT_N else "signflip"


def pair_scores(base: Mapping[str, float | None], cand: Mapping[str, float | None]) -> tuple[list[str], dict]:
    """(ids valid on both sides, sorted; counts) for two {id: score or None} maps. None is an
    invalid item (INVALID_RULE): it leaves the pairs on both sides and is counted."""
    shared = set(base) & set(cand)
    common = sorted(k for k in shared if base[k] is not None and cand[k] is not None)
    return common, {
        "invalid_baseline": sum(v is None for v in base.values()),
        "invalid_candidate": sum(v is None for v in cand.values()),
        "dropped_invalid": len(shared) - len(common),
        "missing_in_candidate": len(set(base) - shared),
        "missing_in_baseline": len(set(cand) - shared),
    }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adj = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adj[i] = running
    return adj


def min_detectable_diff(sd: float, n: int, alpha: float = 0.05, power: float = 0.8,
                        binary: bool = False) -> float:
    """Smallest |mean difference| the reported two-sided level-2*alpha test detects with the given
    power (callers pass a two-sided level a as alpha = a / 2): the paired t test's (noncentral t),
    or for 0/1 scores the exact McNemar + Tango test's (hrlaif.core.paired_tests)."""
    if n <= 1:
        return float("inf")
    return (mcnemar_mde if binary else t_mde)(sd, n, 2 * alpha, power)


def paired_sd(a: Sequence[float], b: Sequence[float]) -> float:
    """sd of the paired differences; when the two sides agree on every item (sd 0), the sd of the
    baseline items stands in as a planning value (identical outputs still leave the question of
    how large a change the items could have shown), and for 0/1 items that are all alike, that of
    a Laplace-smoothed rate (k + 1) / (n + 2): 0 of 8 right cannot rule out a change either."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2:
        return 0.0
    sd = float(np.std(b - a, ddof=1))
    if sd > 0:
        return sd
    sd = float(np.std(a, ddof=1))
    if sd > 0 or not is_binary(a):
        return sd
    p = (a.sum() + 1) / (len(a) + 2)
    return math.sqrt(p * (1 - p))


def paired_diff(a: Sequence[float], b: Sequence[float], alpha: float = 0.05, power: float = 0.8,
                iters: int = 10000, seed: int = 0) -> dict:
    """b - a over paired items: {n, diff, ci95, p, test, mde}. 0/1 scores: the hull of the exact
    McNemar (conditional) and Tango score (unconditional) intervals, p the larger of the two tests';
    other scores: sign-flip p, t CI below T_CI_N items. `mde` is the smallest |difference| the
    two-sided level-alpha test reported would detect with the given power at this n (paired sd). With
    n < MIN_N_CI the CI is NaN (too few items to say anything)."""
    n = len(a)
    if n == 0:
        return {"n": 0, "diff": float("nan"), "ci95": [float("nan")] * 2, "p": float("nan"),
                "test": None, "mde": float("inf")}
    diff = float(np.mean(np.asarray(b, dtype=float) - np.asarray(a, dtype=float)))
    if is_binary(a) and is_binary(b):
        b10 = sum(1 for x, y in zip(a, b) if x >= 0.5 and y < 0.5)
        c01 = sum(1 for x, y in zip(a, b) if x < 0.5 and y >= 0.5)
        # Exact McNemar is conditional on the discordant items, so alone its CI collapses to [0, 0]
        # when none differ. Tango's unconditional score interval does not; the cell takes the hull
        # of both and the larger of their p, so the CI excludes 0 exactly when p < alpha.
        cond, tango = mcnemar_diff_ci(b10, c01, n, alpha), tango_ci(b10, c01, n, alpha)
        ci = [min(cond[0], tango[0]), max(cond[1], tango[1])]
        z0 = abs(tango_z(b10, c01, n, 0.0))
        p_tango = 1.0 if z0 == 0 else float(2 * (1 - _NORM.cdf(z0)))
        p, test = max(mcnemar_exact(b10, c01), p_tango), "mcnemar_exact+tango"
    else:
        boot, p, test = paired_bootstrap(a, b, iters=iters, seed=seed)
        ci = (list(t_ci(np.asarray(b, float) - np.asarray(a, float), alpha)) if n < T_CI_N else
              [float(q) for q in np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])])
    ci = [float("nan")] * 2 if n < MIN_N_CI else [x + 0.0 for x in ci]
    return {"n": n, "diff": diff + 0.0, "ci95": ci, "p": float(p), "test": test,
            "mde": min_detectable_diff(paired_sd(a, b), n, alpha / 2, power, binary=test.startswith("mcnemar"))}


def inconclusive(diff: float, ci95: Sequence[float], mde: float) -> bool:
    """The CI includes 0 and the difference is smaller than what the items could detect: the data
    neither show an effect nor rule out one of the size that matters."""
    lo, hi = ci95
    return not (lo > 0 or hi < 0) and mde > abs(diff)


# ---------------------------------------------------------------- non-inferiority (the gate)
def _z(alpha: float) -> float:
    return _NORM.inv_cdf(1 - alpha / 2)


def min_margin(n: int, alpha: float = 0.05, scale: float = 1.0) -> float:
    """Half-width of the two-sided 1 - alpha interval when the two sides agree on all n items:
    z^2 / (n + z^2) x scale. It is Tango's bound with no discordant pair, and for any score in a
    range of width `scale` the share of items that n agreeing items cannot rule out differing
    (each by up to `scale`), so no margin below it can be shown without items that improved."""
    if n <= 0:
        return float("inf")
    z2 = _z(alpha) ** 2
    return scale * z2 / (n + z2)


def tango_z(worse, better, n: int, delta0):
    """Tango's (1998) score statistic for H0: delta = delta0, delta = (better - worse) / n the
    difference of two paired proportions (candidate - baseline) on n items, `worse` items 1 -> 0
    and `better` items 0 -> 1. The variance is taken at the maximum-likelihood cell probabilities
    restricted to delta0 (closed form: the larger root of 2n q^2 + W q - worse d0 (1 - d0) = 0 for
    q = P(1 -> 0)), which keeps it positive when no item differs. Accepts arrays (elementwise)."""
    worse, better, d0 = (np.asarray(x, dtype=float) for x in (worse, better, delta0))
    w = (2 * n + worse - better) * d0 - (worse + better)
    q = (-w + np.sqrt(np.maximum(0.0, w * w + 8 * n * worse * d0 * (1 - d0)))) / (4 * n)
    var = n * (2 * q + d0 * (1 - d0))
    num = better - worse - n * d0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, num / np.sqrt(np.where(var > 0, var, 1.0)), np.sign(num) * np.inf)
    z = np.where((var <= 0) & (num == 0), 0.0, z)
    return float(z) if z.ndim == 0 else z


def tango_ci(worse: int, better: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Two-sided 1 - alpha Tango score interval of (better - worse) / n: the delta0 whose score test
    does not reject. With no discordant item it is +-min_margin(n, alpha), never [0, 0]."""
    from scipy.optimize import brentq

    if n <= 0:
        return (float("nan"), float("nan"))
    est, z = (better - worse) / n, _z(alpha)
    f = lambda d0: tango_z(worse, better, n, d0) - z  # noqa: E731  (decreasing in d0)
    g = lambda d0: tango_z(worse, better, n, d0) + z  # noqa: E731
    eps = 1e-12
    lo = -1.0 if est <= -1 + eps else brentq(f, -1 + eps, est, xtol=1e-12)
    hi = 1.0 if est >= 1 - eps else brentq(g, est, 1 - eps, xtol=1e-12)
    return (lo, hi)


def paired_noninferiority(a: Sequence[float], b: Sequence[float], margin: float,
                          alpha: float = 0.05, ci: bool = True) -> dict:
    """Is b (candidate) no worse than a (baseline) by `margin` or more, higher being better?

    {method, n, diff, ci, p, min_margin}: `ci` is the two-sided 1 - alpha interval of mean(b - a)
    (None with ci=False: p alone needs no root finding);
    non-inferiority is ci[0] > -margin, equivalently p < alpha, where p (on the two-sided scale
    of the interval, so twice the one-sided test's p) is the smallest alpha at which the lower
    bound clears -margin. `min_margin` is the margin that identical outputs on these n items
    would just fail to clear at this alpha.
    - 0/1 scores: Tango's score interval and its score test at delta0 = -margin.
    - Other scores: a paired t interval with half-width at least min_margin(n, alpha, range)
      (range = the scores' spread, at least 1): a sample variance near 0 (few items differ) would
      otherwise shrink the interval to nothing, and n agreeing items only bound the share of
      items that differ at about z^2 / (n + z^2), as for 0/1 scores. p is the larger of the t
      test's and this floor's.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a)
    if n == 0:
        return {"method": None, "n": 0, "diff": float("nan"), "ci": [float("nan")] * 2, "p": 1.0,
                "min_margin": float("inf")}
    d = b - a
    diff = float(d.mean())
    if is_binary(a) and is_binary(b):
        worse, better = int(np.sum(d < 0)), int(np.sum(d > 0))
        if margin >= 1:
            p = 0.0 if worse < n else 1.0
        else:
            p = min(1.0, 2 * _NORM.cdf(-tango_z(worse, better, n, -margin)))
        return {"method": "tango_score", "n": n, "diff": diff,
                "ci": list(tango_ci(worse, better, n, alpha)) if ci else None, "p": p,
                "min_margin": min_margin(n, alpha)}
    from scipy import stats as sps

    scale = max(1.0, float(np.ptp(np.concatenate([a, b]))))
    sd = float(np.std(d, ddof=1)) if n > 1 else math.inf
    se = sd / math.sqrt(n)
    floor = min_margin(n, alpha, scale)
    t = sps.t.ppf(1 - alpha / 2, n - 1) if n > 1 else math.inf
    half = max(t * se if se > 0 else 0.0, floor)
    g = diff + margin  # how far the estimate clears the margin
    if g <= 0:
        p = 1.0
    else:
        p_t = 0.0 if se == 0 else 1.0 if not math.isfinite(se) else float(2 * sps.t.sf(g / se, n - 1))
        # floor < g  <=>  z^2 (scale - g) < g n  <=>  z < sqrt(g n / (scale - g))
        p_floor = 0.0 if g >= scale else 2 * _NORM.cdf(-math.sqrt(g * n / (scale - g)))
        p = min(1.0, max(p_t, p_floor))
    return {"method": "paired_t_floor", "n": n, "diff": diff,
            "ci": [max(-scale, diff - half), min(scale, diff + half)] if ci else None, "p": p,
            "min_margin": floor}
