"""The gate on real `hrlaif eval` output: a checkpoint's results pass against themselves, and
deliberately truncated responses fail. HumanEval completions stand in for a checkpoint's
generations, so the test runs the real scoring path (sandboxed execution) without a model."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def eval_dirs(tmp_path_factory, run_cli):
    from hrlaif.evalsets.humaneval import load_problems

    root = tmp_path_factory.mktemp("gate")
    probs = list(load_problems(None).values())[:40]
    full = root / "full.jsonl"
    cut = root / "truncated.jsonl"
    full.write_text("".join(json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"]}) + "\n"
                            for p in probs))
    # "responses truncated": keep only the first line of every completion
    cut.write_text("".join(json.dumps({"task_id": p["task_id"],
                                       "completion": p["canonical_solution"].split("\n")[0] + "\n"}) + "\n"
                           for p in probs))
    for name, f in (("base", full), ("same", full), ("degraded", cut)):
        code, _, err = run_cli("eval", "--completions", f, "--out", root / name)
        assert code == 0, err
    return root


def _gate(run_cli, base, cand, out, *extra) -> tuple[int, str, dict]:
    code, stdout, err = run_cli("gate", "--baseline", base, "--candidate", cand, "--out", out, *extra)
    assert code in (0, 1), stdout + err
    return code, stdout, json.loads((out / "gate.json").read_text())


def test_gate_against_itself_passes_only_at_a_margin_40_items_support(eval_dirs, run_cli):
    """40 identical items cannot rule out a deficit of 8.8 points (95% Tango interval +-1.96^2 / (40 + 1.96^2)):
    at the default 1-point margin the checkpoint is not shown non-inferior to itself, at 10 points it is."""
    code, out, g = _gate(run_cli, eval_dirs / "base", eval_dirs / "same", eval_dirs / "g1")
    r = g["benchmarks"]["humaneval"]
    assert code == 1 and g["passed"] is False and r["verdict"] == "fail"
    assert r["n"] == 40 and r["diff"] == 0 and r["ci_method"] == "tango_score"
    assert r["reason"] == ("not shown non-inferior: 95% CI lower bound -8.76 pt < -1 pt; "
                           "n=40 can show non-inferiority only at a margin >= 8.8 pt")
    assert "FAIL: humaneval: not shown non-inferior" in out
    code, out, g = _gate(run_cli, eval_dirs / "base", eval_dirs / "same", eval_dirs / "g1b",
                         "--margin", "humaneval=8.8")
    assert code == 0 and g["passed"] is True and g["benchmarks"]["humaneval"]["reason"] is None
    assert g["benchmarks"]["humaneval"]["min_margin"] == pytest.approx(1.959964 ** 2 / (40 + 1.959964 ** 2))


def test_gate_fails_truncated_responses(eval_dirs, run_cli):
    # at the margin that passes the checkpoint against itself: the truncation, not n, fails it
    code, out, g = _gate(run_cli, eval_dirs / "base", eval_dirs / "degraded", eval_dirs / "g2",
                         "--margin", "humaneval=10")
    r = g["benchmarks"]["humaneval"]
    assert code == 1 and g["passed"] is False and r["diff"] < -0.5 and r["ci"][1] < 0
    assert "< -10 pt" in r["reason"] and "FAIL: humaneval" in out


def test_gate_bad_input_exit_2(eval_dirs, run_cli, tmp_path):
    code, _, err = run_cli("gate", "--baseline", eval_dirs / "base", "--candidate", tmp_path / "missing")
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def satisfaction_dirs(tmp_path_factory, tiny_model_dir, run_cli):
    """Two real `hrlaif eval --benchmarks satisfaction` runs of one model; in the second the judge
    gives one unparseable answer, so samples/satisfaction.jsonl holds "score": null there."""
    from fake_judge import FakeJudge

    root = tmp_path_factory.mktemp("sat")
    args = ["eval", "--model", tiny_model_dir, "--benchmarks", "satisfaction", "--limit", "4",
            "--max-gen-toks", "satisfaction=8", "--judge-model", "fake", "--no-cache"]
    ask = "Does the response satisfy the request?"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HRLAIF_CACHE", str(root / "cache"))  # no judge answers from other tests' runs
        with FakeJudge(answers=[(ask, "Yes")]) as fj:
            code, _, err = run_cli(*args, "--judge-url", fj.url, "--out", root / "base")
            assert code == 0, err
        rows = [json.loads(x) for x in (root / "base" / "samples" / "satisfaction.jsonl").read_text().splitlines()]
        judged = [r for r in rows if r["by"] == "judge"]
        assert judged, "no item reached the judge"
        with FakeJudge(answers=[(judged[0]["prompt"], "Hard to tell."), (ask, "Yes")]) as fj:
            code, _, err = run_cli(*args, "--judge-url", fj.url, "--out", root / "cand")
            assert code == 0, err
    return root


def test_gate_counts_an_invalid_judge_answer_from_real_eval_output_at_the_worst_case(satisfaction_dirs, run_cli):
    root = satisfaction_dirs
    cand = [json.loads(x) for x in (root / "cand" / "samples" / "satisfaction.jsonl").read_text().splitlines()]
    assert sum(r["score"] is None for r in cand) == 1  # what the evaluation writes for an invalid answer
    for base, other, side in (("base", "cand", "candidate"), ("cand", "base", "baseline")):
        # 3 valid pairs, all satisfied on both sides, and the invalid one at the worst case: a failure for
        # the candidate (4 items with one failure clear only margins above 70 points), a success for the
        # baseline (no change: the candidate's item is satisfied too)
        worst = -1 / len(cand) if side == "candidate" else 0.0
        code, out, g = _gate(run_cli, root / base, root / other, root / f"g_{base}", "--margin", "satisfaction=60")
        assert code == (1 if worst else 0), out
        code, out, g = _gate(run_cli, root / base, root / other, root / f"g_{base}", "--margin", "satisfaction=75")
        assert code == 0, out
        r = g["benchmarks"]["satisfaction"]
        assert r[f"invalid_{side}"] == 1 and r["dropped_invalid"] == 1 and r["n"] == len(cand) - 1
        assert r["n_decided"] == len(cand) and r["diff_worst_case"] == pytest.approx(worst)
        assert "invalid b/c" in out
