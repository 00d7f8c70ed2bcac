"""Statistics across training seeds (the floor: numpy only).

A variant trained with several seeds is a sample of training runs, and every run is scored on
the same items. A difference between two variants then has two sources of error: which seeds were
drawn (between-seed variance) and which items (item variance). `hierarchical_diff` resamples both:
each bootstrap replicate draws each variant's seed effects with replacement, then the items with
replacement (one draw shared by both variants: the items are crossed with the seeds and paired
between the variants), and adds the two parts. Resampling raw seed means would count the
seed-by-item noise twice (it is already in the items' part), so the seed effects are rescaled to
the between-seed variance component first (the random-effects bootstrap of Davison & Hinkley 1997,
§3.8). With few seeds the seed part's spread is itself uncertain: it is widened by t(k-1)/z.
A variant with one seed contributes its item-level error only.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

METHOD = ("hierarchical bootstrap: each replicate resamples each variant's training-seed effects (rescaled to the "
          "between-seed variance component, Davison & Hinkley 1997 §3.8), then the items (one draw for both "
          "variants, so the Δ stays paired by item); the seed part is widened by t(k-1)/z for k seeds; "
          "{iters} replicates, fixed seed")


def _t95(df: int) -> float:
    """Two-sided 95% t quantile (scipy-free: the floor imports numpy only)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
             10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}
    if df in table:
        return table[df]
    if df > 30:
        return NormalDist().inv_cdf(0.975) * (1 + 1 / (4 * df))
    lo = max(k for k in table if k < df)
    hi = min(k for k in table if k > df)
    return table[lo] + (table[hi] - table[lo]) * (df - lo) / (hi - lo)


def _seed_effects(x: np.ndarray) -> np.ndarray:
    """Each seed's effect (its mean over items minus the grand mean), rescaled so that their spread
    is the between-seed variance component: the spread of seed means minus the share of the
    seed-by-item residual in it (a method-of-moments estimate, floored at 0)."""
    k, n = x.shape
    if k < 2:
        return np.zeros(k)
    rows = x.mean(axis=1)
    r = rows - rows.mean()
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
    within = (resid ** 2).sum() / ((k - 1) * max(n - 1, 1))
    tau2 = max(0.0, float(rows.var(ddof=1)) - within / n)
    spread = float((r ** 2).mean())
    return r * math.sqrt(tau2 / spread) if spread > 0 else r


def _resampled_mean(r: np.ndarray, rng: np.random.Generator, iters: int) -> np.ndarray:
    k = len(r)
    if k < 2:
        return np.zeros(iters)
    return r[rng.integers(0, k, size=(iters, k))].mean(axis=1)


def hierarchical_diff(cand, base, iters: int = 4000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Δ = mean(cand) - mean(base) and its CI by the hierarchical bootstrap (module docstring).

    cand, base: (seeds, items) arrays of per-item scores, columns the same items in the same order;
    NaN (an invalid item) drops that item from both sides. Returns {diff, lo, hi, p, n, seeds, sd_seeds,
    method}: p is the two-sided bootstrap p (twice the share of centred replicates beyond |Δ|, +1 each)."""
    a, b = np.atleast_2d(np.asarray(cand, float)), np.atleast_2d(np.asarray(base, float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"cand has {a.shape[1]} items, base {b.shape[1]}: they must be the same items")
    keep = ~(np.isnan(a).any(axis=0) | np.isnan(b).any(axis=0))
    a, b = a[:, keep], b[:, keep]
    n, ka, kb = a.shape[1], a.shape[0], b.shape[0]
    out = {"n": n, "seeds": [ka, kb], "method": METHOD.format(iters=iters),
           "sd_seeds": [float(np.std(a.mean(1), ddof=1)) if ka > 1 and n else None,
                        float(np.std(b.mean(1), ddof=1)) if kb > 1 and n else None]}
    if n == 0:
        return out | {"diff": math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan}
    d = a.mean(axis=0) - b.mean(axis=0)  # per item: the seeds' mean of each side
    diff = float(d.mean())
    rng = np.random.default_rng(seed)
    items = d[rng.integers(0, n, size=(iters, n))].mean(axis=1) - diff
    seeds = _resampled_mean(_seed_effects(a), rng, iters) - _resampled_mean(_seed_effects(b), rng, iters)
    if max(ka, kb) > 1:  # few seeds: the seed part gets a t(k-1) tail instead of a normal one
        seeds = seeds * _t95(min(k for k in (ka, kb) if k > 1) - 1) / NormalDist().inv_cdf(1 - alpha / 2)
    reps = items + seeds  # centred replicates
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    beyond = min(int(np.sum(reps <= -abs(diff))), int(np.sum(reps >= abs(diff))))
    p = min(1.0, 2 * (beyond + 1) / (iters + 1))  # never 0: the replicates bound it at 2/(iters+1)
    return out | {"diff": diff, "lo": diff + float(lo), "hi": diff + float(hi), "p": p}


def seed_summary(scores) -> dict:
    """{mean, sd, k} of per-seed scores (sd across seeds, ddof=1; None with one seed)."""
    x = np.asarray([s for s in scores if s is not None and not math.isnan(s)], float)
    return {"mean": float(x.mean()) if len(x) else math.nan, "sd": float(x.std(ddof=1)) if len(x) > 1 else None,
            "k": len(x)}
