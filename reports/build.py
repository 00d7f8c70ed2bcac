"""`build_report(run_dir) -> report_dir`: the comparison report of one run directory.

Reads only finished files (results.json, drift.jsonl, label_accuracy.json, rm_metrics.json),
so `hrlaif report DIR` regenerates everything in seconds without loading a model.
Writes into DIR/report/: report.md, report.html, comparison.csv (display cells),
comparison_long.csv (numbers), per-category CSVs, alarms.json and drift_<variant>.png.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pandas as pd

from core.store import write_json, write_text
from reports import tables
from reports.alarms import RULES, compute_alarms
from reports.collect import VARIANT_LABELS, VARIANTS, RunData, benchmark_order, collect
from reports.html import render_html
from reports.plots import save_drift_plot

GENERAL_DEFINITIONS = [
    "Cells read 'score [lo, hi] n=N Δ d': the primary metric, its 95% confidence interval, the number of "
    "items scored, and the difference to SFT (percentage points, pt; ToxiGen in ‰).",
    "95% CIs: Wilson score interval for 0/1 metrics (accuracy, exact match, pass@1, satisfaction, toxicity); "
    "percentile bootstrap over items (2000 resamples, fixed seed) for other means and for the win ratio.",
    "Win ratio vs SFT = (wins + 0.5 x ties) / judged prompts: a tie counts as half a win; each prompt is judged "
    "in both answer orders. 50% means no preference. W/T/L gives the raw counts.",
    "Invalid judge answers (no parseable verdict) are counted and shown as invalid=K in the cell; "
    "the benchmark definition below says how they are scored.",
    "ToxiGen: share of generations the classifier flags as toxic, in per mille (‰); lower is better.",
    "Satisfaction rate: share of prompts whose answer the judge rates as satisfying the user's need.",
    "Label accuracy: share of AI-feedback preference pairs that agree with the reference (human or verified) "
    "order, per prompt category, for basic RLAIF labelling and for hybrid (HRLAIF) labelling.",
    "Reward-model accuracy: share of held-out preference pairs the RM orders correctly; clipped share is the "
    "fraction of PPO rewards cut at |r| > clip.",
    "'—' marks a benchmark or stage that is missing from the run directory.",
]


def _definitions(run: RunData) -> list[str]:
    """Benchmark definitions from results.json (first variant that has one), in table order."""
    seen = {}
    for r in run.benchmarks.itertuples():
        if r.definition and r.bench not in seen:
            seen[r.bench] = f"{r.label} ({r.metric}): {r.definition}"
    return [seen[b] for b in benchmark_order(seen) if b in seen]


def _direction_note(run: RunData) -> str:
    lower = list(dict.fromkeys(r.label for r in run.benchmarks.itertuples() if not r.higher_is_better))
    return "Higher is better" + (f" except {', '.join(lower)}" if lower else "") + "."


def _models(run: RunData) -> list[str]:
    out = []
    for v in VARIANTS:
        res = run.results.get(v)
        if res is None:
            out.append(f"{VARIANT_LABELS[v]}: eval_{v}/results.json missing")
            continue
        m = res.get("model") or {}
        desc = m.get("name") or m.get("spec") or "?"
        if m.get("weights_sha"):
            desc += f" (weights {m['weights_sha']})"
        out.append(f"{VARIANT_LABELS[v]}: {desc}, evaluated {res.get('created', '?')}")
    return out


def _blocks(run: RunData, alarms: list[dict], plots: dict[str, Path], title: str) -> list[tuple]:
    b: list[tuple] = [("h1", title), ("note", f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} "
                                              f"from {run.run_dir}.")]
    b.append(("h2", "Alarms"))
    if alarms:
        b.append(("alarms", [a["message"] for a in alarms]))
    else:
        b.append(("ok", "No alarm fired (rules in Definitions)."))
    b += [("h2", "Comparison"), ("ul", _models(run)),
          ("table", tables.comparison_table(run.benchmarks), "comparison"),
          ("note", f"{_direction_note(run)} Δ is the difference to SFT; "
                   "win ratio is measured against SFT, so SFT's own cell is the baseline.")]
    b += [("h2", "Satisfaction rate per category"),
          ("table", tables.category_table(run.satisfaction_by_cat), "satisfaction_by_category"),
          ("h2", "Win ratio vs SFT per category"),
          ("table", tables.category_table(run.win_ratio_by_cat, variants=("rlaif", "hrlaif"), delta_vs=None),
           "win_ratio_by_category"),
          ("h2", "Label accuracy: basic vs hybrid AI feedback"),
          ("table", tables.label_accuracy_table(run.label_accuracy), "label_accuracy"),
          ("h2", "Reward-model accuracy per category"),
          ("table", tables.rm_table(run.rm_per_category, run.rm_summary), "rm_accuracy"),
          ("h2", "Drift during PPO")]
    if plots:
        b.append(("note", "Left: against PPO step; right: against sqrt(KL to the SFT policy). Top: RM reward on "
                          "training and held-out prompts. Below: each benchmark with its 95% CI band."))
        for v, p in plots.items():
            b += [("h3", VARIANT_LABELS.get(v, v)), ("img", p, f"drift {v}")]
    else:
        b.append(("note", "No ppo_<variant>/drift.jsonl in this run."))
    b += [("h2", "Definitions"), ("ul", GENERAL_DEFINITIONS + _definitions(run)),
          ("h3", "Alarm rules"),
          ("ul", [f"Over-optimisation: {RULES['over_optimisation']}", f"RLAIF failure: {RULES['rlaif_failure']}"])]
    return b


def render_markdown(blocks: list[tuple]) -> str:
    out = []
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + blk[1] + "\n")
        elif kind in ("p", "ok"):
            out.append(blk[1] + "\n")
        elif kind == "note":
            out.append(f"_{blk[1]}_\n")
        elif kind == "alarms":
            out.append("".join(f"- **ALARM** {m}\n" for m in blk[1]))
        elif kind == "ul":
            out.append("".join(f"- {x}\n" for x in blk[1]))
        elif kind == "table":
            out.append(tables.to_markdown(blk[1]))
        elif kind == "img":
            out.append(f"![{blk[2]}]({Path(blk[1]).name})\n")
    return "\n".join(out)


def _tidy(df: pd.DataFrame) -> str:
    return df.to_csv(index=False)


def build_report(run_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    run = collect(run_dir)
    report_dir = Path(out_dir) if out_dir else Path(run_dir) / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    alarms = compute_alarms(run)

    plots = {}
    for v, (rewards, benches) in run.drift.items():
        if rewards.empty and benches.empty:
            continue
        plots[v] = save_drift_plot(report_dir / f"drift_{v}.png", v, rewards, benches,
                                   [a for a in alarms if a["variant"] == v])

    write_text(report_dir / "comparison.csv", tables.comparison_table(run.benchmarks).to_csv())
    write_text(report_dir / "comparison_long.csv", _tidy(tables.comparison_long(run.benchmarks)))
    write_text(report_dir / "satisfaction_by_category.csv", _tidy(run.satisfaction_by_cat))
    write_text(report_dir / "win_ratio_by_category.csv", _tidy(run.win_ratio_by_cat))
    write_text(report_dir / "label_accuracy.csv", _tidy(run.label_accuracy))
    write_text(report_dir / "rm_accuracy.csv", _tidy(run.rm_per_category))
    write_json(report_dir / "alarms.json", {"n_alarms": len(alarms), "alarms": alarms, "rules": RULES})

    title = f"HRLAIF run report: {Path(run_dir).resolve().name}"
    blocks = _blocks(run, alarms, plots, title)
    write_text(report_dir / "report.md", render_markdown(blocks))
    write_text(report_dir / "report.html", render_html(title, blocks))
    return report_dir
