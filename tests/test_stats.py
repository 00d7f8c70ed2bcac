"""hrlaif.core.stats checked against values computed independently: scipy's exact binomial test and
Clopper-Pearson interval, hand-computed Holm and Wilson cases, and a clustered bootstrap whose
answer is known in closed form."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from hrlaif.core.stats import (
    MIN_N_CI,
    clopper_pearson,
    cluster_bootstrap_mean,
    holm,
    inconclusive,
    mcnemar_diff_ci,
    mcnemar_exact,
    mcnemar_p,
    min_detectable_diff,
    min_margin,
    pair_scores,
    paired_diff,
    paired_noninferiority,
    tango_ci,
    tango_z,
    wilson,
)


@pytest.mark.parametrize("b,c", [(0, 5), (3, 12), (10, 10), (25, 40), (1, 0), (130, 100), (0, 0), (7, 0)])
def test_exact_mcnemar_p_is_the_binomial_test_on_discordant_pairs(b, c):
    expected = 1.0 if b + c == 0 else sps.binomtest(min(b, c), b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)
    # from paired 0/1 items: b items 1 -> 0, c items 0 -> 1, plus concordant ones that do not count
    a = [1] * b + [0] * c + [1] * 7 + [0] * 5
    x = [0] * b + [1] * c + [1] * 7 + [0] * 5
    assert mcnemar_p(a, x) == pytest.approx(expected, rel=1e-9)


def test_hand_computed_mcnemar_case():
    # 2 vs 9 discordant: p = 2 * (C(11,0) + C(11,1) + C(11,2)) / 2^11 = 2 * 67 / 2048
    assert mcnemar_exact(2, 9) == pytest.approx(134 / 2048)


def test_holm_hand_computed():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_wilson_hand_computed():
    # 8 of 10, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.716826, half 1.96 * sqrt(0.016 + 0.009604) / 1.38416
    # = 0.226587: [0.4902, 0.9434] (the textbook value)
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)
    assert all(math.isnan(x) for x in wilson(0, 0))


@pytest.mark.parametrize("k,n", [(0, 5), (3, 12), (7, 7), (25, 40), (130, 230)])
def test_clopper_pearson_matches_scipy(k, n):
    ref = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    lo, hi = clopper_pearson(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)


@pytest.mark.parametrize("b,c", [(3, 12), (2, 9), (10, 10), (0, 6), (5, 14)])
def test_paired_ci_excludes_zero_exactly_when_mcnemar_rejects(b, c):
    lo, hi = mcnemar_diff_ci(b, c, 200)
    assert (lo > 0 or hi < 0) == (mcnemar_exact(b, c) < 0.05)
    assert lo <= (c - b) / 200 <= hi


def test_cluster_bootstrap_known_answer():
    """20 prompts x 10 pairs, every pair of a prompt alike, half the prompts right: the resampled mean
    is (prompts right among 20 drawn) / 20 ~ Binomial(20, 1/2) / 20, whose 2.5% and 97.5% points are
    6/20 and 14/20. A Wilson interval over the 200 pairs would claim [43, 57]%."""
    values = [1.0] * 100 + [0.0] * 100
    clusters = [i // 10 for i in range(200)]
    r = cluster_bootstrap_mean(values, clusters, iters=20000)
    assert sps.binom.ppf([0.025, 0.975], 20, 0.5).tolist() == [6.0, 14.0]
    assert r["score"] == 0.5 and r["n"] == 200 and r["n_clusters"] == 20
    assert r["ci95"] == pytest.approx([0.30, 0.70])
    naive = wilson(100, 200)
    assert naive[1] - naive[0] < 0.15 < r["ci95"][1] - r["ci95"][0]


def test_cluster_bootstrap_ratio_estimator_and_degenerate_cases():
    # clusters of different sizes: the point estimate is the pooled mean, not the mean of cluster means
    r = cluster_bootstrap_mean([1, 1, 1, 0, 0, 1], ["a", "a", "a", "b", "c", "c"])
    assert r["score"] == pytest.approx(4 / 6) and r["n_clusters"] == 3
    assert 0 <= r["ci95"][0] <= r["score"] <= r["ci95"][1] <= 1
    # every cluster alike: no uncertainty left
    same = cluster_bootstrap_mean([1, 0] * 10, [i // 2 for i in range(20)])
    assert same["ci95"] == pytest.approx([0.5, 0.5])
    # one cluster: no interval
    one = cluster_bootstrap_mean([1, 0, 1], ["p", "p", "p"])
    assert one["n_clusters"] == 1 and all(math.isnan(x) for x in one["ci95"])


def test_paired_diff_binary_and_continuous():
    a = [1] * 30 + [0] * 70
    b = a[:]
    for i in range(12):  # 12 items 1 -> 0, 2 items 0 -> 1
        b[i] = 0
    b[50], b[51] = 1, 1
    r = paired_diff(a, b)
    assert r["test"] == "mcnemar_exact+tango" and r["diff"] == pytest.approx(-0.10)
    # p: the larger of exact McNemar and Tango's score test (here the exact one)
    assert r["p"] == pytest.approx(max(sps.binomtest(2, 14, 0.5).pvalue, 2 * sps.norm.sf(10 / 14 ** 0.5)))
    cond, tango = mcnemar_diff_ci(12, 2, 100), tango_ci(12, 2, 100)
    assert r["ci95"] == pytest.approx([min(cond[0], tango[0]), max(cond[1], tango[1])]) and r["ci95"][1] < 0
    # the MDE is the cell's exact test's (tests/test_small_n.py checks its power), larger than the
    # normal approximation's, whose real power was 69-79%
    sd = float(np.std(np.array(b) - np.array(a), ddof=1))
    assert r["mde"] == pytest.approx(min_detectable_diff(sd, 100, 0.025, binary=True))
    assert r["mde"] > (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * sd / 10
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 60)
    y = x + 0.5 + rng.normal(0, 0.1, 60)
    c = paired_diff(x, y)
    assert c["test"] == "signflip" and c["ci95"][0] > 0.4 and c["p"] < 0.001
    tiny = paired_diff([1, 0, 1], [0, 0, 1])
    assert tiny["n"] == 3 < MIN_N_CI and all(math.isnan(v) for v in tiny["ci95"])


def test_paired_ci_of_identical_outputs_is_not_zero_width():
    # 40 items that all agree: the conditional exact CI would be [0, 0]; the cell says how large a
    # difference 40 agreeing items cannot rule out instead.
    a = [1] * 20 + [0] * 20
    r = paired_diff(a, a)
    assert r["diff"] == 0 and r["p"] == 1.0
    assert r["ci95"][0] == pytest.approx(-min_margin(40), rel=1e-6)
    assert r["ci95"][1] == pytest.approx(min_margin(40), rel=1e-6)


@pytest.mark.parametrize("b,c", [(0, 5), (1, 7), (3, 12), (10, 25), (0, 1), (6, 6)])
def test_paired_cell_ci_and_p_agree(b, c):
    a = [1] * b + [0] * c + [1] * 30 + [0] * 30
    x = [0] * b + [1] * c + [1] * 30 + [0] * 30
    r = paired_diff(a, x)
    assert (r["ci95"][0] > 0 or r["ci95"][1] < 0) == (r["p"] < 0.05)


def test_identical_outputs_are_inconclusive_with_a_planning_mde():
    a = [1] * 6 + [0] * 6
    r = paired_diff(a, a)
    assert r["diff"] == 0 and r["ci95"] == pytest.approx([-min_margin(12), min_margin(12)]) and r["p"] == 1.0
    # n = 12 cannot detect anything under ~40 points (issue 12's quickstart cell)
    assert r["mde"] > 0.4 and inconclusive(r["diff"], r["ci95"], r["mde"])
    assert not inconclusive(-0.2, [-0.3, -0.1], 0.5)
    # every item wrong on both sides (a 135M model on GSM8K): still no evidence of no change
    zeros = paired_diff([0] * 8, [0] * 8)
    assert zeros["mde"] == min_detectable_diff(math.sqrt(0.1 * 0.9), 8, 0.025, binary=True) == math.inf
    assert inconclusive(zeros["diff"], zeros["ci95"], zeros["mde"])


def test_min_detectable_diff_is_the_paired_t_tests_at_80_percent_power():
    mde = min_detectable_diff(0.5, 100, alpha=0.025)
    nc, tc = mde / 0.05, sps.t.ppf(0.975, 99)
    assert sps.nct.sf(tc, 99, nc) + sps.nct.cdf(-tc, 99, nc) == pytest.approx(0.8, abs=1e-6)
    assert mde > (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * 0.05  # the normal formula overstated power
    assert min_detectable_diff(0.5, 1) == math.inf


def test_pair_scores_counts_invalid_and_missing():
    base = {"a": 1.0, "b": None, "c": 0.0, "d": 1.0}
    cand = {"a": 0.0, "b": 1.0, "c": None, "e": 1.0}
    common, counts = pair_scores(base, cand)
    assert common == ["a"]
    assert counts == {"invalid_baseline": 1, "invalid_candidate": 1, "dropped_invalid": 2,
                      "missing_in_candidate": 1, "missing_in_baseline": 1}


# ---------------------------------------------------------------- non-inferiority (the gate)
def _tango_by_hand(worse: int, better: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Tango's score interval computed independently: the restricted MLE of P(1 -> 0) by maximising
    the multinomial likelihood numerically (no closed form), then the score equation solved for
    each bound."""
    from scipy.optimize import brentq, minimize_scalar

    def z(d0):
        def nll(q):  # cells 1 -> 0: q, 0 -> 1: q + d0, concordant: 1 - 2q - d0
            return -(worse * np.log(q) + better * np.log(q + d0) + (n - worse - better) * np.log(1 - 2 * q - d0))
        lo_q, hi_q = max(0.0, -d0), (1 - d0) / 2
        q = minimize_scalar(nll, bounds=(lo_q + 1e-13, hi_q - 1e-13), method="bounded",
                            options={"xatol": 1e-14}).x
        return (better - worse - n * d0) / math.sqrt(n * (2 * q + d0 - d0 * d0))

    crit = sps.norm.ppf(1 - alpha / 2)
    est = (better - worse) / n
    lo = -1.0 if worse == n else brentq(lambda d: z(d) - crit, -1 + 1e-9, est - 1e-12)
    hi = 1.0 if better == n else brentq(lambda d: z(d) + crit, est + 1e-12, 1 - 1e-9)
    return lo, hi


def test_tango_interval_matches_the_published_example():
    """Cavo et al. (2012) complete response before/after consolidation, [[59, 6], [16, 80]]: Tango's
    asymptotic score interval of (6 - 16) / 161 is -0.1240 to -0.0054 (Fagerland, Lydersen & Laake,
    Statistical Analysis of Contingency Tables, ch. 8; R contingencytables)."""
    lo, hi = tango_ci(worse=16, better=6, n=161)
    assert (round(lo, 4), round(hi, 4)) == (-0.1240, -0.0054)
    assert (lo, hi) == pytest.approx(_tango_by_hand(16, 6, 161), abs=1e-6)


@pytest.mark.parametrize("worse,better,n,alpha", [
    (2, 12, 50, 0.05), (2, 12, 32, 0.05), (0, 0, 54, 0.05), (0, 30, 30, 0.05), (1, 0, 40, 0.05),
    (7, 1, 21, 0.05), (10, 0, 1000, 0.01), (3, 5, 200, 0.0125), (0, 0, 12, 0.05)])
def test_tango_interval_matches_an_independent_computation(worse, better, n, alpha):
    # Newcombe's (1998) paired examples among them: (e, f, g, h) = (36, 12, 2, 0), (18, 12, 2, 18), (53, 0, 0, 1),
    # (0, 30, 0, 0)
    assert tango_ci(worse, better, n, alpha) == pytest.approx(_tango_by_hand(worse, better, n, alpha), abs=1e-6)


@pytest.mark.parametrize("n", [5, 12, 40, 200, 381, 1000])
def test_identical_outputs_give_a_nonzero_interval(n):
    """No discordant item: the interval is +-z^2 / (n + z^2), not [0, 0] (the bootstrap's collapse)."""
    z2 = sps.norm.ppf(0.975) ** 2
    x = [1.0] * (n // 3) + [0.0] * (n - n // 3)
    r = paired_noninferiority(x, x, margin=0.01)
    assert r["method"] == "tango_score" and r["ci"] == pytest.approx([-z2 / (n + z2), z2 / (n + z2)], abs=1e-9)
    assert r["min_margin"] == pytest.approx(z2 / (n + z2))
    # a 1-point margin is first shown at n = 381
    assert (r["p"] < 0.05) == (n >= 381) == (r["ci"][0] > -0.01)
    # fractional scores get the same floor
    f = np.linspace(0, 1, n)
    assert paired_noninferiority(f, f, 0.01)["ci"] == pytest.approx(r["ci"], abs=1e-9)


def _exact_false_pass(n: int, p10: float, p01: float, margin: float, alpha: float = 0.05) -> float:
    """P(the gate passes) for paired 0/1 items with cell probabilities P(1 -> 0) = p10, P(0 -> 1) = p01,
    summed exactly over the multinomial (worse, better) counts."""
    crit = sps.norm.ppf(1 - alpha / 2)
    total = 0.0
    for worse in range(n + 1):
        pw = sps.binom.pmf(worse, n, p10)
        if pw < 1e-15:
            continue
        better = np.arange(n - worse + 1)
        pb = sps.binom.pmf(better, n - worse, p01 / (1 - p10))
        total += pw * pb[tango_z(worse, better, n, -margin) > crit].sum()
    return total


@pytest.mark.parametrize("n", [12, 50, 200, 1000])
def test_a_candidate_worse_by_the_margin_passes_at_most_alpha(n):
    """The gate's type-I error, computed exactly: a candidate whose true deficit is the margin
    (p10 - p01 = margin) passes with probability <= alpha at every n, whether it only loses items
    (p01 = 0, the bench's planted drop) or also flips others both ways. The bootstrap CI it
    replaced passed 0.89 / 0.56 / 0.12 / 0.04 of such candidates at these n."""
    rates = [_exact_false_pass(n, p01 + m, p01, m) for m in (0.01, 0.05) for p01 in (0.0, 0.01, 0.1, 0.3)]
    assert max(rates) <= 0.05
    # and the test is not trivially conservative once n can resolve the margin
    if n >= 200:
        assert max(rates) > 0.015


def test_noninferiority_p_and_interval_agree():
    """p is the smallest alpha at which the lower bound clears -margin, for both methods."""
    rng = np.random.default_rng(1)
    a = (rng.random(300) < 0.5).astype(float)
    b = a.copy()
    flip = rng.choice(300, 12, replace=False)
    b[flip] = 1 - b[flip]
    cases = [(a, b), (rng.random(80), rng.random(80)), (a[:60], np.clip(a[:60] - 0.2 * rng.random(60), 0, 1))]
    for x, y in cases:
        for margin in (0.01, 0.05, 0.2):
            r = paired_noninferiority(x, y, margin)
            assert (r["ci"][0] > -margin) == (r["p"] < 0.05)
            if 1e-9 < r["p"] < 1:
                assert paired_noninferiority(x, y, margin, alpha=r["p"])["ci"][0] == pytest.approx(-margin, abs=1e-7)
    # Tango's p is the score test at delta0 = -margin, on the scale of a two-sided interval
    worse, better = int(np.sum(b < a)), int(np.sum(b > a))
    assert paired_noninferiority(a, b, 0.05)["p"] == pytest.approx(2 * sps.norm.sf(tango_z(worse, better, 300, -0.05)))


def test_fractional_scores_use_a_t_interval_with_a_floor():
    rng = np.random.default_rng(2)
    a = rng.random(400)
    b = np.clip(a + rng.normal(-0.02, 0.3, 400), 0, 1)
    r = paired_noninferiority(a, b, 0.05)
    ref = sps.ttest_rel(b, a).confidence_interval(0.95)  # plenty of variance: the floor does not bind
    assert r["method"] == "paired_t_floor" and r["ci"] == pytest.approx([ref.low, ref.high])
    assert r["p"] == pytest.approx(2 * sps.ttest_1samp(b - a, -0.05, alternative="greater").pvalue)
    # one item of 40 moves by 0.1: the sample sd is tiny, the interval is not
    c = a[:40].copy()
    c[0] -= 0.1
    r = paired_noninferiority(a[:40], c, 0.01)
    z2 = sps.norm.ppf(0.975) ** 2
    assert r["ci"][0] == pytest.approx(-0.1 / 40 - z2 / (40 + z2)) and r["p"] > 0.05
