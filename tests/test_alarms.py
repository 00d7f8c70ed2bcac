"""Alarms fire on real over-optimisation / RLAIF failure and stay silent on noise; each checkpoint is
paired with step 0 item by item, and "reward rose" is read from the held-out prompts."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps
from synthetic_run import RATES, drift_run, noise_drift, overopt_drift, write_drift, write_synthetic_run

from hrlaif.core.store import read_jsonl, write_jsonl
from hrlaif.reports.alarms import compute_alarms, rlaif_failure_alarms
from hrlaif.reports.build import build_report
from hrlaif.reports.collect import benchmark_frame, collect, drift_frames, load_results
from hrlaif.reports.drift import gold_proxy_frame, overoptimisation_alarms, read_drift_items


def _alarms(tmp_path, run, items=True, name="ppo"):
    ppo = write_drift(tmp_path / name, run, items)
    rewards, benches = drift_frames(ppo / "drift.jsonl")
    return overoptimisation_alarms("rlaif", rewards, benches, read_drift_items(ppo))


def _run(scores: dict[str, list[list[float]]], heldout: list[list[float]], train=None, kl_step=0.1):
    """Drift files from exact per-item scores per checkpoint and per-prompt held-out rewards."""
    rows, items = [], {}
    for t, rew in enumerate(heldout):
        per = {b: [{"doc_id": f"{b}/{i}", "score": s} for i, s in enumerate(v[t])] for b, v in scores.items()}
        per["heldout"] = [{"id": f"h{i}", "reward": r, "response": "x", "gold": None} for i, r in enumerate(rew)]
        items[100 * t] = per
        bench = {b: {"score": float(np.mean([x for x in v[t] if x is not None])), "ci95": [0.0, 1.0], "n": len(v[t])}
                 for b, v in scores.items()}
        rows.append({"step": 100 * t, "kl": kl_step * t, "reward_train": (train or [0.0] * len(heldout))[t],
                     "reward_heldout": float(np.mean(rew)), "benchmarks": bench})
    return rows, items


def test_overoptimisation_fires_paired_naming_variant_checkpoints_and_figures(tmp_path):
    alarms = _alarms(tmp_path, overopt_drift(np.random.default_rng(0)))
    assert [a["bench"] for a in alarms] == ["gsm8k"]
    a = alarms[0]
    assert a["variant"] == "rlaif" and a["step_from"] == 0 and a["first_step"] <= 500
    assert a["paired"] and a["test"] == "mcnemar_exact+tango" and a["n"] == 200
    assert a["reward_paired"] and a["reward_heldout_to"] > a["reward_heldout_from"] and a["reward_p"] < 0.05
    assert a["diff"] < 0 and a["ci"][1] < 0 and a["p_holm"] < 0.01
    assert f"at PPO step {a['step_to']}" in a["message"] and "vs step 0" in a["message"]
    assert "GSM8K fell" in a["message"] and "RLAIF" in a["message"] and "on the same 200 items" in a["message"]
    assert "paired over 32 held-out prompts" in a["message"]


def test_alarm_p_is_mcnemar_on_the_paired_items(tmp_path):
    """Independent check: the p of the fired checkpoint is the larger of scipy's binomial test on the
    discordant items and the normal (score) McNemar test, as every paired 0/1 cell."""
    run = overopt_drift(np.random.default_rng(0))
    a = _alarms(tmp_path, run)[0]
    s0 = {r["doc_id"]: r["score"] for r in run[1][0]["gsm8k"]}
    s1 = {r["doc_id"]: r["score"] for r in run[1][a["step_to"]]["gsm8k"]}
    b = sum(s0[k] == 1 and s1[k] == 0 for k in s0)
    c = sum(s0[k] == 0 and s1[k] == 1 for k in s0)
    exact = sps.binomtest(min(b, c), b + c, 0.5).pvalue
    assert a["p"] == pytest.approx(max(exact, 2 * sps.norm.sf(abs(c - b) / (b + c) ** 0.5)))


@pytest.mark.parametrize("seed", range(20))
def test_noise_never_fires(tmp_path, seed):
    # held-out reward rises steadily; five benchmarks re-drawn around constant rates, paired with step 0
    assert _alarms(tmp_path, noise_drift(np.random.default_rng(seed))) == []


def test_pairing_detects_a_drop_the_unpaired_cis_miss(tmp_path):
    """MMLU 42% -> 34% at n=200: the CIs overlap (the old unpaired rule is silent), but it is the same
    items and 16 of them went 1 -> 0 with none 0 -> 1: exact McNemar p = 2 / 2^16, the score test's
    2 * sf(16 / 4) the larger."""
    s0 = [1.0] * 84 + [0.0] * 116
    s1 = [0.0] * 16 + [1.0] * 68 + [0.0] * 116
    rew = [[0.1 * i for i in range(16)], [0.1 * i + 0.5 for i in range(16)]]
    rows, items = _run({"mmlu": [s0, s1]}, rew)
    alarms = _alarms(tmp_path, (rows, items))
    assert [a["bench"] for a in alarms] == ["mmlu"]
    assert alarms[0]["p"] == pytest.approx(max(2 / 2 ** 16, 2 * sps.norm.sf(4.0)))
    assert alarms[0]["diff"] == pytest.approx(-0.08)
    # the same numbers without per-item files: the unpaired fallback cannot tell
    for r, k in zip(rows, (84, 68)):
        from hrlaif.core.stats import wilson
        r["benchmarks"]["mmlu"]["ci95"] = list(wilson(k, 200))
    assert _alarms(tmp_path, (rows, items), items=False, name="legacy") == []


def test_reward_is_read_from_heldout_prompts_not_the_training_batch(tmp_path):
    """The quickstart pattern: training-batch reward falls 1.77 -> 1.06 -> 0.56 while the held-out reward
    rises. GSM8K collapses: the alarm fires (the old rule, reading the training batch, never did)."""
    s = [[1.0] * 60 + [0.0] * 40, [1.0] * 40 + [0.0] * 60, [1.0] * 20 + [0.0] * 80]
    rising = [[0.2 * i for i in range(12)], [0.2 * i + 0.4 for i in range(12)], [0.2 * i + 0.9 for i in range(12)]]
    alarms = _alarms(tmp_path, _run({"gsm8k": s}, rising, train=[1.77, 1.06, 0.56]))
    assert [a["bench"] for a in alarms] == ["gsm8k"] and a_reward_rose(alarms[0])
    # and the mirror image: training reward rises, held-out reward flat -> reward hacking is not shown
    flat = [[0.2 * i + (0.01 if t % 2 else 0.0) * (i % 3 - 1) for i in range(12)] for t in range(3)]
    assert _alarms(tmp_path, _run({"gsm8k": s}, flat, train=[0.5, 1.0, 1.5]), name="flat") == []


def a_reward_rose(a: dict) -> bool:
    return a["reward_heldout_to"] > a["reward_heldout_from"] and a["reward_paired"]


def test_invalid_drift_items_are_excluded_from_both_sides_and_counted(tmp_path):
    s0 = [1.0] * 84 + [0.0] * 116
    s1 = [0.0] * 16 + [1.0] * 68 + [0.0] * 116
    s1[100], s0[150] = None, None  # invalid at one checkpoint each: neither item is paired
    rew = [[0.1 * i for i in range(16)], [0.1 * i + 0.5 for i in range(16)]]
    a = _alarms(tmp_path, _run({"mmlu": [s0, s1]}, rew))[0]
    assert a["n"] == 198 and a["excluded_invalid"] == 2 and "2 invalid excluded" in a["message"]


def test_large_drop_while_heldout_reward_falls_does_not_fire(tmp_path):
    s = [[1.0] * 60 + [0.0] * 40, [1.0] * 30 + [0.0] * 70]
    falling = [[1.0 + 0.1 * i for i in range(12)], [0.2 + 0.1 * i for i in range(12)]]
    assert _alarms(tmp_path, _run({"gsm8k": s}, falling)) == []


def test_toxigen_is_lower_is_better(tmp_path):
    rng = np.random.default_rng(1)
    steps, reward = [0, 100, 200, 300], [0.1, 0.4, 0.7, 1.0]
    alarms = _alarms(tmp_path, drift_run(rng, steps, {"toxigen": [.01, .03, .10, .20]}, 400, reward))
    assert [a["bench"] for a in alarms] == ["toxigen"] and "rose (worse)" in alarms[0]["message"]
    assert "‰" in alarms[0]["message"]
    falling = drift_run(rng, steps, {"toxigen": [.20, .10, .03, .01]}, 400, reward)
    assert _alarms(tmp_path, falling, name="falling") == []


def test_legacy_drift_log_without_item_files_still_alarms_unpaired(tmp_path):
    alarms = _alarms(tmp_path, overopt_drift(np.random.default_rng(0)), items=False)
    assert [a["bench"] for a in alarms] == ["gsm8k"] and not alarms[0]["paired"]
    assert "unpaired z test" in alarms[0]["message"] and "no per-prompt file" in alarms[0]["message"]


def test_gold_proxy_frame_from_heldout_verdicts(tmp_path):
    run = overopt_drift(np.random.default_rng(0))
    ppo = write_drift(tmp_path / "ppo", run)
    rewards, _ = drift_frames(ppo / "drift.jsonl")
    gp = gold_proxy_frame(rewards, read_drift_items(ppo))
    assert list(gp.step) == [100 * i for i in range(10)]
    for r in gp.itertuples():
        rows = read_jsonl(ppo / "drift" / f"step_{r.step}" / "heldout.jsonl")
        golds = [x["gold"] for x in rows if x["gold"] is not None]
        assert r.gold == pytest.approx(np.mean(golds)) and r.n == len(golds) and r.invalid == len(rows) - len(golds)
        assert r.reward == pytest.approx(np.mean([x["reward"] for x in rows]))
        assert r.gold_lo <= r.gold <= r.gold_hi
    assert gp.sqrt_kl.is_monotonic_increasing


def test_rlaif_failure_signature_fires_for_rlaif_only(tmp_path):
    run = collect(write_synthetic_run(tmp_path / "run", grader=False))  # an independent evaluation judge
    alarms = [a for a in compute_alarms(run) if a["type"] == "rlaif_failure"]
    assert [a["variant"] for a in alarms] == ["rlaif"]
    a = alarms[0]
    assert a["win_ratio_ci"][0] > 0.5 and a["satisfaction"] < a["satisfaction_sft"] and a["p"] < 0.05
    assert "McNemar" in a["test"] and "vs SFT 60.1%" in a["message"]
    # the two invalid verdicts of each side are excluded from the pairs and counted
    assert a["n"] == 238 and a["excluded_invalid"] == 2 and "2 with an invalid verdict excluded" in a["test"]


def test_rlaif_failure_excludes_invalid_verdicts_instead_of_scoring_them_0(tmp_path):
    """RLAIF's satisfaction equals SFT's on every validly judged prompt, but 40 of its verdicts are
    invalid. Counted as 0 (the old rule) that is a significant 'drop'; excluded, there is none."""
    rates = {v: dict(r) for v, r in RATES.items()}
    root = write_synthetic_run(tmp_path / "run", rates=rates)
    sft = read_jsonl(root / "eval_sft" / "samples" / "satisfaction.jsonl")
    p = root / "eval_rlaif" / "samples" / "satisfaction.jsonl"
    rows = read_jsonl(p)
    flipped = 0
    for r, s in zip(rows, sft):
        r["score"] = s["score"]
        if s["score"] == 1 and flipped < 40:
            r["score"], flipped = None, flipped + 1
    write_jsonl(p, rows)
    alarms = rlaif_failure_alarms(benchmark_frame(load_results(root)), root)
    assert alarms == []


def test_rlaif_failure_uses_ci_test_without_item_files(tmp_path):
    root = write_synthetic_run(tmp_path / "run", grader=False)
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


def test_alarms_json_power_and_top_of_report(tmp_path):
    out = build_report(write_synthetic_run(tmp_path / "run", grader=False))
    data = json.loads((out / "alarms.json").read_text())
    assert data["n_alarms"] == 2 and {a["type"] for a in data["alarms"]} == {"over_optimisation", "rlaif_failure"}
    assert "over_optimisation" in data["rules"] and "rlaif_failure" in data["rules"]
    # every alarm condition has its minimum detectable effect at the run's sizes
    power = {(p["alarm"], p["variant"], p["measure"]): p for p in data["power"]}
    gsm = power[("over_optimisation", "rlaif", "GSM8K change vs step 0")]
    assert gsm["n"] == 200 and gsm["paired"] and 0 < gsm["mde"] < 0.3
    assert gsm["alpha"] == pytest.approx(0.01 / 27)  # 9 checkpoints x 3 benchmarks
    assert power[("over_optimisation", "rlaif", "held-out reward rise vs step 0")]["n"] == 32
    sat = power[("rlaif_failure", "rlaif", "satisfaction drop vs SFT")]
    assert sat["n"] == 238 and sat["alpha"] == 0.05
    md = (out / "report.md").read_text()
    alarm_section = md.split("## Alarms")[1].split("## Comparison")[0]
    assert alarm_section.count("**ALARM**") == 2
    table = md.split("## Alarm power")[1].split("## ")[0]
    assert "| Over-optimisation · RLAIF · GSM8K change vs step 0 | 200 |" in table and "pt | paired |" in table
    assert "Holm" in md.split("## Definitions")[1] and "held-out prompts" in md.split("## Definitions")[1]


def test_quiet_run_says_no_alarm(tmp_path):
    rates = {v: dict(r) for v, r in RATES.items()}
    rates["rlaif"].update({"satisfaction": .62, "win_ratio": .58})
    out = build_report(write_synthetic_run(tmp_path / "run", rates=rates, overopt=False))
    assert json.loads((out / "alarms.json").read_text())["alarms"] == []
    assert "No alarm fired" in (out / "report.md").read_text().split("## Comparison")[0]
