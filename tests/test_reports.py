"""The comparison report of a synthetic run: tables, CIs, deltas, missing data, plots, timing."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats as sps
from synthetic_run import CATEGORIES, rare_category, write_synthetic_run

from hrlaif.core.stats import INVALID_RULE, holm
from hrlaif.core.store import read_jsonl, write_text
from hrlaif.evalsets import registry
from hrlaif.reports.build import build_report
from hrlaif.reports.collect import benchmark_frame, collect, label_accuracy_frame, load_results, permille_scale
from hrlaif.reports.paired import paired_frame
from hrlaif.reports.render import render_markdown
from hrlaif.reports.sections import grading_notice, versus_blocks
from hrlaif.reports.tables import FEW, category_table, comparison_table, label_accuracy_table, to_markdown

# Column labels and order come from the benchmark specs: the default set (the synthetic run has only those).
LABEL = {b: registry.info(b)["label"] for b in registry.table_order()
         if b in registry.defaults() or getattr(registry.metric(b), "parent", None) in registry.defaults()}
CELL = re.compile(r"^\d+\.\d[%‰] \[\d+\.\d, \d+\.\d\] n=\d+")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_synthetic_run(tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="module")
def report_dir(run_dir) -> Path:
    return build_report(run_dir)


def test_comparison_has_three_rows_and_every_benchmark_with_ci_n_and_delta(report_dir):
    df = pd.read_csv(report_dir / "comparison.csv", index_col=0)
    assert list(df.index) == ["SFT", "RLAIF", "HRLAIF"]
    assert list(df.columns) == list(LABEL.values()) == [
        "C-Eval", "MMLU", "GSM8K", "HumanEval pass@1", "ToxiGen toxicity ‰", "Satisfaction rate", "Win ratio vs SFT"]
    for model, row in df.iterrows():
        for col, cell in row.items():
            if model == "SFT" and col == LABEL["win_ratio"]:
                assert cell == "(baseline)"
                continue
            assert CELL.match(cell), (model, col, cell)
            if model != "SFT" and col != LABEL["win_ratio"]:
                assert "Δ" in cell, (model, col, cell)
    assert df.loc["RLAIF", "GSM8K"].startswith("15.0% [") and "Δ -5.0 pt" in df.loc["RLAIF", "GSM8K"]
    # ToxiGen in per mille, lower is better; win ratio with its raw counts and invalid judge answers.
    assert df.loc["HRLAIF", LABEL["toxigen"]].startswith("10.0‰") and "Δ -20.0‰" in df.loc["HRLAIF", LABEL["toxigen"]]
    assert re.search(r"invalid=3 W/T/L \d+/\d+/\d+$", df.loc["RLAIF", LABEL["win_ratio"]])


def _discordant(run_dir, bench, variant):
    a = {r["doc_id"]: r["score"] for r in read_jsonl(run_dir / "eval_sft" / "samples" / f"{bench}.jsonl")}
    b = {r["doc_id"]: r["score"] for r in read_jsonl(run_dir / f"eval_{variant}" / "samples" / f"{bench}.jsonl")}
    keys = [k for k in a if a[k] is not None and b.get(k) is not None]
    return sum(a[k] == 1 and b[k] == 0 for k in keys), sum(a[k] == 0 and b[k] == 1 for k in keys), len(keys)


def test_every_delta_is_paired_with_ci_and_p_checked_independently(run_dir, report_dir):
    """Δ cells carry the paired CI and exact McNemar p, recomputed here from the sample files with scipy."""
    df = pd.read_csv(report_dir / "comparison.csv", index_col=0)
    long = pd.read_csv(report_dir / "comparison_long.csv").set_index(["variant", "bench"])
    b, c, n = _discordant(run_dir, "satisfaction", "rlaif")
    p = sps.binomtest(min(b, c), b + c, 0.5).pvalue
    r = long.loc[("rlaif", "satisfaction")]
    assert r.p == pytest.approx(p) and r.n_paired == n == 238 and r.excluded_invalid == 2
    assert r.delta == pytest.approx((c - b) / n) and r.delta_lo < r.delta < r.delta_hi < 0
    cell = df.loc["RLAIF", LABEL["satisfaction"]]
    assert f"Δ {(c - b) / n * 100:+.1f} pt [{r.delta_lo * 100:+.1f}, {r.delta_hi * 100:+.1f}] p={p:.2g}" in cell
    assert "excl. 2 invalid" in cell
    # a small difference on small n: the CI includes 0 and the items could not detect it
    g = long.loc[("rlaif", "gsm8k")]
    assert g.inconclusive and g.delta_lo < 0 < g.delta_hi and g.mde > abs(g.delta)
    assert f"inconclusive (MDE {g.mde * 100:.1f} pt)" in df.loc["RLAIF", "GSM8K"]
    # Holm over each model's benchmarks
    rl = long.xs("rlaif", level="variant")
    tested = rl[rl.p.notna()]
    assert list(tested.p_holm) == pytest.approx(holm(list(tested.p)))
    # non-binary scores (HumanEval pass@1 from 5 samples) go through the sign-flip permutation test
    assert long.loc[("rlaif", "humaneval")].test == "signflip"


def test_comparison_long_is_numeric_with_deltas(report_dir):
    df = pd.read_csv(report_dir / "comparison_long.csv")
    r = df[(df.variant == "rlaif") & (df.bench == "gsm8k")].iloc[0]
    assert r.score == pytest.approx(0.15) and r.delta == pytest.approx(-0.05) and r.n == 100
    assert r.lo < r.score < r.hi and r.vs == "sft"
    tox = df[(df.variant == "sft") & (df.bench == "toxigen")].iloc[0]
    assert tox.score == pytest.approx(30.0)  # ‰


def test_report_md_sections_in_order_with_all_tables(report_dir):
    md = (report_dir / "report.md").read_text()
    heads = [h for h in re.findall(r"^## (.+)$", md, flags=re.M)]
    assert heads[0] == "Alarms" and heads[1] == "Comparison" and "Definitions" in heads
    for h in ("HRLAIF vs RLAIF", "Satisfaction rate per category", "Win ratio vs SFT per category",
              "Label accuracy: basic vs hybrid AI feedback", "Reward-model accuracy per category", "Drift during PPO",
              "Alarm power"):
        assert h in heads
    sat = md.split("## Satisfaction rate per category")[1].split("## ")[0]
    assert all(f"| {c} |" in sat for c in CATEGORIES) and len(CATEGORIES) == 12
    label = md.split("## Label accuracy")[1].split("## ")[0]
    # clustered by prompt: n pairs, (K prompts); what the truth was; where the two answer checks disagree
    # (a file without the paired difference: the bare Δ, said to be unpaired; the row named answer-check agreement)
    assert re.search(r"\| math \(answer-check agreement\) \| 62\.5% \[\d+\.\d, \d+\.\d\] n=40 \(10 prompts\) \| "
                     r"90\.0% \[\d+\.\d, \d+\.\d\] n=40 \(10 prompts\) \| Δ \+27\.5 pt \(unpaired\) \| "
                     r"second answer check \|",
                     label)
    assert "disagree on 1 of 30 checked responses" in label and "| p7 #2 | math | 12 | 12.0 -> False |" in label
    rm = md.split("## Reward-model accuracy per category")[1].split("## ")[0]
    assert "(clipped share)" in rm and "0.40% at \\|r\\|>10" in rm and "(held-out, all)" in rm
    assert "n=600 (120 prompts)" in rm
    assert re.search(r"\| \(shared held-out pairs\) \| 6\d\.\d% \[\d+\.\d, \d+\.\d\] n=120 \(40 prompts\) \|", rm)
    red = md.split("## AI red teaming")[1].split("## ")[0]  # the counts behind the hybrid RM's extra pairs
    assert "| red teaming | 10 | 20 | 9 | 9 | 7 | 2 | 1 | 14 |" in red and "harmbench 6, advbench 4" in red
    usage = md.split("## Judge usage")[1].split("## ")[0]
    assert "| label_basic · labelling | 120 | 40 | 80 | 30000 | 120 | 2 | embedded |" in usage
    assert "| total | 240 | 80 | 160 | 60000 | 240 | 4 |" in usage
    defs = md.split("## Definitions")[1]
    assert "Wilson" in defs and "bootstrap" in defs and "tie counts as half" in defs and "McNemar" in defs
    assert md.count(INVALID_RULE) == 1  # the invalid-item rule, stated once
    # definitions come from results.json
    assert "exact match of the last number in the response" in defs
    assert "![drift rlaif](drift_rlaif.png)" in md


def test_drift_plots_are_pngs(report_dir):
    import matplotlib.image as mpimg

    for v in ("rlaif", "hrlaif"):
        p = report_dir / f"drift_{v}.png"
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        h, w = mpimg.imread(p).shape[:2]
        assert w > 600 and h > 400


def test_missing_benchmarks_and_stages_render_as_dash(tmp_path):
    run = write_synthetic_run(tmp_path / "run", missing=("rlaif:gsm8k", "hrlaif:toxigen", "eval_hrlaif",
                                                          "label_hybrid", "rm_basic", "ppo_hrlaif"))
    out = build_report(run)
    df = pd.read_csv(out / "comparison.csv", index_col=0)
    assert df.loc["RLAIF", "GSM8K"] == "—"
    assert (df.loc["HRLAIF"] == "—").all()
    assert CELL.match(df.loc["RLAIF", "MMLU"])
    md = (out / "report.md").read_text()
    assert "eval_hrlaif/results.json missing" in md
    assert "_no data_" in md.split("## Label accuracy")[1].split("## ")[0]
    assert "| — | " in md.split("## Reward-model accuracy")[1].split("## ")[0]
    assert (out / "drift_rlaif.png").exists() and not (out / "drift_hrlaif.png").exists()


def test_empty_run_dir_reports_without_crashing(tmp_path):
    (tmp_path / "run").mkdir()
    out = build_report(tmp_path / "run")
    df = pd.read_csv(out / "comparison.csv", index_col=0)
    assert list(df.index) == ["SFT", "RLAIF", "HRLAIF"]
    assert json.loads((out / "alarms.json").read_text())["n_alarms"] == 0


def test_permille_scale_reads_fraction_or_permille():
    assert permille_scale({"score": 0.012, "ci95": [0.004, 0.03]}) == 1000.0
    assert permille_scale({"score": 12.0, "ci95": [4.0, 30.0]}) == 1.0
    assert permille_scale({"score": 0.0, "ci95": [0.0, 19.0]}) == 1.0  # 0 ‰ with a ‰ CI


def test_regeneration_via_cli_is_quick(run_dir, run_cli):
    build_report(run_dir)  # warm imports, as a second `hrlaif report` in the same process would be
    t0, c0 = time.perf_counter(), time.process_time()
    code, out, err = run_cli("report", run_dir)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert code == 0, err
    assert "report written to" in out
    # ~1 s of CPU when warm (bench/report_speed.py prints the figure). The bounds are ~10x that:
    # busy neighbours on a shared 2-core runner cannot trip them, a 10x slowdown of the report does.
    # Wall time mostly measures the neighbours, hence its looser bound.
    assert cpu < 10.0, f"report used {cpu:.1f} s of CPU (bench/report_speed.py measures it)"
    assert wall < 60.0, f"report took {wall:.1f} s wall"


def test_cli_bad_input_is_one_line_exit_2(tmp_path, run_cli):
    code, _, err = run_cli("report", tmp_path / "nope")
    assert code == 2 and "run directory not found" in err and "Traceback" not in err
    write_text(tmp_path / "run" / "eval_sft" / "results.json", "{not json")
    code, _, err = run_cli("report", tmp_path / "run")
    assert code == 2 and "not valid JSON" in err and len(err.strip().splitlines()) == 1


def _notice(root: Path) -> str | None:
    return grading_notice(collect(root))


def test_self_grading_notice_in_the_first_lines(tmp_path, report_dir):
    top = (report_dir / "report.md").read_text().split("## Alarms")[0]
    assert "**NOTE** Self-grading: the evaluation judge is the labelling judge (embedded)" in top
    assert "not evaluable: self-graded" in top and "allow_self_graded" in top
    assert "cannot show here" in top
    assert _notice(write_synthetic_run(tmp_path / "b", grader=False)) is None
    # not recorded (an older evaluation): inferred from the judge identities of results.json and the label summary
    root = write_synthetic_run(tmp_path / "c", grader=None)
    assert "Self-grading" in _notice(root) and "Inferred from the judge identities" in _notice(root)
    # an independent evaluation judge: no notice
    for v in ("sft", "rlaif", "hrlaif"):
        p = root / f"eval_{v}" / "results.json"
        res = json.loads(p.read_text())
        for e in res["benchmarks"].values():
            if "judge" in e:
                e["judge"] = {"url": "https://api.example.com/v1", "model": "grader-70b"}
        write_text(p, json.dumps(res))
    assert _notice(root) is None
    # the evaluation's own notice text, when it writes one, is shown as written
    res = json.loads((root / "eval_sft" / "results.json").read_text())
    write_text(root / "eval_sft" / "results.json", json.dumps({**res, "grader_notice": "Graded by the labeller."}))
    assert _notice(root) == "Graded by the labeller."


def test_hrlaif_vs_rlaif_section_with_head_to_head(run_dir, report_dir):
    md = (report_dir / "report.md").read_text()
    sec = md.split("## HRLAIF vs RLAIF")[1].split("## ")[0]
    head = [line for line in sec.splitlines() if line.startswith("| Model")][0]
    assert "Win ratio vs SFT" not in head and head.endswith("| Win ratio vs RLAIF |")
    hr = [line for line in sec.splitlines() if line.startswith("| HRLAIF")][0]
    assert hr.count("Δ ") == 6
    assert re.search(r"\| 6\d\.\d% \[\d+\.\d, \d+\.\d\] n=237 \[self-graded\] invalid=3 W/T/L \d+/\d+/\d+ \|$", hr)
    # the satisfaction Δ is paired HRLAIF − RLAIF on the prompts both judged validly
    a = {r["doc_id"]: r["score"] for r in read_jsonl(run_dir / "eval_rlaif" / "samples" / "satisfaction.jsonl")}
    b = {r["doc_id"]: r["score"] for r in read_jsonl(run_dir / "eval_hrlaif" / "samples" / "satisfaction.jsonl")}
    keys = [k for k in a if a[k] is not None and b[k] is not None]
    d = (sum(b[k] for k in keys) - sum(a[k] for k in keys)) / len(keys)
    assert f"Δ {d * 100:+.1f} pt [" in hr.split("|")[7]


def test_head_to_head_not_evaluated_says_so(tmp_path):
    root = write_synthetic_run(tmp_path / "run", h2h=False)
    blocks = versus_blocks(collect(root), {v: root / f"eval_{v}" for v in ("sft", "rlaif", "hrlaif")})
    sec = render_markdown(blocks)
    assert "| not evaluated |" in sec and "has no win_ratio_vs_rlaif entry" in sec


def test_small_categories_show_no_ci(tmp_path):
    """Categories with fewer than 5 prompts: no CI and no test, marked in the markdown."""
    root = rare_category(write_synthetic_run(tmp_path / "run"))
    run = collect(root)
    paired = paired_frame(run.results, {v: root / f"eval_{v}" for v in run.results}, "sft", groups=("satisfaction",))
    sat = to_markdown(category_table(run.satisfaction_by_cat, paired=paired, bench="satisfaction"))
    rare = [line for line in sat.splitlines() if line.startswith("| rare |")][0]
    assert rare.count(FEW) >= 3 and "[" not in rare and "p=" not in rare
    other = [line for line in sat.splitlines() if line.startswith("| math |")][0]
    assert FEW not in other and "[" in other


def test_unclustered_accuracy_files_are_marked(tmp_path):
    root = write_synthetic_run(tmp_path / "run", clustered=False)
    label = to_markdown(label_accuracy_table(label_accuracy_frame(root)))
    assert "(CI not clustered)" in label and "prompts)" not in label


def test_unreliable_toxigen_shows_the_reason_not_the_rate(tmp_path):
    root = write_synthetic_run(tmp_path / "run")
    p = root / "eval_rlaif" / "results.json"
    res = json.loads(p.read_text())
    res["benchmarks"]["toxigen"]["unreliable"] = "the toxicity classifier is at chance on held-apart labelled sentences"
    write_text(p, json.dumps(res))
    df = comparison_table(benchmark_frame(load_results(root)))
    cell = df.loc["RLAIF", LABEL["toxigen"]]
    assert cell == "unreliable: the toxicity classifier is at chance on held-apart labelled sentences"
    assert "Δ" in df.loc["HRLAIF", LABEL["toxigen"]]


def test_gold_vs_proxy_view(report_dir):
    import matplotlib.image as mpimg

    md = (report_dir / "report.md").read_text()
    sec = md.split("### Gold vs proxy")[1].split("## ")[0]
    assert "![gold vs proxy rlaif](gold_proxy_rlaif.png)" in sec and "| step 900 | 4.243 |" in sec
    h, w = mpimg.imread(report_dir / "gold_proxy_rlaif.png").shape[:2]
    assert w > 600 and h > 250


def test_delta_on_partly_shared_items_says_so(tmp_path):
    root = write_synthetic_run(tmp_path / "run")
    p = root / "eval_rlaif" / "samples" / "mmlu.jsonl"
    write_text(p, "".join(json.dumps(r) + "\n" for r in read_jsonl(p)[:100]))
    run = collect(root)
    paired = paired_frame(run.results, {v: root / f"eval_{v}" for v in run.results}, "sft")
    cell = comparison_table(run.benchmarks, paired).loc["RLAIF", "MMLU"]
    assert cell.endswith(" on 100 common items") and "Δ " in cell
