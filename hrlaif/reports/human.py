"""Human verdicts in a report: rows of their own for what `hrlaif annotate import` recorded in an
evaluation (results.json `human_satisfaction` / `human_win_ratio`, samples/<name>.jsonl): the human
satisfaction rate and win ratio with 95% CIs, the paired human Δ against the baseline row on the
prompts both were rated on, and Cohen's κ against the AI judge on the same prompts."""
from __future__ import annotations

import pandas as pd

from hrlaif.core.console import DASH, present
from hrlaif.reports import tables
from hrlaif.reports.paired import lookup

HUMAN_SAT, HUMAN_WIN = "human_satisfaction", "human_win_ratio"


def _kappa(e: dict | None) -> str:
    k = ((e or {}).get("extra") or {}).get("kappa_vs_ai_judge")
    n = ((e or {}).get("extra") or {}).get("n_compared")
    return DASH if k is None else f"{k:.2f}" + (f" (n={n})" if n else "")


def human_table(results: dict[str, dict | None], paired: pd.DataFrame | None, labels: dict[str, str],
                baseline: str) -> pd.DataFrame:
    """One row per evaluation with human verdicts (empty when none has them)."""
    rows = {}
    for v, res in results.items():
        b = (res or {}).get("benchmarks") or {}
        sat, win = b.get(HUMAN_SAT), b.get(HUMAN_WIN)
        if not sat and not win:
            continue
        row = {"Human satisfaction": tables.cell(sat["score"], *sat["ci95"], sat["n"]) if sat else DASH}
        r = lookup(paired, v, HUMAN_SAT) if v != baseline else None
        row[f"Δ human satisfaction vs {labels.get(baseline, baseline)}"] = (
            tables.fmt_paired(r) if r is not None and r["n"] else "(baseline)" if v == baseline else DASH)
        if win:
            x = win.get("extra") or {}
            text = tables.cell(win["score"], *win["ci95"], win["n"])
            if present(x.get("wins")):
                text += f" W/T/L {int(x['wins'])}/{int(x.get('ties') or 0)}/{int(x.get('losses') or 0)}"
            row["Human win ratio vs baseline model"] = text
        else:
            row["Human win ratio vs baseline model"] = DASH
        row["κ satisfaction vs AI judge"] = _kappa(sat)
        row["κ preference vs AI judge"] = _kappa(win)
        rows[labels.get(v, v)] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "Model"
    return df


def human_blocks(results: dict[str, dict | None], paired: pd.DataFrame | None, labels: dict[str, str],
                 baseline: str) -> list[tuple]:
    t = human_table(results, paired, labels, baseline)
    if t.empty:
        return []
    return [("h2", "Human verdicts"), ("table", t, "human_verdicts"),
            ("note", "Verdicts of human raters imported with `hrlaif annotate import` (never self-graded). Δ is paired "
                     "on the prompts both models were rated on (exact McNemar + Tango, as every 0/1 cell); κ is "
                     "Cohen's kappa between the raters and the AI judge on the same prompts (1 = full agreement, "
                     "0 = chance).")]
