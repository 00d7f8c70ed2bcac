"""`hrlaif run` end to end on the tiny model with the real embedded judge: every stage, the
report with three rows, drift plots for both variants, stage skipping and --from.

The run gets a fresh, empty HRLAIF_CACHE: no judge answer and no evaluation output of an earlier
run (or another test) can stand in for the real judge and the real evaluation."""
from __future__ import annotations

import csv
import json
import time

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory, run_cli):
    root = tmp_path_factory.mktemp("pipeline")
    cfg = root / "tiny.yaml"
    cfg.write_text(f"""
model: {tiny_model_dir}
seed: 3
sft: {{max_steps: 2, batch_size: 2, max_len: 64}}
sample: {{limit: 6, k: 2, max_new_tokens: 8, batch_size: 6}}
label: {{hh_limit: 0}}
redteam: {{limit: 2, max_new_tokens: 8}}
harm_judge: {{max_tokens: 32}}
reward_model: {{epochs: 1, max_len: 64, heldout_frac: 0.34, groups_per_step: 2}}
ppo: {{steps: 2, batch_size: 2, mini_batch_size: 2, max_new_tokens: 8, save_every: 1, drift_every: 1,
       drift_benchmarks: [mmlu], drift_limit: 2, heldout_limit: 2}}
eval:
  benchmarks: [mmlu, gsm8k, toxigen, satisfaction]
  limit: 3
  max_gen_toks: {{gsm8k: 8, toxigen: 8, satisfaction: 8}}
""")
    out = root / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HRLAIF_CACHE", str(root / "cache"))
        t0 = time.time()
        code, stdout, err = run_cli("run", cfg, "--out", out)
        assert code == 0, err[-3000:]
        yield cfg, out, stdout, time.time() - t0


def test_every_stage_finished_with_manifest(tiny_run):
    from hrlaif.harness.pipeline import STAGES
    _, out, stdout, _ = tiny_run
    for stage in STAGES:
        m = json.loads((out / stage / "manifest.json").read_text())
        assert m["status"] == "done" and m["wall_time_s"] >= 0 and "torch" in m["versions"], stage
    assert "run finished" in stdout and "report.md" in stdout


def test_the_real_judge_served_every_judging_stage_and_the_evaluation_ran(tiny_run):
    _, out, _, _ = tiny_run
    usage = json.loads((out / "judge_usage.json").read_text())
    # The cache was empty, so every answer came from the embedded llama.cpp server during this run: each
    # judging stage asked, and what it did not send itself an earlier stage of this run had sent (the tiny
    # policies barely move under PPO, so RLAIF's and HRLAIF's evaluations can ask exactly SFT's questions).
    for stage in ("redteam", "label_basic", "label_hybrid", "eval_sft", "eval_rlaif", "eval_hrlaif"):
        served = {r: u for r, u in usage["stages"][stage].items() if u}
        assert served and sum(u["requests"] for u in served.values()) > 0, stage
        assert all(u["http_calls"] + u["cache_hits"] >= u["requests"] for u in served.values()), (stage, served)
        if stage in ("redteam", "label_basic", "eval_sft"):  # the first of each judge role: no cache to hit yet
            assert sum(u["http_calls"] for u in served.values()) > 0, (stage, served)
            assert sum(u["completion_tokens"] for u in served.values()) > 0, (stage, served)
    assert usage["total"]["http_calls"] > 0 and usage["total"]["prompt_tokens"] > 0
    summary = json.loads((out / "label_basic" / "summary.json").read_text())
    assert summary["judge"]["embedded"] and summary["judge"]["startup_s"] > 0  # the real server, started here
    for variant in ("sft", "rlaif", "hrlaif"):
        res = json.loads((out / f"eval_{variant}" / "results.json").read_text())
        assert not any(b.get("cached") for b in res["benchmarks"].values()), variant  # outputs computed here
        sat = [json.loads(x) for x in (out / f"eval_{variant}" / "samples" / "satisfaction.jsonl").read_text()
               .splitlines()]
        assert len(sat) == 3 and any(r["by"] == "judge" for r in sat), variant  # graded by the judge


def test_report_has_three_rows_and_drift_plots(tiny_run):
    _, out, _, _ = tiny_run
    rep = out / "report"
    rows = list(csv.DictReader(open(rep / "comparison.csv", encoding="utf-8")))
    assert [r[next(iter(r))] for r in rows] == ["SFT", "RLAIF", "HRLAIF"]
    md = (rep / "report.md").read_text(encoding="utf-8")
    for col in ("MMLU", "GSM8K", "ToxiGen", "Satisfaction", "Win ratio"):
        assert col in md
    for v in ("rlaif", "hrlaif"):
        assert (rep / f"drift_{v}.png").stat().st_size > 5000
        drift = [json.loads(l) for l in (out / f"ppo_{v}" / "drift.jsonl").read_text().splitlines()]
        assert drift and {"step", "kl", "reward_train", "reward_heldout", "benchmarks"} <= set(drift[-1])
    assert (rep / "alarms.json").exists() and (rep / "report.html").exists()
    # both variants trained on the same samples: labels differ only in mode
    basic = [json.loads(l) for l in (out / "label_basic" / "labels.jsonl").read_text().splitlines()]
    hybrid = [json.loads(l) for l in (out / "label_hybrid" / "labels.jsonl").read_text().splitlines()]
    assert [b["id"] for b in basic] == [h["id"] for h in hybrid]
    assert {b["mode"] for b in basic} == {"basic"} and {h["mode"] for h in hybrid} == {"hybrid"}
    # the win ratio of RLAIF is measured against the SFT model
    res = json.loads((out / "eval_rlaif" / "results.json").read_text())
    assert "win_ratio" in res["benchmarks"] and res["benchmarks"]["win_ratio"]["n"] == 3


def test_the_judge_audits_are_recorded_and_reported(tiny_run):
    """Each judging stage records its judge's audit (hrlaif/core/judge_audit.py); the report shows them near its top."""
    _, out, _, _ = tiny_run
    for stage, role, pairs in (("label_basic", "labelling", 6), ("label_hybrid", "labelling", None),
                               ("eval_rlaif", "evaluation", 3), ("eval_hrlaif", "evaluation", 6)):
        a = json.loads((out / stage / "judge_audit.json").read_text())
        assert a["role"] == role, stage
        if pairs is not None:  # 6 prompts x 1 pair (K=2); 3 items vs SFT (+ 3 vs RLAIF for HRLAIF)
            assert a["pairs"] == pairs and 2 * pairs == a["first_slot_rate"]["n"] + a["invalid_verdicts"], stage
    assert json.loads((out / "label_basic" / "judge_audit.json").read_text())["repeatability"]["n"] == 6
    assert json.loads((out / "eval_hrlaif" / "judge_audit.json").read_text())["repeatability"]["n"] == 6
    md = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert md.index("## Judge audit") < md.index("## Comparison") and "label_basic · labelling" in md


def test_rerun_skips_unchanged_stages_and_from_reruns(tiny_run, run_cli):
    from hrlaif.harness.pipeline import STAGES
    cfg, out, _, _ = tiny_run
    manifests = {s: (out / s / "manifest.json").read_text() for s in STAGES if s != "report"}
    code, stdout, err = run_cli("run", cfg, "--out", out, "--resume")
    assert code == 0, err[-2000:]
    assert stdout.count("skipped (unchanged)") == len(STAGES) - 1  # all but the report, always rebuilt
    # nothing re-ran: no stage but the report started, no manifest was rewritten
    assert [line.split("]")[1].split()[0] for line in stdout.splitlines() if line.endswith("running ...")] \
        == ["report"]
    assert {s: (out / s / "manifest.json").read_text() for s in manifests} == manifests
    assert list(json.loads((out / "run_summary.json").read_text())["stages_s"]) == ["report"]
    before = json.loads((out / "eval_hrlaif" / "manifest.json").read_text())["finished"]
    code, stdout, err = run_cli("run", cfg, "--out", out, "--from", "eval_hrlaif")
    assert code == 0, err[-2000:]
    assert "eval_hrlaif  running" in stdout and "ppo_hrlaif   skipped" in stdout
    assert json.loads((out / "eval_hrlaif" / "manifest.json").read_text())["finished"] >= before


def test_only_requires_finished_upstream(tmp_path, run_cli):
    code, _, err = run_cli("run", "--out", tmp_path / "empty", "--only", "rm_basic")
    assert code == 2 and "has not finished" in err


def test_trained_models_are_known_by_the_hash_of_the_weights_they_load_as(tiny_run):
    """SFT and PPO record their in-memory weights hash as their output directory's identity, so PPO's
    drift points and the evaluations share cached outputs of the same weights; the recorded hash must be
    the hash of the model loaded from those files (else a cache hit would serve another model's outputs)."""
    from transformers import AutoModelForCausalLM

    from hrlaif.core.models import dir_weights_hash, weights_hash
    _, out, _, _ = tiny_run
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HRLAIF_CACHE", str(out.parent / "cache"))
        for d in (out / "sft" / "model", out / "ppo_rlaif" / "final", out / "ppo_hrlaif" / "final"):
            memo = dir_weights_hash(d)
            assert memo == weights_hash(AutoModelForCausalLM.from_pretrained(d)), d
