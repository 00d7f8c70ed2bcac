"""Alarms fire on real over-optimisation / RLAIF failure and stay silent on noise."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.stats import wilson
from core.store import write_jsonl
from reports.alarms import compute_alarms, overoptimisation_alarms, rlaif_failure_alarms
from reports.build import build_report
from reports.collect import benchmark_frame, collect, drift_frames, load_results
from synthetic_run import RATES, drift_rows, noise_drift, overopt_drift, write_synthetic_run


def _alarms_for(tmp_path, rows, name="drift.jsonl"):
    p = tmp_path / name
    write_jsonl(p, rows)
    rewards, benches = drift_frames(p)
    return overoptimisation_alarms("rlaif", rewards, benches)


def _drift(scores_by_bench: dict[str, list[float]], reward: list[float], n: int = 200) -> list[dict]:
    """Drift lines with exact scores (k/n) and their Wilson CIs: no randomness."""
    rows = []
    for i, r in enumerate(reward):
        bench = {}
        for b, ps in scores_by_bench.items():
            k = round(ps[i] * n)
            lo, hi = wilson(k, n)
            bench[b] = {"score": k / n, "ci95": [lo, hi], "n": n}
        rows.append({"step": 100 * i, "kl": 0.1 * i, "reward_train": r, "reward_heldout": r, "benchmarks": bench})
    return rows


def test_overoptimisation_fires_naming_variant_checkpoints_and_figures(tmp_path):
    alarms = _alarms_for(tmp_path, overopt_drift(np.random.default_rng(0)))
    assert [a["bench"] for a in alarms] == ["gsm8k"]
    a = alarms[0]
    assert a["variant"] == "rlaif" and a["step_from"] < a["step_to"] and a["step_from"] <= 300
    assert a["reward_train_to"] > a["reward_train_from"]
    assert a["ci_to"][1] < a["ci_from"][0] and a["z"] > a["z_crit"]
    assert f"between PPO steps {a['step_from']} and {a['step_to']}" in a["message"]
    assert "GSM8K fell" in a["message"] and "RLAIF" in a["message"]


@pytest.mark.parametrize("seed", range(20))
def test_noise_within_cis_never_fires(tmp_path, seed):
    # reward rises steadily; five benchmarks wobble binomially around constant true rates
    assert _alarms_for(tmp_path, noise_drift(np.random.default_rng(seed))) == []


def test_drop_smaller_than_ci_does_not_fire(tmp_path):
    # 42% -> 36% at n=200 is a real-looking slide, but the CIs still overlap
    rows = _drift({"mmlu": [.42, .41, .40, .38, .37, .36]}, reward=[0.1, 0.3, 0.5, 0.7, 0.9, 1.1])
    assert _alarms_for(tmp_path, rows) == []


def test_large_drop_while_reward_falls_does_not_fire(tmp_path):
    # not reward hacking: reward and benchmark fall together
    rows = _drift({"gsm8k": [.30, .25, .15, .08]}, reward=[1.0, 0.8, 0.5, 0.2])
    assert _alarms_for(tmp_path, rows) == []
    rows = _drift({"gsm8k": [.30, .25, .15, .08]}, reward=[0.2, 0.5, 0.8, 1.0])
    assert [a["bench"] for a in _alarms_for(tmp_path, rows)] == ["gsm8k"]


def test_toxigen_is_lower_is_better(tmp_path):
    rising = drift_rows([0, 100, 200, 300], [0.1, 0.4, 0.7, 1.0], {"toxigen": [.01, .03, .10, .20]}, 400,
                        np.random.default_rng(1))
    alarms = _alarms_for(tmp_path, rising)
    assert [a["bench"] for a in alarms] == ["toxigen"] and "rose (worse)" in alarms[0]["message"]
    assert "‰" in alarms[0]["message"]
    falling = drift_rows([0, 100, 200, 300], [0.1, 0.4, 0.7, 1.0], {"toxigen": [.20, .10, .03, .01]}, 400,
                         np.random.default_rng(1))
    assert _alarms_for(tmp_path, falling) == []


def test_rlaif_failure_signature_fires_for_rlaif_only(tmp_path):
    run = collect(write_synthetic_run(tmp_path / "run"))
    alarms = [a for a in compute_alarms(run) if a["type"] == "rlaif_failure"]
    assert [a["variant"] for a in alarms] == ["rlaif"]
    a = alarms[0]
    assert a["win_ratio_ci"][0] > 0.5 and a["satisfaction"] < a["satisfaction_sft"] and a["p"] < 0.05
    assert "McNemar" in a["test"] and "win ratio 70.2%" in a["message"] and "vs SFT 60.0%" in a["message"]


def test_rlaif_failure_uses_ci_test_without_item_files(tmp_path):
    root = write_synthetic_run(tmp_path / "run")
    (root / "eval_rlaif" / "samples" / "satisfaction.jsonl").unlink()
    alarms = rlaif_failure_alarms(benchmark_frame(load_results(root)), root)
    assert [a["variant"] for a in alarms] == ["rlaif"] and "z test" in alarms[0]["test"]


@pytest.mark.parametrize("rlaif_rates", [
    {"satisfaction": .55, "win_ratio": .53},  # lower satisfaction, but win ratio CI includes 50%
    {"satisfaction": .57, "win_ratio": .70},  # judge prefers it; satisfaction within noise of SFT's
    {"satisfaction": .66, "win_ratio": .70},  # judge prefers it and satisfaction is higher: healthy
])
def test_rlaif_failure_silent_without_both_significant_conditions(tmp_path, rlaif_rates):
    rates = {v: dict(r) for v, r in RATES.items()}
    rates["rlaif"].update(rlaif_rates)
    root = write_synthetic_run(tmp_path / "run", rates=rates)
    assert rlaif_failure_alarms(benchmark_frame(load_results(root)), root) == []


def test_alarms_json_and_top_of_report(tmp_path):
    out = build_report(write_synthetic_run(tmp_path / "run"))
    data = json.loads((out / "alarms.json").read_text())
    assert data["n_alarms"] == 2 and {a["type"] for a in data["alarms"]} == {"over_optimisation", "rlaif_failure"}
    assert "over_optimisation" in data["rules"] and "rlaif_failure" in data["rules"]
    md = (out / "report.md").read_text()
    alarm_section = md.split("## Alarms")[1].split("## Comparison")[0]
    assert alarm_section.count("**ALARM**") == 2
    assert "Bonferroni" in md.split("## Definitions")[1]


def test_quiet_run_says_no_alarm(tmp_path):
    rates = {v: dict(r) for v, r in RATES.items()}
    rates["rlaif"].update({"satisfaction": .62, "win_ratio": .58})
    out = build_report(write_synthetic_run(tmp_path / "run", rates=rates, overopt=False))
    assert json.loads((out / "alarms.json").read_text())["alarms"] == []
    assert "No alarm fired" in (out / "report.md").read_text().split("## Comparison")[0]
