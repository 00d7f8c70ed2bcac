"""core.stats checked against values computed independently: scipy's exact binomial test and
Clopper-Pearson interval, hand-computed Holm and Wilson cases, and a clustered bootstrap whose
answer is known in closed form."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from core.stats import (MIN_N_CI, clopper_pearson, cluster_bootstrap_mean, holm, inconclusive, mcnemar_diff_ci,
                        mcnemar_exact, mcnemar_p, min_detectable_diff, pair_scores, paired_diff, wilson)


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
    assert r["test"] == "mcnemar_exact" and r["diff"] == pytest.approx(-0.10)
    assert r["p"] == pytest.approx(sps.binomtest(2, 14, 0.5).pvalue)
    assert r["ci95"] == pytest.approx(list(mcnemar_diff_ci(12, 2, 100))) and r["ci95"][1] < 0
    # the MDE is the normal-approximation formula with the paired sd
    sd = float(np.std(np.array(b) - np.array(a), ddof=1))
    assert r["mde"] == pytest.approx((sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * sd / 10)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 60)
    y = x + 0.5 + rng.normal(0, 0.1, 60)
    c = paired_diff(x, y)
    assert c["test"] == "paired_bootstrap" and c["ci95"][0] > 0.4 and c["p"] < 0.001
    tiny = paired_diff([1, 0, 1], [0, 0, 1])
    assert tiny["n"] == 3 < MIN_N_CI and all(math.isnan(v) for v in tiny["ci95"])


def test_identical_outputs_are_inconclusive_with_a_planning_mde():
    a = [1] * 6 + [0] * 6
    r = paired_diff(a, a)
    assert r["diff"] == 0 and r["ci95"] == [0.0, 0.0] and r["p"] == 1.0
    # n = 12 cannot detect anything under ~40 points (issue 12's quickstart cell)
    assert r["mde"] > 0.4 and inconclusive(r["diff"], r["ci95"], r["mde"])
    assert not inconclusive(-0.2, [-0.3, -0.1], 0.5)
    # every item wrong on both sides (a 135M model on GSM8K): still no evidence of no change
    zeros = paired_diff([0] * 8, [0] * 8)
    assert zeros["mde"] == pytest.approx((sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * math.sqrt(0.1 * 0.9) / math.sqrt(8))
    assert inconclusive(zeros["diff"], zeros["ci95"], zeros["mde"])


def test_min_detectable_diff_matches_scipy_normal():
    assert min_detectable_diff(0.5, 100, alpha=0.025) == pytest.approx(
        (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * 0.05)
    assert min_detectable_diff(0.5, 1) == math.inf


def test_pair_scores_counts_invalid_and_missing():
    base = {"a": 1.0, "b": None, "c": 0.0, "d": 1.0}
    cand = {"a": 0.0, "b": 1.0, "c": None, "e": 1.0}
    common, counts = pair_scores(base, cand)
    assert common == ["a"]
    assert counts == {"invalid_baseline": 1, "invalid_candidate": 1, "dropped_invalid": 2,
                      "missing_in_candidate": 1, "missing_in_baseline": 1}
