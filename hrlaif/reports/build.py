"""`build_report(run_dir) -> report_dir`: the comparison report of one run directory.

Reads only finished files (results.json and samples/, drift.jsonl and drift/step_<N>/,
label_accuracy.json, rm_metrics.json), so `hrlaif report DIR` regenerates everything in seconds
without loading a model. Writes into DIR/report/: report.md, report.html, comparison.csv
(display cells), comparison_long.csv (numbers), per-category CSVs, alarms.json, drift_<variant>.png
and gold_proxy_<variant>.png.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pandas as pd

from hrlaif.core.judge_audit import DEFINITIONS as AUDIT_DEFINITIONS
from hrlaif.core.stats import INVALID_RULE, MIN_N_CI
from hrlaif.core.store import write_json, write_text
from hrlaif.reports import tables
from hrlaif.reports.alarms import RULES, assess, not_evaluable
from hrlaif.reports.collect import (
    HEAD_TO_HEAD,
    SATISFACTION,
    VARIANT_LABELS,
    VARIANTS,
    RunData,
    benchmark_order,
    collect,
    label_disagreements,
)
from hrlaif.reports.drift import read_drift_items
from hrlaif.reports.human import human_blocks
from hrlaif.reports.paired import paired_frame
from hrlaif.reports.plots import save_drift_plot
from hrlaif.reports.render import write_pages
from hrlaif.reports.sections import (
    drift_blocks,
    grading_notice,
    judge_usage_blocks,
    power_table,
    redteam_blocks,
    versus_blocks,
)
from hrlaif.reports.seeds import DEFINITION as SEED_DEFINITION
from hrlaif.reports.seeds import seed_blocks
from hrlaif.reports.table1 import rm_paired
from hrlaif.reports.verdict_trust import RUN_CONFIG, audit_blocks, cell_marks, degenerate_notice, run_untrusted

# What every table cell means: shared by the run report and `hrlaif compare`.
STAT_DEFINITIONS = [
    "Cells read 'score [lo, hi] n=N Δ d [dlo, dhi] p=P': the primary metric, its 95% confidence interval, the "
    "number of items scored, and the paired difference to the baseline row (SFT in a run report, the first "
    "entry in hrlaif compare, RLAIF in the HRLAIF-vs-RLAIF section) in percentage points (pt; ToxiGen in ‰) "
    "with its 95% CI and two-sided p.",
    "95% CIs: Wilson score interval for 0/1 metrics (accuracy, exact match, pass@1, satisfaction, toxicity); "
    "percentile bootstrap over items (2000 resamples, fixed seed) for other means and for the win ratio.",
    "Paired differences: candidate − baseline over the items both evaluated (same doc_id). 0/1 scores: the "
    "hull of the exact McNemar CI (conditional on the items that differ) and Tango's score CI (unconditional, "
    "so items that all agree still leave an interval of about ±z²/(n+z²)), and the larger of the two tests' p, "
    "so the CI excludes 0 exactly when p < 0.05; "
    "other scores: the sign-flip permutation test (exact over all 2^n sign patterns up to 12 items, 5000 seeded "
    "patterns above; its type-I error is at most 5% at every n), with a paired t CI below 30 items and a paired "
    "percentile bootstrap CI (10000 resamples, fixed seed) above.",
    "Multiplicity: beside each p the cell gives the Holm-adjusted p and the family it was adjusted over ('over 6 "
    "benchmarks': one row's benchmarks against its baseline; 'over 12 categories of satisfaction': one "
    "benchmark's categories). Read a single cell by its p, a claim about any of the family by the Holm p. The "
    "gate needs no Holm: it passes only when every benchmark passes (an intersection-union test, whose error "
    "is at most each test's alpha), so Holm would only cost it power.",
    "Invalid items: the cell gives each side's invalid rate on the items both evaluated and the exact McNemar p "
    "of their difference ('invalid 0.8% vs 4.2%, McNemar p=0.03'): a model whose bad outputs make the judge fail "
    "loses exactly those items from the pairs. The gate decides at the worst case instead: a candidate's invalid "
    "item is a failure, a baseline's a success (README: The gate).",
    "'inconclusive (MDE x pt)': the CI includes 0 and the minimum detectable effect — the smallest difference "
    "the cell's own two-sided 5% test finds with 80% power on these items (0/1 scores: exact power of the McNemar "
    "+ Tango test at a discordance of sd²; others: the paired t test's, noncentral t; tests/test_small_n.py "
    "checks 80% ± 3 pt by simulation at n = 12 to 1000) — is "
    "larger than the difference seen: the items can neither show an effect nor rule out one of size x.",
    f"Fewer than {MIN_N_CI} items: no CI and no test, the cell is marked {tables.FEW} (greyed, and folded when "
    "the whole row is, in the HTML).",
    "'(unpaired: no samples)': a side lacks samples/<bench>.jsonl, so the difference is of the two scores, "
    "without a CI.",
    INVALID_RULE,
]
GENERAL_DEFINITIONS = STAT_DEFINITIONS + [
    "Win ratio vs SFT = (wins + 0.5 x ties) / validly judged prompts: a tie counts as half a win; each prompt is "
    "judged in both answer orders. 50% means no preference. W/T/L gives the raw counts.",
    "ToxiGen: share of generations the classifier flags as toxic, in per mille (‰); lower is better.",
    "Satisfaction rate: share of prompts whose answer the judge rates as satisfying the user's need.",
    "Label accuracy: share of AI-feedback preference pairs that agree with the reference (human) order, per "
    "prompt category, for basic RLAIF labelling and for hybrid (HRLAIF) labelling; against the second answer "
    "check the rows are named answer-check agreement (hybrid's own verified pairs make it near 100% there). "
    "hybrid − basic and RM hybrid − RM basic are paired differences on the same pairs (+1, 0 or -1 per pair) "
    "with a 95% bootstrap CI that resamples prompts.",
    "Reward-model accuracy: share of held-out preference pairs the RM orders correctly; clipped share is the "
    "fraction of PPO rewards cut at |r| > clip.",
    "Accuracies over pairs (label and RM accuracy): the pairs of one prompt share its responses, so the CI is a "
    "bootstrap that resamples whole prompts ('(K prompts)'); '(CI not clustered)' marks a file written before "
    "that, whose CI treats pairs as independent and is too narrow.",
    "'[self-graded]': the cell was graded by the evaluation judge while that judge is the labelling judge or the "
    "policy's own base model (same weights hash for a local judge, same URL + model otherwise): it measures "
    "agreement with that judge. The alarms and the gate leave such cells out ('not evaluable: self-graded') unless "
    "the run config sets allow_self_graded: true. Human verdicts (hrlaif annotate) are never self-graded.",
    "'—' marks a benchmark or stage that is missing from the run directory.",
]


def benchmark_definitions(bench_df: pd.DataFrame) -> list[str]:
    """Benchmark definitions from results.json (first variant that has one), in table order."""
    seen = {}
    for r in bench_df.itertuples():
        if r.definition and r.bench not in seen:
            seen[r.bench] = f"{r.label} ({r.metric}): {r.definition}"
    return [seen[b] for b in benchmark_order(seen) if b in seen]


def _direction_note(run: RunData) -> str:
    lower = list(dict.fromkeys(r.label for r in run.benchmarks.itertuples() if not r.higher_is_better))
    return "Higher is better" + (f" except {', '.join(lower)}" if lower else "") + "."


def describe_model(res: dict) -> str:
    """'name (weights sha), evaluated <time>' of one results.json."""
    m = res.get("model") or {}
    desc = m.get("name") or m.get("spec") or "?"
    if m.get("weights_sha"):
        desc += f" (weights {m['weights_sha']})"
    return f"{desc}, evaluated {res.get('created', '?')}"


def _models(run: RunData) -> list[str]:
    return [f"{VARIANT_LABELS[v]}: " + (describe_model(run.results[v]) if run.results.get(v)
                                       else f"eval_{v}/results.json missing") for v in VARIANTS]


def _disagreement_blocks(run: RunData) -> list[tuple]:
    dis = label_disagreements(run.run_dir)
    if not dis:
        return []
    b = [("note", f"Answer checks: the hybrid labeller's check and the second check disagree on {dis.get('n', 0)} of "
                  f"{dis.get('checked', 0)} checked responses" + (f" ({dis['definition']})" if dis.get("definition")
                                                                 else "") + ".")]
    if dis.get("items"):
        b.append(("table", tables.disagreement_table(dis), "answer_check_disagreements"))
    return b


def _eval_dirs(run: RunData) -> dict[str, Path]:
    return {v: Path(run.run_dir) / f"eval_{v}" for v in VARIANTS}


def _blocks(run: RunData, alarms: list[dict], power: list[dict], plots: dict[str, Path], paired: pd.DataFrame,
            items: dict, report_dir: Path, title: str, seeds: list[tuple] = ()) -> list[tuple]:
    b: list[tuple] = [("h1", title)]
    for notice in (degenerate_notice(run.run_dir), grading_notice(run)):
        if notice:
            b.append(("warn", notice))
    b.append(("note", f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} from {run.run_dir}."))
    b.append(("h2", "Alarms"))
    if alarms:
        b.append(("alarms", [a["message"] for a in alarms]))
    else:
        b.append(("ok", "No alarm fired (rules in Definitions; the Alarm power table says what they could detect)."))
    for v, why in not_evaluable(run.run_dir).items():
        b.append(("note", f"RLAIF-failure alarm for {VARIANT_LABELS.get(v, v)}: not tested, its win ratio and "
                           f"satisfaction cells are not evaluable: {why}."))
    b += audit_blocks(run.run_dir)
    b += [("h2", "Comparison"), ("ul", _models(run)),
          ("table", tables.comparison_table(run.benchmarks, paired, exclude=(HEAD_TO_HEAD,)), "comparison"),
          ("note", f"{_direction_note(run)} Δ is the paired difference to SFT on the same items; "
                   "win ratio is measured against SFT, so SFT's own cell is the baseline.")]
    b += human_blocks(run.results, paired, VARIANT_LABELS, "sft")
    b += versus_blocks(run, _eval_dirs(run))
    b += list(seeds)  # training seeds: per-seed scores and Δs that resample seeds (hrlaif/reports/seeds.py)
    b += [("h2", "Satisfaction rate per category"),
          ("table", tables.category_table(run.satisfaction_by_cat, paired=paired, bench=SATISFACTION),
           "satisfaction_by_category"),
          ("h2", "Win ratio vs SFT per category"),
          ("table", tables.category_table(run.win_ratio_by_cat, variants=("rlaif", "hrlaif"), delta_vs=None),
           "win_ratio_by_category"),
          ("h2", "Label accuracy: basic vs hybrid AI feedback"),
          ("table", tables.label_accuracy_table(run.label_accuracy), "label_accuracy"),
          ("note", "Rows '(answer-check agreement)' score the labels against the second answer check: hybrid's "
                   "verified pairs enforce the same 'correct beats wrong', so hybrid wins there by construction; they "
                   "show how often two answer checks agree, not label quality. Label accuracy proper is against "
                   "human preferences (hh-rlhf, annotate sheets); '· both correct (human)' rows are pairs of two "
                   "correct answers humans ranked, the only verifiable pairs the AI judge decides within hybrid "
                   "labelling. hybrid − basic is paired on the same truth pairs, its 95% CI clustered by prompt."),
          *_disagreement_blocks(run),
          ("h2", "Reward-model accuracy per category"),
          ("table", tables.rm_table(run.rm_per_category, run.rm_summary, rm_paired(run.run_dir)), "rm_accuracy")]
    b += drift_blocks(run, items, plots, report_dir)
    b += redteam_blocks(run.run_dir)
    b += judge_usage_blocks(run.run_dir)
    b += [("h2", "Alarm power"),
          ("table", power_table(power), "alarm_power"),
          ("note", "The smallest true change each alarm condition detects at the sizes this "
                   "run used (items per drift benchmark, held-out prompts, evaluated prompts), at the level the "
                   "rule tests it (drift: 0.01 split over its checkpoint x benchmark tests), with power √0.8 = 89% "
                   "each: an alarm needs both of its conditions, so when both effects are at their MDE it fires "
                   "with 80% probability (the drift conditions read different items, so they are independent; "
                   "the RLAIF-failure conditions are graded on the same prompts, where 80% is approximate). "
                   "Each MDE is its own test's (exact McNemar + Tango for 0/1 scores, sign-flip/t otherwise). "
                   "Smaller effects "
                   "can go unnoticed: a quiet report at large MDEs is not evidence of no effect.")]
    b += [("h2", "Definitions"),
          ("ul", GENERAL_DEFINITIONS + [SEED_DEFINITION] + AUDIT_DEFINITIONS + benchmark_definitions(run.benchmarks)),
          ("h3", "Alarm rules"),
          ("ul", [f"Over-optimisation: {RULES['over_optimisation']}", f"RLAIF failure: {RULES['rlaif_failure']}"])]
    return b


def _tidy(df: pd.DataFrame) -> str:
    return df.to_csv(index=False)


def build_report(run_dir: Path | str, out_dir: Path | str | None = None, allow_self_graded: bool | None = None) -> Path:
    """`allow_self_graded` (the run config's setting) is recorded in RUN/run_config.json, which later
    reports of the run read (None: keep what it says)."""
    if allow_self_graded is not None:
        write_json(Path(run_dir) / RUN_CONFIG, {"allow_self_graded": bool(allow_self_graded)})
    run = collect(run_dir)
    marks = cell_marks(run_untrusted(run_dir, allow=()))  # every cell says it, allowed or not
    run.benchmarks["untrusted"] = [marks.get(k) for k in zip(run.benchmarks.variant, run.benchmarks.bench)]
    report_dir = Path(out_dir) if out_dir else Path(run_dir) / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    items = {v: read_drift_items(Path(run_dir) / f"ppo_{v}") for v in run.drift}
    alarms, power = assess(run, items)
    paired = paired_frame(run.results, _eval_dirs(run), baseline="sft", groups=(SATISFACTION,))

    plots = {}
    for v, (rewards, benches) in run.drift.items():
        if rewards.empty and benches.empty:
            continue
        plots[v] = save_drift_plot(report_dir / f"drift_{v}.png", v, rewards, benches,
                                   [a for a in alarms if a["variant"] == v])

    main = run.benchmarks[run.benchmarks.bench != HEAD_TO_HEAD]
    write_text(report_dir / "comparison.csv", tables.comparison_table(main, paired).to_csv())
    write_text(report_dir / "comparison_long.csv", _tidy(tables.comparison_long(main, paired)))
    write_text(report_dir / "satisfaction_by_category.csv", _tidy(run.satisfaction_by_cat))
    write_text(report_dir / "win_ratio_by_category.csv", _tidy(run.win_ratio_by_cat))
    write_text(report_dir / "label_accuracy.csv", _tidy(run.label_accuracy))
    write_text(report_dir / "rm_accuracy.csv", _tidy(run.rm_per_category))
    seed_section, seed_frame = seed_blocks(run_dir)
    if seed_frame is not None:
        write_text(report_dir / "seeds_long.csv", _tidy(seed_frame))
    write_json(report_dir / "alarms.json", {"n_alarms": len(alarms), "alarms": alarms, "rules": RULES,
                                            "power": power, "not_evaluable": not_evaluable(run_dir)})

    title = f"HRLAIF run report: {Path(run_dir).resolve().name}"
    write_pages(report_dir, "report", title,
                _blocks(run, alarms, power, plots, paired, items, report_dir, title, seed_section))
    return report_dir
