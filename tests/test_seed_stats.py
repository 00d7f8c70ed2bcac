"""The hierarchical (seeds, then items) interval of a variant-vs-variant Δ (hrlaif/core/seed_stats.py)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from hrlaif.core.seed_stats import hierarchical_diff, seed_summary


def _item_only(a: np.ndarray, b: np.ndarray, rng, iters: int) -> tuple[float, float]:
    """What a checkpoint-level report would give: the seeds' mean per item, a paired bootstrap over items."""
    d = a.mean(0) - b.mean(0)
    n = len(d)
    reps = rng.multinomial(n, np.full(n, 1 / n), size=iters) @ d / n
    return tuple(np.quantile(reps, [0.025, 0.975]))


def test_coverage_with_a_known_between_seed_variance():
    """Simulated runs: score = variant effect + item effect + item x variant + seed effect (sd tau)
    + noise. 3 seeds per variant, 80 items, true Δ 0.2. The hierarchical interval covers the true Δ
    about 95% of the time; the item-only interval, blind to the seed variance, visibly less."""
    t0 = time.time()
    rng = np.random.default_rng(20261207)
    k, n, tau, sims, iters, true = 3, 80, 0.2, 250, 800, 0.2
    hier = item = 0
    for _ in range(sims):
        common = rng.normal(0, 1, n)
        a = true + common + rng.normal(0, 0.3, n) + rng.normal(0, tau, (k, 1)) + rng.normal(0, 1, (k, n))
        b = common + rng.normal(0, 0.3, n) + rng.normal(0, tau, (k, 1)) + rng.normal(0, 1, (k, n))
        r = hierarchical_diff(a, b, iters=iters, seed=int(rng.integers(1 << 30)))
        hier += r["lo"] <= true <= r["hi"]
        lo, hi = _item_only(a, b, rng, iters)
        item += lo <= true <= hi
    hier, item = hier / sims, item / sims
    print(f"coverage of the 95% interval over {sims} simulated 3-seed runs (tau={tau}): hierarchical {hier:.1%}, "
          f"item-only {item:.1%} ({time.time() - t0:.1f}s)")
    assert 0.92 <= hier <= 0.99  # Monte Carlo se at 250 runs: about 1.4 points
    assert item <= 0.85 and hier - item >= 0.1
    assert time.time() - t0 < 120  # a generous bound: busy shared runners must not trip it


def test_one_seed_is_the_item_level_interval_and_seed_sd_is_reported():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.3, 1, (1, 200)), rng.normal(0, 1, (1, 200))
    r = hierarchical_diff(a, b, iters=2000)
    lo, hi = _item_only(a, b, np.random.default_rng(2), 2000)
    assert r["diff"] == pytest.approx(float(a.mean() - b.mean()))
    assert r["seeds"] == [1, 1] and r["sd_seeds"] == [None, None]
    assert r["hi"] - r["lo"] == pytest.approx(hi - lo, rel=0.15)
    # three seeds whose means differ: the interval is wider than one seed's, and sd across seeds is given
    a3 = np.vstack([a, a + 0.3, a - 0.3])
    r3 = hierarchical_diff(a3, b, iters=2000)
    assert r3["sd_seeds"][0] == pytest.approx(0.3) and r3["hi"] - r3["lo"] > 2 * (r["hi"] - r["lo"])
    # invalid items (NaN) leave both sides
    a3[1, :10] = np.nan
    assert hierarchical_diff(a3, b, iters=200)["n"] == 190
    assert seed_summary([0.5, 0.7, None]) == {"mean": pytest.approx(0.6), "sd": pytest.approx(0.1414, abs=1e-4),
                                              "k": 2}
