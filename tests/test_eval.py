"""Evaluation core end to end with the tiny model: outputs, reproducibility, cache, data sources."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hrlaif.evalsets.kinds import summarize
from hrlaif.evalsets.registry import metric

FAST = ["--max-gen-toks", "gsm8k=16,humaneval=16,toxigen=8"]


def _recompute(out: Path) -> dict:
    res = json.loads((out / "results.json").read_text())
    for name, r in res["benchmarks"].items():
        rows = [json.loads(l) for l in (out / "samples" / f"{name}.jsonl").read_text().splitlines()]
        assert rows and all({"doc_id", "target", "output", "score"} <= set(x) for x in rows)
        assert len({x["doc_id"] for x in rows}) == len(rows), f"{name}: doc_ids must be unique"
        again = summarize(metric(name), rows)
        assert again["score"] == pytest.approx(r["score"]), name
        assert again["n"] == r["n"]
        assert again["ci95"] == pytest.approx(r["ci95"])
        valid = [x["score"] for x in rows if x["score"] is not None]
        scale = 1000.0 if name == "toxigen" else 1.0
        if name != "humaneval":  # humaneval averages per task first (n=1 here, so equal anyway)
            assert r["score"] == pytest.approx(scale * sum(valid) / len(valid))
    return res


@pytest.fixture(scope="module")
def embedded_eval(tiny_model_dir, tiny_classifier_dir, tmp_path_factory, run_cli):
    out = tmp_path_factory.mktemp("eval") / "out"
    t0 = time.time()
    code, stdout, err = run_cli("eval", "--model", tiny_model_dir, "--limit", "4", "--out", out,
                                "--benchmarks", "ceval,mmlu,gsm8k,humaneval,toxigen",
                                "--toxicity-classifier", f"hf:{tiny_classifier_dir}", "--no-cache", *FAST)
    assert code == 0, err
    return out, time.time() - t0, stdout


def test_embedded_results_have_every_field(embedded_eval, tiny_model_dir):
    out, _, stdout = embedded_eval
    res = _recompute(out)
    assert set(res["benchmarks"]) == {"ceval", "mmlu", "gsm8k", "humaneval", "toxigen"}
    for name, r in res["benchmarks"].items():
        assert {"metric", "score", "n", "ci95", "source", "breakdown", "definition"} <= set(r)
        assert r["n"] == 4 and r["source"] == "embedded"
        assert r["ci95"][0] <= r["score"] <= r["ci95"][1] or name == "toxigen"
    assert len(res["model"]["weights_sha"]) == 16 and res["model"]["path"] == str(tiny_model_dir)
    # --limit takes items round-robin across subjects: 4 items over 3 subjects
    assert sorted(r["n"] for r in res["benchmarks"]["mmlu"]["breakdown"].values()) == [1, 1, 2]
    assert res["benchmarks"]["gsm8k"]["metrics"]["exact_match_strict"]["n"] == 4
    assert res["benchmarks"]["toxigen"]["metric"] == "toxicity_permille"
    assert "hf:" in res["benchmarks"]["toxigen"]["extra"]["classifier"]
    # the tiny model has the SmolLM2 chat template: HumanEval used lm-eval's instruct protocol
    he = res["benchmarks"]["humaneval"]["extra"]
    assert he["chat_template"] is True and he["lm_eval_task"] == "humaneval_instruct"
    assert res["benchmarks"]["toxigen"]["extra"]["chat_template"] is False  # continuation prompts
    # --max-gen-toks reached every generating benchmark (16 tokens at most, not the specs' 256/320)
    assert res["config"]["max_gen_toks"] == {"gsm8k": 16, "humaneval": 16, "toxigen": 8}
    assert "mmlu" in stdout and "n=4" in stdout


def test_rerun_hits_cache_and_loads_no_model(embedded_eval, tiny_model_dir, tiny_classifier_dir, tmp_path, run_cli,
                                            monkeypatch):
    # Seed the cache with the first run's config (the fixture used --no-cache on purpose).
    args = ["eval", "--model", tiny_model_dir, "--limit", "4", "--benchmarks", "ceval,mmlu,gsm8k,humaneval,toxigen",
            "--toxicity-classifier", f"hf:{tiny_classifier_dir}", *FAST]
    assert run_cli(*args, "--out", tmp_path / "a")[0] == 0

    # What makes a cached re-run fast is that it never loads a model; assert that rather than a
    # wall time (bench/eval_speed.py prints the cached re-run's time).
    def no_loading(*a, **kw):
        raise AssertionError("a cached re-run loaded a model")

    monkeypatch.setattr("hrlaif.core.models.load_causal_lm", no_loading)
    monkeypatch.setattr("hrlaif.evalsets.toxicity.make_classifier", no_loading)
    code, stdout, _ = run_cli(*args, "--out", tmp_path / "b")
    assert code == 0 and stdout.count("(cached)") == 5
    a = json.loads((tmp_path / "a" / "results.json").read_text())["benchmarks"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["benchmarks"]
    assert {k: v["score"] for k, v in a.items()} == {k: v["score"] for k, v in b.items()}


def test_cache_key_includes_weights(tiny_model_dir, tmp_path, run_cli, monkeypatch):
    """Two checkpoints with the same tokenizer and config never share cached outputs."""
    from hrlaif.core.models import build_tiny_model

    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "cache"))  # a fresh cache: no earlier run's outputs
    other = build_tiny_model(tmp_path / "other", seed=7)
    args = ["eval", "--benchmarks", "mmlu", "--limit", "3"]
    assert run_cli(*args, "--model", tiny_model_dir, "--out", tmp_path / "x")[0] == 0
    code, stdout, _ = run_cli(*args, "--model", other, "--out", tmp_path / "y")
    assert code == 0 and "(cached)" not in stdout
    def ll(d):
        return [json.loads(line)["loglikelihoods"] for line in (d / "samples" / "mmlu.jsonl").read_text().splitlines()]

    assert ll(tmp_path / "x") != ll(tmp_path / "y")


def test_shared_data_limit_30_is_reproducible(shared_data, tiny_model_dir, tiny_classifier_dir, tmp_path, run_cli):
    out = tmp_path / "shared"
    code, _, err = run_cli("eval", "--model", tiny_model_dir, "--data-dir", shared_data, "--limit", "30",
                           "--benchmarks", "ceval,mmlu,gsm8k,toxigen", "--out", out,
                           "--toxicity-classifier", f"hf:{tiny_classifier_dir}", "--batch-size", "16", *FAST)
    assert code == 0, err
    res = _recompute(out)
    for name in ("ceval", "mmlu", "gsm8k", "toxigen"):
        assert res["benchmarks"][name]["n"] == 30
        assert res["benchmarks"][name]["source"] == f"local:{shared_data.resolve()}"
    # subjects and groups are discovered from the files
    assert len(res["benchmarks"]["mmlu"]["breakdown"]) == 8
    assert len(res["benchmarks"]["toxigen"]["breakdown"]) >= 13


def test_humaneval_completions_file_without_model(tmp_path, run_cli):
    from hrlaif.evalsets.humaneval import load_problems

    probs = list(load_problems(None).values())[:5]
    f = tmp_path / "c.jsonl"
    f.write_text("".join(json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"]}) + "\n"
                         for p in probs))
    code, stdout, err = run_cli("eval", "--completions", f, "--out", tmp_path / "o")
    assert code == 0, err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["benchmarks"]["humaneval"]["score"] == 1.0 and res["benchmarks"]["humaneval"]["n"] == 5
    assert res["model"]["kind"] == "completions"
