"""Confidence intervals and paired tests used by every report.

Conventions (also printed in reports):
- 0/1 metrics (accuracy, pass@1, satisfaction, toxicity) use the Wilson score interval,
  which stays inside [0, 1] and behaves at n small or p near 0/1.
- Other means use a percentile bootstrap over items (fixed seed: reports are reproducible).
- Win ratio counts a tie as half a win; its CI is a bootstrap over judged items.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054


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


def mcnemar_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact McNemar test on paired 0/1 scores (two-sided)."""
    b01 = sum(1 for x, y in zip(a, b) if x >= 0.5 and y < 0.5)
    c10 = sum(1 for x, y in zip(a, b) if x < 0.5 and y >= 0.5)
    n = b01 + c10
    if n == 0:
        return 1.0
    from scipy import stats as _st  # lazy: scipy costs seconds to import
    return float(min(1.0, 2 * _st.binom.cdf(min(b01, c10), n, 0.5)))


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], iters: int = 5000,
                          seed: int = 0) -> dict:
    """Mean of (b - a) with a percentile bootstrap CI and a one-sample two-sided p-value."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = len(d)
    if n == 0:
        return {"diff": float("nan"), "ci95": [float("nan"), float("nan")], "p": 1.0, "boot": np.zeros(0)}
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, n, size=(iters, n))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    # p-value of H0: mean diff = 0, from the bootstrap distribution re-centred at 0.
    centred = boot - boot.mean()
    p = float(np.mean(np.abs(centred) >= abs(d.mean())))
    return {"diff": float(d.mean()), "ci95": [float(lo), float(hi)], "p": max(p, 1.0 / iters), "boot": boot}


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


def min_detectable_diff(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest paired mean difference detectable with the given power (normal approx.)."""
    if n <= 1:
        return float("inf")
    from scipy import stats as _st
    return (_st.norm.ppf(1 - alpha) + _st.norm.ppf(power)) * sd / math.sqrt(n)
