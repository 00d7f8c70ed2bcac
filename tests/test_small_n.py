"""Issue 19 item 4: paired tests that hold their level at small n, and MDEs that deliver their power.

Every claim is a fixed-seed simulation, checked at a tolerance its number of repetitions supports
(3 standard errors of a rate, or the issue's +-3 pt on power with repetitions chosen so the
Monte Carlo error is under a third of that).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from hrlaif.core.paired_tests import mcnemar_power, signflip_p
from hrlaif.core.stats import min_detectable_diff, paired_diff
from hrlaif.reports.drift import reward_change


def _rate_ok(rate: float, reps: int, alpha: float = 0.05) -> bool:
    return rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)


@pytest.mark.parametrize("n", [6, 8])
def test_held_out_reward_rose_test_holds_its_level_at_small_n(n):
    """The alarm's 'reward rose' test (hrlaif.reports.drift.reward_change) on rewards that did not move:
    the percentile bootstrap rejected 11% of the time at n = 8; the sign-flip test <= 5%."""
    rng = np.random.default_rng(100 + n)
    reps, rejected = 600, 0
    for _ in range(reps):
        r0, r1 = rng.normal(0, 1, n), rng.normal(0, 1, n)
        items = {0: {"heldout": {f"h{i}": {"reward": float(x)} for i, x in enumerate(r0)}},
                 1: {"heldout": {f"h{i}": {"reward": float(x)} for i, x in enumerate(r1)}}}
        rejected += reward_change(0, 1, pd.DataFrame(), items)["p"] < 0.05
    assert _rate_ok(rejected / reps, reps), rejected / reps


def test_paired_continuous_p_is_the_exact_sign_flip_at_n6():
    """The issue's kind of example: at n = 6 the percentile bootstrap said p = 0.012 here, a paired
    t says 0.074; the exact sign-flip test finds 6 of the 64 sign patterns as extreme: p = 0.094."""
    d = np.array([0.9, 1.1, 0.4, 1.6, 0.2, -0.35])
    r = paired_diff(np.zeros(6), d)
    assert r["p"] == pytest.approx(6 / 64) and r["test"] == "signflip_exact"
    assert sps.ttest_1samp(d, 0).pvalue > 0.05
    # its CI is the paired t interval below 30 items: it includes 0 as the test does not reject
    assert r["ci95"][0] < 0 < r["ci95"][1]


@pytest.mark.parametrize("n", [5, 8, 12, 13, 30, 200])
def test_sign_flip_type_one_error_at_most_alpha(n):
    rng = np.random.default_rng(n)
    reps = 3000
    d = rng.standard_t(3, (reps, n))  # heavy tails: the t test's normal theory does not hold
    assert _rate_ok(float(np.mean(signflip_p(d) < 0.05)), reps)


@pytest.mark.parametrize("n", [12, 30, 100, 1000])
def test_continuous_mde_delivers_its_stated_power(n):
    """At the reported MDE the reported test (sign-flip) rejects 80% +- 3 pt of the time."""
    sd = 1.0
    mde = min_detectable_diff(sd, n, 0.025)  # two-sided 5%, as paired_diff reports it
    rng = np.random.default_rng(1000 + n)
    reps = 3000 if n < 1000 else 2000
    power = float(np.mean(signflip_p(rng.normal(mde, sd, (reps, n))) < 0.05))
    assert abs(power - 0.8) <= 0.03, (n, mde, power)


def _binary_cell_p(b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """paired_diff's 0/1 p (max of exact McNemar and Tango at 0), vectorised over data sets."""
    d, k = b + c, np.minimum(b, c)
    exact = np.where(d > 0, np.minimum(1.0, 2 * sps.binom.cdf(k, d, 0.5)), 1.0)
    tango = 2 * sps.norm.sf(np.where(d > 0, np.abs(c - b) / np.sqrt(np.maximum(d, 1)), 0.0))
    return np.maximum(exact, tango)


@pytest.mark.parametrize("n", [12, 30, 100, 1000])
@pytest.mark.parametrize("psi", [0.1, 0.3, 0.6])
def test_binary_mde_delivers_its_stated_power(n, psi):
    """0/1 scores with a share psi of discordant items: at the reported MDE, 80% +- 3 pt; where the
    MDE is infinite, even every discordant item being better is detected less than 80% of the time."""
    sd = math.sqrt(psi)
    mde = min_detectable_diff(sd, n, 0.025, binary=True)
    delta = mde if math.isfinite(mde) else psi
    rng = np.random.default_rng(int(n * 10 + psi * 10))
    counts = rng.multinomial(n, [(psi - delta) / 2, (psi + delta) / 2, 1 - psi], size=4000)
    power = float(np.mean(_binary_cell_p(counts[:, 0], counts[:, 1]) < 0.05))
    if math.isfinite(mde):
        assert abs(power - 0.8) <= 0.03, (n, psi, mde, power)
        assert paired_diff([0] * 5 + [1] * 5, [1] * 10)["mde"] > 0  # the cell reports it
    else:
        assert power < 0.8 and mcnemar_power(psi, psi, n) < 0.8


def test_cell_mde_is_the_binary_one_for_binary_scores():
    a = [0, 1] * 50
    b = [1, 1] * 50
    r = paired_diff(a, b)
    from hrlaif.core.stats import paired_sd
    assert r["mde"] == pytest.approx(min_detectable_diff(paired_sd(a, b), 100, 0.025, binary=True))


def test_alarm_power_accounts_for_both_conditions(tmp_path):
    """The over-optimisation alarm needs the held-out reward to rise AND a benchmark to drop. At the
    Alarm power table's two MDEs, both hold 80% +- 3 pt of the time (simulated with the rule's own
    tests); the old table gave each condition 80% alone, so the alarm fired about 64% of the time."""
    from synthetic_run import write_synthetic_run

    from hrlaif.reports.collect import collect
    from hrlaif.reports.drift import drift_power, drift_tests, read_drift_items

    root = write_synthetic_run(tmp_path / "run")
    run = collect(root)
    rewards, benches = run.drift["rlaif"]
    items = read_drift_items(root / "ppo_rlaif")
    tests = drift_tests(rewards, benches, items)
    power = {r["measure"]: r for r in drift_power("rlaif", rewards, benches, items, tests=tests)}
    gsm, rew = power["GSM8K change vs step 0"], power["held-out reward rise vs step 0"]
    assert gsm["power"] == rew["power"] == pytest.approx(math.sqrt(0.8))
    ts = [t for t in tests if t["bench"] == "gsm8k"]
    sd_b = float(np.sqrt(np.mean([t["sd"] ** 2 for t in ts])))
    sd_r = float(np.sqrt(np.mean([t["reward"]["sd"] ** 2 for t in ts])))
    reps, rng = 3000, np.random.default_rng(19)
    # condition 1: the held-out reward rose (sign-flip p < 0.05, mean up) on n prompts
    d = rng.normal(rew["mde"], sd_r, (reps, rew["n"]))
    rose = (signflip_p(d) < 0.05) & (d.mean(axis=1) > 0)
    # condition 2: the benchmark dropped at the first Holm step's level (McNemar + Tango) on n items
    psi, delta = sd_b ** 2, gsm["mde"]
    counts = rng.multinomial(gsm["n"], [(psi + delta) / 2, (psi - delta) / 2, 1 - psi], size=reps)  # worse, better
    dropped = (_binary_cell_p(counts[:, 0], counts[:, 1]) < gsm["alpha"]) & (counts[:, 0] > counts[:, 1])
    assert abs(float(np.mean(rose & dropped)) - 0.8) <= 0.03
    assert float(np.mean(rose)) == pytest.approx(math.sqrt(0.8), abs=0.03)
