"""The gate on real `hrlaif eval` output: a checkpoint's results pass against themselves, and
deliberately truncated responses fail. HumanEval completions stand in for a checkpoint's
generations, so the test runs the real scoring path (sandboxed execution) without a model."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def eval_dirs(tmp_path_factory, run_cli):
    from evalsets.humaneval import load_problems

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


def test_gate_passes_against_itself(eval_dirs, run_cli):
    code, out, err = run_cli("gate", "--baseline", eval_dirs / "base", "--candidate", eval_dirs / "same",
                             "--out", eval_dirs / "g1")
    assert code == 0, out + err
    g = json.loads((eval_dirs / "g1" / "gate.json").read_text())
    assert g["passed"] is True


def test_gate_fails_truncated_responses(eval_dirs, run_cli):
    code, out, err = run_cli("gate", "--baseline", eval_dirs / "base", "--candidate", eval_dirs / "degraded",
                             "--out", eval_dirs / "g2")
    assert code == 1, out + err
    g = json.loads((eval_dirs / "g2" / "gate.json").read_text())
    assert g["passed"] is False
    he = json.dumps(g)
    assert "humaneval" in he and "humaneval" in out


def test_gate_bad_input_exit_2(eval_dirs, run_cli, tmp_path):
    code, _, err = run_cli("gate", "--baseline", eval_dirs / "base", "--candidate", tmp_path / "missing")
    assert code == 2 and len(err.strip().splitlines()) == 1
