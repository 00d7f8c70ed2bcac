"""`hrlaif gate`: exit 0 pass, 1 fail, 2 bad input; paired statistics on doc_id-matched items."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from synthetic_run import RATES, degrade_eval_dir, fake_checkpoint, make_samples, read_eval_samples, write_eval_dir

from hrlaif.core.store import read_jsonl, write_json, write_jsonl
from hrlaif.harness.gate import compare


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    samples = {b: make_samples(b, p, rng) for b, p in RATES["sft"].items()}
    for r in samples["satisfaction"]:  # no invalid verdicts here: the tests below plant their own
        r["score"] = 0.0 if r["score"] is None else r["score"]
    return write_eval_dir(tmp_path_factory.mktemp("evals") / "base", samples, "sft")


def _gate(run_cli, a, b, *extra):
    code, out, err = run_cli("gate", "--baseline", a, "--candidate", b, *extra)
    return code, out, err


def _min_margin_text(r: dict) -> str:
    """The fail reason for identical outputs, computed here from the CI level with scipy: the Tango
    interval with no discordant item is +-z^2 / (n + z^2)."""
    z = sps.norm.ppf(1 - (1 - r["ci_level"]) / 2)
    y = z * z / (r["n"] + z * z)
    return (f"not shown non-inferior: {r['ci_level'] * 100:.4g}% CI lower bound {-y * 100:+.2f} pt < -1 pt; "
            f"n={r['n']} can show non-inferiority only at a margin >= {(math.floor(y * 1000) + 1) / 10:.1f} pt")


def test_eval_dir_against_itself_needs_a_margin_its_n_supports(base, tmp_path, run_cli):
    """Identical outputs on 40-240 items cannot rule out a 1-point deficit (the bootstrap CI used to be
    [0, 0] and passed); with a margin the items can support they pass."""
    code, out, err = _gate(run_cli, base, base, "--out", tmp_path)
    assert code == 1, err
    g = json.loads((tmp_path / "gate.json").read_text())
    assert g["passed"] is False and set(g["benchmarks"]) == set(RATES["sft"])
    for b, r in g["benchmarks"].items():
        assert r["verdict"] == "fail" and r["diff"] == 0 and r["p"] == 1.0, b
        assert r["reason"] == _min_margin_text(r), b
        assert r["ci"][0] == pytest.approx(-r["min_margin"]) and r["ci"][1] == pytest.approx(r["min_margin"])
        assert r["ci_method"] == ("paired_t_floor" if b == "humaneval" else "tango_score")
        assert set(r) >= {"n", "baseline", "candidate", "diff", "ci", "p", "p_holm", "margin", "verdict", "warning"}
        assert r["dropped_invalid"] == r["missing_in_candidate"] == r["missing_in_baseline"] == 0
        assert r["incomplete"] is None
    assert "FAIL: humaneval: " + g["benchmarks"]["humaneval"]["reason"] in out and "gate: FAIL" in out
    # humaneval has 40 items: 8.8 points at 95%; the Holm levels ask a little more of the rest
    code, out, err = _gate(run_cli, base, base, "--out", tmp_path, "--margin", "default=10")
    assert code == 0, out + err
    g = json.loads((tmp_path / "gate.json").read_text())
    assert g["passed"] and "ceval" in out and "toxigen (lower better)" in out
    for r in g["benchmarks"].values():
        assert r["verdict"] == "pass" and r["reason"] is None and r["min_margin"] < r["margin"]
    assert "invalid b/c" not in out and "missing b/c" not in out


def test_degraded_candidate_fails(base, tmp_path, run_cli):
    bad = degrade_eval_dir(base, tmp_path / "bad", benches=("gsm8k", "mmlu"), fraction=0.5)
    code, out, err = _gate(run_cli, base, bad, "--out", tmp_path / "g", "--margin", "default=10")
    assert code == 1, err
    g = json.loads((tmp_path / "g" / "gate.json").read_text())
    v = {b: r["verdict"] for b, r in g["benchmarks"].items()}
    assert v["mmlu"] == "fail" and v["gsm8k"] == "fail" and v["ceval"] == "pass"
    mm = g["benchmarks"]["mmlu"]
    assert mm["test"] == "mcnemar_exact" and mm["p"] < 0.001 and mm["p_holm"] >= mm["p"]
    assert mm["diff"] < -0.1 and mm["ci"][1] < 0
    assert "FAIL" in out and "gate: FAIL" in out


def test_fractional_scores_use_the_sign_flip_test(base, tmp_path, run_cli):
    samples = read_eval_samples(base)
    for r in samples["humaneval"]:
        r["score"] = max(0.0, r["score"] - 0.2)
    cand = write_eval_dir(tmp_path / "cand", samples)
    code, _, _ = _gate(run_cli, base, cand, "--out", tmp_path)
    g = json.loads((tmp_path / "gate.json").read_text())
    he = g["benchmarks"]["humaneval"]
    assert code == 1 and he["test"] == "signflip" and he["verdict"] == "fail"
    assert he["ci_method"] == "paired_t_floor" and he["ci"][0] <= he["diff"] <= he["ci"][1]
    assert he["ci"][0] < -he["margin"] and "not shown non-inferior" in he["reason"]


def test_toxigen_more_toxic_fails_less_toxic_passes(base, tmp_path):
    samples = read_eval_samples(base)
    tox = samples["toxigen"]
    for r in tox[:40]:
        r["score"] = 1.0  # 20% toxic instead of 3%
    worse = write_eval_dir(tmp_path / "worse", {"toxigen": tox})
    g = compare(base, worse, benchmarks=["toxigen"])
    assert g["benchmarks"]["toxigen"]["verdict"] == "fail" and g["benchmarks"]["toxigen"]["diff"] > 0.1
    for r in tox:
        r["score"] = 0.0
    better = write_eval_dir(tmp_path / "better", {"toxigen": tox})
    g = compare(base, better, benchmarks=["toxigen"])
    assert g["passed"] and g["benchmarks"]["toxigen"]["diff"] < 0


def test_margin_decides_a_small_real_drop(base, tmp_path, run_cli):
    samples = read_eval_samples(base)
    flipped = 0
    for r in samples["satisfaction"]:
        if r["score"] == 1.0 and flipped < 5:
            r["score"], flipped = 0.0, flipped + 1  # -5 of 240 items ~ -2.1 points
    cand = write_eval_dir(tmp_path / "cand", {"satisfaction": samples["satisfaction"]})
    tight = compare(base, cand, {"satisfaction": 0.01}, benchmarks=["satisfaction"])
    loose = compare(base, cand, {"satisfaction": 0.10}, benchmarks=["satisfaction"])
    assert not tight["passed"] and loose["passed"]
    assert loose["benchmarks"]["satisfaction"]["ci"][0] > -0.10
    code, _, err = _gate(run_cli, base, cand, "--benchmarks", "satisfaction", "--margin", "satisfaction=10",
                         "--out", tmp_path)
    assert code == 0, err


def test_every_benchmark_at_level_alpha_without_holm(base, tmp_path):
    """All must pass (an intersection-union test): no Holm on the verdict (tests/test_verdicts.py)."""
    bad = degrade_eval_dir(base, tmp_path / "bad", benches=("gsm8k",), fraction=0.3)
    g = compare(base, bad)
    assert [r["ci_level"] for r in g["benchmarks"].values()] == pytest.approx([0.95] * len(g["benchmarks"]))
    for r in g["benchmarks"].values():
        assert "p_noninferiority_holm" not in r and (r["verdict"] == "pass") == (r["p_noninferiority"] < 0.05)


def test_partial_overlap_compares_intersection_only_when_allowed(base, tmp_path):
    samples = read_eval_samples(base)
    cand = write_eval_dir(tmp_path / "cand", {"mmlu": samples["mmlu"][:100]})
    r = compare(base, cand, {"mmlu": 0.05}, benchmarks=["mmlu"], allow_partial=True)["benchmarks"]["mmlu"]
    assert r["n"] == 100 and r["n_baseline"] == 150 and r["missing_in_candidate"] == 50
    assert r["verdict"] == "pass" and r["incomplete"] is None
    assert "--allow-partial: gated on the 100 items both evaluated" in r["warning"]
    g = compare(base, cand, benchmarks=["mmlu"])
    assert not g["passed"] and g["incomplete"] == ["mmlu"]
    assert g["benchmarks"]["mmlu"]["incomplete"] == "candidate lacks 50 of the baseline's 150 mmlu items"


def _with_scores(eval_dir: Path, bench: str, scores: dict[int, object]) -> Path:
    """Overwrite the given items' scores in an eval dir's samples (results.json is left as it was)."""
    p = eval_dir / "samples" / f"{bench}.jsonl"
    rows = read_jsonl(p)
    for i, s in scores.items():
        rows[i]["score"] = s
    write_jsonl(p, rows)
    return eval_dir


def test_null_scores_are_dropped_and_counted(base, tmp_path, run_cli):
    """A judge that leaves items invalid writes "score": null; the gate pairs the rest and counts them."""
    samples = {"satisfaction": read_eval_samples(base)["satisfaction"]}
    b = _with_scores(write_eval_dir(tmp_path / "b", samples), "satisfaction", {3: None})
    c = _with_scores(write_eval_dir(tmp_path / "c", samples), "satisfaction", {0: None, 3: None})
    code, out, err = _gate(run_cli, b, c, "--out", tmp_path / "g", "--margin", "satisfaction=5")
    assert code == 0, out + err
    r = json.loads((tmp_path / "g" / "gate.json").read_text())["benchmarks"]["satisfaction"]
    assert (r["invalid_baseline"], r["invalid_candidate"], r["dropped_invalid"]) == (1, 2, 2)
    assert r["n"] == 238 and r["verdict"] == "pass" and r["missing_in_candidate"] == 0
    assert "invalid b/c" in out and "1/2" in out and "2 of 240 items invalid" in out
    # the verdict: item 0 (invalid for the candidate only) a failure, item 3 (invalid on both) left out
    assert r["n_decided"] == 239 and r["diff_worst_case"] == pytest.approx(-1 / 239)

    # the same null with a real drop still fails as usual (exit 1, not 2)
    worse = [dict(x, score=0.0) if i < 60 else x for i, x in enumerate(samples["satisfaction"])]
    c2 = _with_scores(write_eval_dir(tmp_path / "c2", {"satisfaction": worse}), "satisfaction", {100: None})
    code, out, err = _gate(run_cli, b, c2, "--out", tmp_path / "g2", "--margin", "satisfaction=5")
    assert code == 1, out + err
    r = json.loads((tmp_path / "g2" / "gate.json").read_text())["benchmarks"]["satisfaction"]
    assert r["verdict"] == "fail" and r["invalid_candidate"] == 1 and r["dropped_invalid"] == 2
    assert "not shown non-inferior" in r["reason"]


def test_missing_items_fail_unless_allow_partial(base, tmp_path, run_cli):
    """A candidate that evaluated 10 of the baseline's 40 MMLU items is not gated on MMLU."""
    rows = read_eval_samples(base)["mmlu"][:40]
    full = write_eval_dir(tmp_path / "full", {"mmlu": rows})
    part = write_eval_dir(tmp_path / "part", {"mmlu": rows[:10]})
    code, out, err = _gate(run_cli, full, part, "--out", tmp_path / "g")
    assert code == 1, out + err
    g = json.loads((tmp_path / "g" / "gate.json").read_text())
    r = g["benchmarks"]["mmlu"]
    assert g["passed"] is False and g["incomplete"] == ["mmlu"] and g["allow_partial"] is False
    assert (r["missing_in_candidate"], r["missing_in_baseline"], r["verdict"]) == (30, 0, "fail")
    assert r["incomplete"] == "candidate lacks 30 of the baseline's 40 mmlu items"
    assert "FAIL (missing items)" in out and "--allow-partial" in r["reason"]

    # 10 identical items support only margins above 27.8 points
    code, out, err = _gate(run_cli, full, part, "--out", tmp_path / "g", "--allow-partial", "--margin", "mmlu=30")
    assert code == 0, out + err
    g = json.loads((tmp_path / "g" / "gate.json").read_text())
    r = g["benchmarks"]["mmlu"]
    assert g["passed"] and g["allow_partial"] and r["n"] == 10 and r["missing_in_candidate"] == 30
    assert "gated on the 10 items both evaluated" in out

    # the other direction: the baseline lacks items the candidate scored
    code, out, err = _gate(run_cli, part, full, "--out", tmp_path / "g3")
    assert code == 1, out + err
    r = json.loads((tmp_path / "g3" / "gate.json").read_text())["benchmarks"]["mmlu"]
    assert r["missing_in_baseline"] == 30 and r["incomplete"] == "baseline lacks 30 of the candidate's 40 mmlu items"


def test_bad_inputs_exit_2(base, tmp_path, run_cli):
    # missing candidate dir
    code, _, err = _gate(run_cli, base, tmp_path / "nope")
    assert code == 2 and "not found" in err
    # missing samples file
    cand = tmp_path / "nosamples"
    write_eval_dir(cand, {b: s for b, s in read_eval_samples(base).items() if b != "gsm8k"})
    write_json(cand / "results.json", json.loads((base / "results.json").read_text()))
    code, _, err = _gate(run_cli, base, cand, "--out", tmp_path)
    assert code == 2 and "gsm8k.jsonl" in err
    # disjoint items
    rows = read_jsonl(base / "samples" / "mmlu.jsonl")
    other = write_eval_dir(tmp_path / "other", {"mmlu": [{**r, "doc_id": "x/" + r["doc_id"]} for r in rows]})
    code, _, err = _gate(run_cli, base, other, "--benchmarks", "mmlu", "--out", tmp_path)
    assert code == 2 and "share no doc_id" in err
    # duplicated doc_id
    dup = write_eval_dir(tmp_path / "dup", {"mmlu": rows})
    write_jsonl(dup / "samples" / "mmlu.jsonl", rows + rows[:1])
    code, _, err = _gate(run_cli, base, dup, "--benchmarks", "mmlu", "--out", tmp_path)
    assert code == 2 and "duplicate doc_id" in err
    # a score that is not null and not a number is bad input, not an invalid item
    for bad in ("yes", float("nan")):
        odd = _with_scores(write_eval_dir(tmp_path / "odd", {"mmlu": rows}), "mmlu", {5: bad})
        code, _, err = _gate(run_cli, base, odd, "--benchmarks", "mmlu", "--out", tmp_path)
        assert code == 2 and "mmlu.jsonl:6 score" in err and len(err.strip().splitlines()) == 1
    # nothing left to pair once invalid items are dropped
    void = _with_scores(write_eval_dir(tmp_path / "void", {"mmlu": rows}), "mmlu", dict.fromkeys(range(len(rows))))
    code, _, err = _gate(run_cli, base, void, "--benchmarks", "mmlu", "--out", tmp_path)
    assert code == 2 and "no item has a valid score on both sides" in err
    # no results.json, bad margin
    (tmp_path / "empty").mkdir()
    assert _gate(run_cli, base, tmp_path / "empty")[0] == 2
    code, _, err = _gate(run_cli, base, base, "--margin", "mmlu", "--out", tmp_path)
    assert code == 2 and "BENCH=POINTS" in err
    code, _, err = _gate(run_cli, base, base, "--margin", "nosuch=1", "--out", tmp_path)
    assert code == 2 and "nosuch" in err


def test_checkpoint_dirs_are_evaluated_first(base, tmp_path, run_cli, monkeypatch):
    """A dir with config.json is a checkpoint: the gate asks hrlaif.evalsets.runner for an eval dir,
    with the benchmarks of the other side so that both sides have the same items."""
    ckpt = tmp_path / "ckpt"
    calls = fake_checkpoint(monkeypatch, ckpt, base)
    code, _, err = _gate(run_cli, base, ckpt, "--out", tmp_path / "g", "--margin", "default=20")
    assert code == 0, err
    assert calls == [(str(ckpt), "candidate_eval", [b for b in RATES["sft"]])]
    assert (tmp_path / "g" / "gate.json").exists()
