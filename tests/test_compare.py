"""`hrlaif compare DIR... --out OUT` and `hrlaif report --index RUNS_DIR`."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats as sps
from synthetic_run import fake_checkpoint, read_eval_samples, write_eval_dir, write_synthetic_run

from hrlaif.core.store import read_jsonl, write_jsonl
from hrlaif.reports.build import build_report


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return write_synthetic_run(tmp_path_factory.mktemp("runs") / "run")


def test_compare_three_eval_dirs(run, tmp_path, run_cli):
    out = tmp_path / "cmp"
    code, stdout, err = run_cli("compare", run / "eval_sft", run / "eval_rlaif", run / "eval_hrlaif", "--out", out)
    assert code == 0, err
    assert "| eval_rlaif |" in stdout and "comparison written to" in stdout
    for f in ("comparison.md", "comparison.html", "comparison.csv", "comparison_long.csv", "breakdown.csv",
              "bars_gsm8k.png", "bars_satisfaction.png"):
        assert (out / f).exists(), f
    df = pd.read_csv(out / "comparison.csv", index_col=0)
    assert list(df.index) == ["eval_sft", "eval_rlaif", "eval_hrlaif"]
    # paired Δ vs the first entry, recomputed here from the samples with scipy's exact binomial test
    long = pd.read_csv(out / "comparison_long.csv")
    r = long[(long.model == "eval_rlaif") & (long.bench == "gsm8k")].iloc[0]
    a = {x["doc_id"]: x["score"] for x in read_jsonl(run / "eval_sft" / "samples" / "gsm8k.jsonl")}
    b = {x["doc_id"]: x["score"] for x in read_jsonl(run / "eval_rlaif" / "samples" / "gsm8k.jsonl")}
    lost, won = sum(a[k] == 1 and b[k] == 0 for k in a), sum(a[k] == 0 and b[k] == 1 for k in a)
    assert r.vs == "eval_sft" and r.delta == pytest.approx((won - lost) / 100)
    assert r.p == pytest.approx(sps.binomtest(min(lost, won), lost + won, 0.5).pvalue)
    md = (out / "comparison.md").read_text()
    assert "### GSM8K" in md and "![gsm8k by model](bars_gsm8k.png)" in md and "McNemar" in md
    bd = pd.read_csv(out / "breakdown.csv")
    assert set(bd.model) == {"eval_sft", "eval_rlaif", "eval_hrlaif"} and "math" in set(bd.category)


def test_compare_shares_the_run_reports_table(run, tmp_path, run_cli):
    """The same cells as the run report's comparison table (one table implementation)."""
    assert run_cli("compare", run / "eval_sft", run / "eval_rlaif", run / "eval_hrlaif", "--out", tmp_path)[0] == 0
    cmp = pd.read_csv(tmp_path / "comparison.csv", index_col=0)
    rep = pd.read_csv(build_report(run, tmp_path / "report") / "comparison.csv", index_col=0)
    for a, b in (("eval_rlaif", "RLAIF"), ("eval_hrlaif", "HRLAIF")):
        assert list(cmp.loc[a, rep.columns]) == list(rep.loc[b])
    assert cmp.loc["eval_sft", "Win ratio vs SFT"] == "—"  # its own baseline need not be the first entry


def test_mismatched_item_sets_exit_2_with_one_line(run, tmp_path, run_cli):
    samples = read_eval_samples(run / "eval_rlaif")
    samples["mmlu"] = samples["mmlu"][:100]
    fewer = write_eval_dir(tmp_path / "fewer", samples)
    code, _, err = run_cli("compare", run / "eval_sft", fewer, "--out", tmp_path / "o")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "mmlu: fewer evaluated different items than eval_sft (50 of its 150 missing, 0 extra)" in err
    code, _, err = run_cli("compare", run / "eval_sft", "--out", tmp_path / "o")
    assert code == 2 and "at least two" in err
    code, _, err = run_cli("compare", run / "eval_sft", run / "eval_rlaif", "--names", "a", "--out", tmp_path / "o")
    assert code == 2 and "--names gives 1 labels for 2 dirs" in err
    code, _, err = run_cli("compare", run / "eval_sft", tmp_path / "nope", "--out", tmp_path / "o")
    assert code == 2 and "not found" in err
    rows = read_jsonl(run / "eval_sft" / "samples" / "mmlu.jsonl")
    dup = write_eval_dir(tmp_path / "dup", {"mmlu": rows})
    write_jsonl(dup / "samples" / "mmlu.jsonl", rows + rows[:1])
    code, _, err = run_cli("compare", run / "eval_sft", dup, "--out", tmp_path / "o")
    assert code == 2 and "duplicate doc_id" in err


def test_checkpoints_are_evaluated_on_the_first_dirs_items(run, tmp_path, run_cli, monkeypatch):
    """A dir with config.json is a checkpoint: evaluated (hrlaif.evalsets.runner) on the first entry's benchmarks."""
    ckpt = tmp_path / "step_40"
    calls = fake_checkpoint(monkeypatch, ckpt, run / "eval_hrlaif")
    code, _, err = run_cli("compare", run / "eval_sft", ckpt, "--names", "sft,ppo step 40", "--out", tmp_path / "o")
    assert code == 0, err
    assert calls == [(str(ckpt), "1_step_40_eval", ["ceval", "mmlu", "gsm8k", "humaneval", "toxigen", "satisfaction"])]
    df = pd.read_csv(tmp_path / "o" / "comparison.csv", index_col=0)
    assert list(df.index) == ["sft", "ppo step 40"] and "Δ" in df.loc["ppo step 40", "GSM8K"]


def test_only_evaluated_benchmarks_get_columns(run, tmp_path, run_cli):
    a = write_eval_dir(tmp_path / "a", {"mmlu": read_eval_samples(run / "eval_sft")["mmlu"]})
    b = write_eval_dir(tmp_path / "b", {"mmlu": read_eval_samples(run / "eval_rlaif")["mmlu"]})
    assert run_cli("compare", a, b, "--out", tmp_path / "o")[0] == 0
    assert list(pd.read_csv(tmp_path / "o" / "comparison.csv", index_col=0).columns) == ["MMLU"]


def test_report_index_lists_runs_with_headlines_and_links(run, tmp_path, run_cli):
    runs = tmp_path / "runs"
    shutil.copytree(run, runs / "a")
    shutil.copytree(run, runs / "b")
    (runs / "not_a_run").mkdir()
    assert run_cli("report", runs / "a")[0] == 0
    code, out, err = run_cli("report", "--index", runs)
    assert code == 0, err
    assert "index written to" in out
    md = (runs / "index.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| a ") or line.startswith("| b ")]
    assert len(rows) == 2 and "not_a_run" not in md
    a = next(r for r in rows if r.startswith("| a "))
    assert "[report](a/report/report.md)" in a and "over_optimisation (rlaif)" in a and "60.1% [" in a
    assert "not built (hrlaif report RUN)" in next(r for r in rows if r.startswith("| b "))
    assert 'href="a/report/report.html"' in (runs / "index.html").read_text()
    # bad input: one line, exit 2
    code, _, err = run_cli("report", "--index", tmp_path / "missing")
    assert code == 2 and "runs directory not found" in err
    code, _, err = run_cli("report")
    assert code == 2 and "--index" in err
