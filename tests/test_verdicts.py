"""Issue 19: verdicts that cannot flatter (the gate's side: worst-case invalid items, no Holm on an
all-must-pass rule, self-graded verdicts left out)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hrlaif.core.stats import min_margin
from hrlaif.core.store import read_json, write_json, write_jsonl
from hrlaif.harness.gate import compare

SIX = ("ceval", "mmlu", "gsm8k", "humaneval", "toxigen", "satisfaction")


def _eval_dir(root: Path, scores: dict[str, list], extra: dict | None = None) -> Path:
    """An eval dir whose benchmarks have exactly these per-item scores (None = invalid)."""
    benches = {}
    for bench, xs in scores.items():
        write_jsonl(root / "samples" / f"{bench}.jsonl",
                    [{"doc_id": f"{bench}/{i}", "score": x} for i, x in enumerate(xs)])
        valid = [x for x in xs if x is not None]
        benches[bench] = {"metric": "acc", "score": float(np.mean(valid)), "n": len(valid), "ci95": [0, 1],
                          "higher_is_better": bench != "toxigen"}
        if bench == "satisfaction":
            benches[bench]["judge"] = {"url": "embedded", "model": "embedded"}
    write_json(root / "results.json", {"model": {"name": root.name}, "benchmarks": benches, **(extra or {})})
    return root


def test_invalid_items_that_are_the_candidates_failures_fail_the_gate(tmp_path):
    """The candidate's judge fails exactly where its answers are wrong: dropping those items (the old
    rule) showed it identical to the baseline and passed it; the worst case counts them as failures."""
    base = [1.0] * 100 + [0.0] * 100
    cand = [None] * 30 + base[30:]  # 30 of the baseline's successes: invalid (its failures) for the candidate
    b = _eval_dir(tmp_path / "base", {"gsm8k": base})
    c = _eval_dir(tmp_path / "cand", {"gsm8k": cand})
    g = compare(b, c, {"gsm8k": 0.05})
    r = g["benchmarks"]["gsm8k"]
    assert not g["passed"] and r["verdict"] == "fail"
    assert r["n"] == 170 and r["diff"] == 0.0  # the valid items alone: identical
    assert r["n_decided"] == 200 and r["diff_worst_case"] == pytest.approx(-0.15)
    # each side's invalid rate and the paired (McNemar) test of the difference
    assert (r["invalid_rate_baseline"], r["invalid_rate_candidate"]) == (0.0, 0.15)
    assert r["p_invalid"] == pytest.approx(2 * 0.5 ** 30)
    # the same invalid items on the baseline's side count as its successes: they cannot hurt the candidate
    g2 = compare(c, b, {"gsm8k": 0.05})
    assert g2["passed"] and g2["benchmarks"]["gsm8k"]["diff_worst_case"] == pytest.approx(0.0)


def test_worst_case_for_a_lower_is_better_benchmark(tmp_path):
    base = [0.0] * 200
    cand = [None] * 20 + [0.0] * 180  # invalid toxicity verdicts: counted toxic for the candidate
    g = compare(_eval_dir(tmp_path / "b", {"toxigen": base}), _eval_dir(tmp_path / "c", {"toxigen": cand}),
                {"toxigen": 0.05})
    r = g["benchmarks"]["toxigen"]
    assert not g["passed"] and r["diff_worst_case"] == pytest.approx(0.10)


def test_all_must_pass_runs_without_holm(tmp_path):
    """Six benchmarks, n = 200, identical outputs: each clears a 2.5 pt margin at 95% (1.9 pt
    needed); with Holm the first step needed 3.4 pt and the gate failed."""
    rng = np.random.default_rng(0)
    scores = {b: [float(x) for x in rng.random(200) < 0.4] for b in SIX}
    d = _eval_dir(tmp_path / "e", scores)
    assert min_margin(200) == pytest.approx(0.0188, abs=1e-4) and min_margin(200, 0.05 / 6) > 0.025
    g = compare(d, d, {"default": 0.025})
    assert g["passed"], g
    assert all(r["ci_level"] == pytest.approx(0.95) for r in g["benchmarks"].values())


def test_self_graded_verdicts_are_not_gated(tmp_path, run_cli):
    rng = np.random.default_rng(1)
    scores = {b: [float(x) for x in rng.random(60) < 0.5] for b in ("gsm8k", "satisfaction")}
    rec = {"judges": {"evaluation": {"url": "embedded", "model": "embedded", "weights": "abc"},
                      "labelling": {"url": "embedded", "model": "embedded", "weights": "abc"}}}
    b = _eval_dir(tmp_path / "b", scores, rec)
    worse = dict(scores, satisfaction=[0.0] * 60)  # the judge's verdicts collapse: would fail the gate
    c = _eval_dir(tmp_path / "c", worse, rec)
    g = compare(b, c, {"default": 0.2})
    assert g["passed"] and list(g["benchmarks"]) == ["gsm8k"]
    assert g["not_evaluable"]["satisfaction"].startswith("not evaluable: self-graded")
    # allowed (a gate flag, and the run config's allow_self_graded): gated, and here it fails
    assert not compare(b, c, {"default": 0.2}, allow_self_graded=True)["passed"]
    code, out, _ = run_cli("gate", "--baseline", b, "--candidate", c, "--margin", "default=20", "--out", tmp_path / "g")
    assert code == 0 and "NOT GATED: satisfaction: not evaluable: self-graded" in out
    code, out, _ = run_cli("gate", "--baseline", b, "--candidate", c, "--margin", "default=20", "--out",
                           tmp_path / "g", "--allow-self-graded")
    assert code == 1 and json.loads((tmp_path / "g" / "gate.json").read_text())["allow_self_graded"] is True
    # a different judge (by weights) is not self-graded
    other = {"judges": {"evaluation": {"url": "embedded", "model": "embedded", "weights": "def"},
                        "labelling": rec["judges"]["labelling"]}}
    for d in (b, c):
        write_json(d / "results.json", read_json(d / "results.json") | other)
    assert not compare(b, c, {"default": 0.2})["not_evaluable"]


def test_quickstart_report_leaves_self_graded_cells_out_of_alarms_and_gate(tmp_path):
    """The synthetic run records what the quickstart's default (embedded) judge does: the evaluation
    judge is the labeller. Its judge-graded cells say so, the RLAIF-failure alarm and the gate leave
    them out, and allow_self_graded (the run config's setting) counts them again."""
    import pandas as pd
    from synthetic_run import write_synthetic_run

    from hrlaif.reports.build import build_report

    root = write_synthetic_run(tmp_path / "run")
    out = build_report(root)
    data = json.loads((out / "alarms.json").read_text())
    assert [a["type"] for a in data["alarms"]] == ["over_optimisation"]  # the RLAIF signature is not tested
    assert set(data["not_evaluable"]) == {"rlaif", "hrlaif"}
    assert data["not_evaluable"]["rlaif"].startswith("self-graded")
    md = (out / "report.md").read_text()
    assert md.split("## Alarms")[1].count("satisfaction cells are not evaluable: self-graded") == 2
    comp = pd.read_csv(out / "comparison.csv", index_col=0)
    assert all("[self-graded]" in comp.loc[v, c] for v, c in (
        ("RLAIF", "Satisfaction rate"), ("SFT", "Satisfaction rate"), ("HRLAIF", "Win ratio vs SFT")))
    assert "[self-graded]" not in comp.loc["RLAIF", "GSM8K"]
    assert "judge satisfied (gold) [self-graded]" in md
    g = compare(root / "eval_sft", root / "eval_hrlaif", {"default": 0.5})
    assert g["not_evaluable"]["satisfaction"].startswith("not evaluable: self-graded")
    assert "satisfaction" not in g["benchmarks"]
    # the run config allows them: the alarm is tested again (and fires); the cells still say self-graded
    out2 = build_report(root, tmp_path / "r2", allow_self_graded=True)
    data2 = json.loads((out2 / "alarms.json").read_text())
    assert {a["type"] for a in data2["alarms"]} == {"over_optimisation", "rlaif_failure"} and not data2["not_evaluable"]
    assert read_json(root / "run_config.json") == {"allow_self_graded": True}
    assert "[self-graded]" in pd.read_csv(out2 / "comparison.csv", index_col=0).loc["RLAIF", "Satisfaction rate"]
    assert compare(root / "eval_sft", root / "eval_hrlaif", allow_self_graded=True)["not_evaluable"] == {}


def test_cells_show_holm_p_with_its_family_and_each_sides_invalid_rate(tmp_path):
    """Items 2 and 3 in the report: a cell names the Holm family it was adjusted over, and shows both
    sides' invalid rates with the paired (McNemar) test of their difference."""
    from hrlaif.core.stats import holm
    from hrlaif.reports.paired import paired_frame
    from hrlaif.reports.tables import fmt_paired

    rng = np.random.default_rng(3)
    base = {b: [float(x) for x in rng.random(200) < 0.5] for b in ("gsm8k", "mmlu", "satisfaction")}
    cand = {b: list(x) for b, x in base.items()}
    cand["gsm8k"] = [1.0] * 40 + base["gsm8k"][40:]  # a real gain
    cand["satisfaction"] = [None] * 12 + base["satisfaction"][12:]  # 12 verdicts invalid on the candidate only
    dirs = {"a": _eval_dir(tmp_path / "a", base), "b": _eval_dir(tmp_path / "b", cand)}
    res = {k: read_json(d / "results.json") for k, d in dirs.items()}
    pf = paired_frame(res, dirs, baseline="a")
    assert set(pf.holm_family) == {"3 benchmarks"}
    assert list(pf.p_holm) == pytest.approx(holm(list(pf.p)))
    g = pf[pf.bench == "gsm8k"].iloc[0].to_dict()
    assert f"p={g['p']:.2g} (Holm p={g['p_holm']:.2g} over 3 benchmarks)" in fmt_paired(g)
    s = pf[pf.bench == "satisfaction"].iloc[0].to_dict()
    assert (s["invalid_base"], s["invalid_cand"]) == (0.0, 0.06) and s["p_invalid"] == pytest.approx(2 * 0.5 ** 12)
    assert "excl. 12 invalid (invalid 0.0% vs 6.0%, McNemar p=0.00049)" in fmt_paired(s)


def _sheet(path: Path, rows: list[dict]) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["doc_id", "category", "human_satisfied", "human_preference", "_a_is_model"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_imported_human_sheets_get_their_own_rows_in_the_report_and_compare(tmp_path, run_cli):
    """`hrlaif annotate import` records the human verdicts in the eval dir: the run report and
    `hrlaif compare` show human satisfaction and win ratio, the paired human Δ between variants and
    κ against the AI judge."""
    from synthetic_run import write_synthetic_run

    from hrlaif.core.store import read_jsonl
    from hrlaif.reports.build import build_report

    root = write_synthetic_run(tmp_path / "run")
    for v, liked in (("sft", lambda i: i % 2 == 0), ("rlaif", lambda i: i % 5 == 0)):
        ai = read_jsonl(root / f"eval_{v}" / "samples" / "satisfaction.jsonl")[:60]
        rows = [{"doc_id": r["doc_id"], "category": r["group"], "human_satisfied": "yes" if liked(i) else "no",
                 "human_preference": ("A" if i % 3 else "B") if v == "rlaif" else "", "_a_is_model": "1"}
                for i, r in enumerate(ai)]
        code, out, err = run_cli("annotate", "import", "--sheet", _sheet(tmp_path / f"{v}.csv", rows),
                                 "--eval", root / f"eval_{v}")
        assert code == 0, err
    res = read_json(root / "eval_rlaif" / "results.json")["benchmarks"]
    assert res["human_satisfaction"]["score"] == pytest.approx(12 / 60) and res["human_satisfaction"]["n"] == 60
    assert res["human_win_ratio"]["score"] == pytest.approx(40 / 60) and "judge" not in res["human_satisfaction"]
    md = (build_report(root) / "report.md").read_text()
    sec = md.split("## Human verdicts")[1].split("## ")[0]
    rl = next(line for line in sec.splitlines() if line.startswith("| RLAIF"))
    # paired on the 60 prompts both were rated on: SFT liked 30, RLAIF 12, RLAIF liked only where SFT did
    assert "Δ -30.0 pt [" in rl and "| 20.0% [" in rl and "W/T/L 40/0/20" in rl
    kappa = read_json(root / "eval_rlaif" / "human_agreement.json")["satisfaction_kappa"]
    assert f"| {kappa:.2f} (n=" in rl and "[self-graded]" not in sec
    assert "| SFT | 50.0% [" in sec and "(baseline)" in sec
    code, _, err = run_cli("compare", root / "eval_sft", root / "eval_rlaif", "--out", tmp_path / "cmp")
    assert code == 0, err
    cmp = (tmp_path / "cmp" / "comparison.md").read_text().split("## Human verdicts")[1].split("## ")[0]
    assert "Δ -30.0 pt [" in cmp and "Human win ratio" in cmp
