"""Sections of the run report that need more than one table: the self-grading notice, the
HRLAIF-vs-RLAIF contrast, drift with the gold-vs-proxy view, and the alarms' power."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from hrlaif.core.console import DASH
from hrlaif.core.layout import MODES, RunLayout
from hrlaif.core.store import read_json
from hrlaif.evalsets import registry
from hrlaif.reports import tables
from hrlaif.reports.collect import HEAD_TO_HEAD, VARIANT_LABELS, RunData
from hrlaif.reports.drift import gold_proxy_frame
from hrlaif.reports.paired import paired_frame
from hrlaif.reports.plots import save_gold_proxy_plot
from hrlaif.reports.verdict_trust import self_graded

SELF_GRADING = (
    "Self-grading: {why} ({judge}). Satisfaction, the "
    "win ratios, the ToxiGen judge classifier and PPO's gold verdicts are graded by the model whose preferences "
    "trained the reward models, or that the policy started from (through different prompts), so they measure "
    "agreement with that judge, not human satisfaction: a "
    "policy tuned toward its preferences is favoured by construction, and the divergence between AI preference "
    "and human satisfaction that HRLAIF studies cannot show here. Their cells say [self-graded], and the alarms "
    "and the gate leave them out ('not evaluable: self-graded') unless the run config sets allow_self_graded: "
    "true. Set eval_judge to an independent model (eval_judge.url / eval_judge.model), or import human verdicts "
    "(hrlaif annotate), for verdicts that can.")
_SAME = "the evaluation judge is the same model as the labelling judge"


def _identity(j) -> str | None:
    """A judge identity (dict or string) as one comparable string; the embedded judge is 'embedded'."""
    if j is None:
        return None
    if isinstance(j, str):
        return j
    if j.get("embedded") or j.get("url") in ("embedded", None) and j.get("model") in ("embedded", None):
        return "embedded"
    return f"{j.get('model') or '?'} at {j.get('url') or '?'}"


def grading_notice(run: RunData) -> str | None:
    """The report's first-lines notice when the evaluation judge is the labelling judge: what the
    evaluation recorded (`grader_notice` text, or `grader_is_labeller`), else a comparison of the
    judge identities in results.json and label_*/summary.json."""
    evals = [r for r in run.results.values() if r]
    for res in evals:
        if res.get("grader_notice"):
            return str(res["grader_notice"])
    graders = ({_identity(e.get("judge")) for r in evals for e in r["benchmarks"].values() if isinstance(e, dict)}
               | {_identity((r.get("judges") or {}).get("evaluation")) for r in evals}) - {None}
    # null: the evaluation did not know the labeller (e.g. `hrlaif eval` on its own): infer below
    why = [w for r in evals if (w := self_graded(r))]
    flags = [r["grader_is_labeller"] for r in evals if r.get("grader_is_labeller") is not None]
    if why or flags:
        return SELF_GRADING.format(judge=", ".join(sorted(graders)) or "as recorded",
                                   why=why[0].partition(" (")[2].rstrip(")") if why else _SAME) if why else None
    labellers = {_identity((r.get("judges") or {}).get("labelling")) for r in evals}
    for mode in MODES.values():
        p = RunLayout(run.run_dir).label(mode).summary
        if p.exists():
            labellers.add(_identity((read_json(p) or {}).get("judge")))
    same = graders & (labellers - {None})
    if same:
        return (SELF_GRADING.format(judge=", ".join(sorted(same)), why=_SAME)
                + " (Inferred from the judge identities in results.json and label_*/summary.json.)")
    return None


def versus_blocks(run: RunData, dirs: dict) -> list[tuple]:
    """HRLAIF vs RLAIF: paired Δ on every benchmark, and the head-to-head win ratio."""
    b: list[tuple] = [("h2", "HRLAIF vs RLAIF")]
    if not run.results.get("rlaif") or not run.results.get("hrlaif"):
        return b + [("note", "Needs both eval_rlaif and eval_hrlaif.")]
    pair = {v: run.results[v] for v in ("rlaif", "hrlaif")}
    paired = paired_frame(pair, dirs, baseline="rlaif")
    df = run.benchmarks[run.benchmarks.variant.isin(pair)]
    present = set(df.bench) | set(registry.table_order())
    vs_sft = [x for x in present if x != HEAD_TO_HEAD and registry.info(x)["against_baseline"]]
    table = tables.comparison_table(df, paired, rows=("rlaif", "hrlaif"), baseline="rlaif", exclude=vs_sft)
    h2h = HEAD_TO_HEAD in set(df[df.variant == "hrlaif"].bench)
    label = registry.info(HEAD_TO_HEAD)["label"]
    label = "Win ratio vs RLAIF" if label == HEAD_TO_HEAD else label  # no spec for it here
    if not h2h:
        if label not in table.columns:
            table[label] = DASH
        table.loc[VARIANT_LABELS["hrlaif"], label] = "not evaluated"
    b.append(("table", table, "hrlaif_vs_rlaif"))
    b.append(("note", "Δ is HRLAIF − RLAIF on the items both evaluated (paired; the Definitions give the tests). "
                      + ("The head-to-head win ratio is HRLAIF judged against RLAIF on the same prompts, both orders."
                         if h2h else "The head-to-head win ratio is not evaluated: eval_hrlaif/results.json has "
                                     f"no {HEAD_TO_HEAD} entry (an evaluation with RLAIF as the second model writes "
                                     "it).")))
    return b


def drift_blocks(run: RunData, items: dict, plots: dict, report_dir: Path) -> list[tuple]:
    """Drift plots per variant, then the gold-vs-proxy view (plot and numbers) where heldout.jsonl
    carries the evaluation judge's verdicts."""
    b: list[tuple] = [("h2", "Drift during PPO")]
    if plots:
        b.append(("note", "Left: against PPO step; right: against sqrt(KL to the SFT policy). Top: RM reward on "
                          "held-out prompts (what the alarm reads) and on the training batch. Below: each benchmark "
                          "with its 95% CI band."))
        for v, p in plots.items():
            b += [("h3", VARIANT_LABELS.get(v, v)), ("img", p, f"drift {v}")]
    else:
        b.append(("note", "No ppo_<variant>/drift.jsonl in this run."))
    b.append(("h3", "Gold vs proxy"))
    shown = False
    # gold is the evaluation judge's verdict: self-graded when the evaluations are (hrlaif/reports/verdict_trust.py)
    gold = "judge satisfied (gold)" + (" [self-graded]" if any(r and self_graded(r) for r in run.results.values())
                                        else "")
    for v, (rewards, _) in run.drift.items():
        gp = gold_proxy_frame(rewards, items.get(v) or {})
        if gp.empty:
            continue
        shown = True
        png = save_gold_proxy_plot(report_dir / f"gold_proxy_{v}.png", v, gp)
        rows = {f"step {r.step}": {"sqrt KL": f"{r.sqrt_kl:.3f}", "RM reward (proxy)": f"{r.reward:.3f}",
                                   gold: tables.cell(r.gold, r.gold_lo, r.gold_hi, r.n),
                                   "invalid": int(r.invalid)} for r in gp.itertuples()}
        t = pd.DataFrame.from_dict(rows, orient="index")
        t.index.name = "Checkpoint"
        b += [("p", VARIANT_LABELS.get(v, v)), ("img", png, f"gold vs proxy {v}"), ("table", t, f"gold_proxy_{v}")]
    if shown:
        b.append(("note", "Proxy: mean RM reward of the policy's greedy responses to the held-out prompts. Gold: the "
                          "evaluation judge's satisfaction verdict on the same responses (invalid verdicts excluded "
                          "and counted). A proxy that keeps rising while gold stalls or falls is reward "
                          "over-optimisation (Gao et al. 2022)."))
    else:
        b.append(("note", "No judge verdicts on held-out responses: the view needs ppo_<variant>/drift/step_<N>/"
                          "heldout.jsonl with a `gold` field (written by hrlaif ppo when given the evaluation judge)."))
    return b


USAGE_COLUMNS = {"requests": "requests", "cache_hits": "cache hits", "http_calls": "HTTP calls",
                 "prompt_tokens": "prompt tokens", "completion_tokens": "completion tokens", "invalid": "invalid"}


def judge_usage_blocks(run_dir: Path) -> list[tuple]:
    """What the run actually asked of its judges (RUN/judge_usage.json, written by `hrlaif run`)."""
    p = RunLayout(run_dir).judge_usage
    if not p.exists():
        return []
    data = read_json(p) or {}
    rows = {}
    for stage, roles in (data.get("stages") or {}).items():
        for role, u in (roles or {}).items():
            if isinstance(u, dict):
                rows[f"{stage} · {role}"] = {c: int(u.get(k) or 0) for k, c in USAGE_COLUMNS.items()} | {
                    "judge": _identity(u.get("judge")) or DASH}
    if data.get("total"):
        rows["total"] = {c: int(data["total"].get(k) or 0) for k, c in USAGE_COLUMNS.items()} | {"judge": ""}
    t = pd.DataFrame.from_dict(rows, orient="index")
    t.index.name = "Stage · role"
    return [("h2", "Judge usage"), ("table", t, "judge_usage"),
            ("note", "Requests each stage made of its judges in this run (cache hits cost nothing; tokens as the "
                     "endpoint reported them for the requests sent). `hrlaif run --dry-run` gives the plan.")]


REDTEAM_COLUMNS = {"prompts": "harmful prompts", "responses": "SFT responses", "flagged": "judged harmful",
                   "rewrites": "rewritten", "rewrites_kept": "rewrites judged harmless (kept)",
                   "rewrites_dropped": "rewrites dropped", "harm_invalid": "invalid verdicts",
                   "pairs": "rewrite > harmful pairs"}


def redteam_blocks(run_dir: Path) -> list[tuple]:
    """AI red teaming's counts (RUN/redteam/summary.json): what went into the hybrid reward model."""
    p = RunLayout(run_dir).redteam.summary
    if not p.exists():
        return []
    s = read_json(p) or {}
    t = pd.DataFrame([{c: s.get(k, 0) for k, c in REDTEAM_COLUMNS.items()}], index=["red teaming"])
    sources = ", ".join(f"{k} {v}" for k, v in (s.get("sources") or {}).items()) or DASH
    return [("h2", "AI red teaming"), ("table", t, "redteam"),
            ("note", f"Prompt sources: {sources}. {s.get('definition', '')} Only the HRLAIF reward model trains "
                     "on these pairs; RLAIF's does not.")]


def _mde(r: dict) -> str:
    if not math.isfinite(r["mde"]):
        return "∞ (too few items)"
    if r["unit"] == "pt":
        return f"{r['mde'] * 100:.1f} pt"
    return f"{r['mde']:.1f}‰" if r["unit"] == "‰" else f"{r['mde']:.3f} (reward)"


def power_table(rows: list[dict]) -> pd.DataFrame:
    """One row per alarm condition: the smallest effect it detects with 80% power at this run's n."""
    out = {}
    for r in rows:
        name = {"over_optimisation": "Over-optimisation", "rlaif_failure": "RLAIF failure"}[r["alarm"]]
        out[f"{name} · {VARIANT_LABELS.get(r['variant'], r['variant'])} · {r['measure']}"] = {
            "n": r["n"], "α": f"{r['alpha']:.3g}", "MDE (alarm: 80% power)": _mde(r),
            "pairing": "paired" if r["paired"] else "unpaired"}
    df = pd.DataFrame.from_dict(out, orient="index")
    df.index.name = "Alarm condition"
    return df
