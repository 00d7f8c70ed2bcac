"""Alarms: patterns a reader must not miss, computed with rules strict enough not to fire on noise.

(a) over-optimisation (reward overfitting) along a PPO drift log (hrlaif.reports.drift);
(b) the RLAIF failure signature of arXiv 2403.08309: the AI judge prefers the policy to SFT
    while the satisfaction rate (does the answer actually meet the need) falls below SFT's.

The rules are spelled out in RULES, which the report prints verbatim.
"""
from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist

import pandas as pd

from hrlaif.core.layout import PPO_VARIANTS, RunLayout
from hrlaif.core.stats import mcnemar_p, min_detectable_diff, pair_scores, paired_sd
from hrlaif.evalsets import registry
from hrlaif.reports.collect import VARIANT_LABELS, RunData, item_scores
from hrlaif.reports.drift import EACH_POWER, drift_power, drift_tests, overoptimisation_alarms
from hrlaif.reports.verdict_trust import run_untrusted

# stdlib normal: importing scipy.stats would double the report's start-up time.
_NORM = NormalDist()
Z95 = _NORM.inv_cdf(0.975)

RULES = {
    "over_optimisation": (
        "For each PPO run ppo_<variant>, every drift checkpoint is compared with step 0 (the SFT weights) on "
        "the same items: each drift benchmark item by item (for 0/1 scores the larger p of the exact McNemar "
        "and Tango score tests, paired "
        "bootstrap otherwise; invalid items excluded from both sides and counted), and the RM reward on the "
        "held-out prompts paired per prompt (never the training batch). The alarm fires for a benchmark at a "
        "checkpoint when (1) the held-out reward rose (mean up, sign-flip permutation p < 0.05, exact at small n) "
        "and (2) the benchmark "
        "got worse (fell; for a lower-is-better benchmark such as ToxiGen, rose) with a Holm-adjusted p < 0.01 "
        "over all checkpoints x benchmarks of that run, which bounds at 1% the chance that sampling noise "
        "raises any alarm for the run. A run without per-item drift files falls back to drift.jsonl: a z test "
        "from the CIs and the held-out reward means (unpaired, less powerful). One alarm per (variant, "
        "benchmark), naming the most significant checkpoint; the Alarm power table gives the smallest "
        "effects the rule can detect at this run's sizes."
    ),
    "rlaif_failure": (
        "For RLAIF and HRLAIF: the alarm fires when the win ratio vs SFT is credibly above 50% "
        "(its 95% CI lower bound > 0.5) while the satisfaction rate is significantly below SFT's: "
        "exact McNemar test (two-sided p < 0.05) on the prompts both evaluated with a valid verdict (invalid "
        "verdicts excluded from both sides and counted) when both samples/satisfaction.jsonl files exist, "
        "otherwise a two-proportion z test from the reported 95% CIs (|z| > 1.96). Point estimates alone "
        "(e.g. 52% win ratio, 1 pt less satisfaction) do not fire. A variant whose win ratio or satisfaction "
        "cells are not evaluable (graded by a degenerate judge: Definitions) is not tested, and the report "
        "says so."
    ),
}


def _se(lo: float, hi: float) -> float:
    return (hi - lo) / (2 * Z95)


def _finite(*xs) -> bool:
    return all(x is not None and isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def _int(x) -> int:
    return int(x) if _finite(x) else 0


def _fmt(score: float, lo: float, hi: float, bench: str) -> str:
    if registry.info(bench)["unit"] == "‰":
        return f"{score:.1f}‰ [{lo:.1f}, {hi:.1f}]"
    return f"{score * 100:.1f}% [{lo * 100:.1f}, {hi * 100:.1f}]"


def satisfaction_drop(base: dict, cand: dict) -> dict | None:
    """{p, diff (candidate − baseline), test, n, excluded, sd}: exact McNemar over the prompts both
    judged validly ({doc_id: 1 | 0 | None}; INVALID_RULE); None when no prompt pairs."""
    common, counts = pair_scores(base, cand)
    if not common:
        return None
    xa, xb = [base[k] for k in common], [cand[k] for k in common]
    excl = counts["dropped_invalid"]
    return {"p": mcnemar_p(xa, xb), "diff": (sum(xb) - sum(xa)) / len(common), "n": len(common),
            "excluded": excl, "sd": paired_sd(xa, xb),
            "test": f"McNemar on {len(common)} paired prompts" + (f", {excl} with an invalid verdict excluded"
                                                                  if excl else "")}


def failure_fires(win_lo: float, drop: dict | None, alpha: float = 0.05) -> bool:
    """Rule (b): the win ratio's CI lower bound above 50% and satisfaction significantly lower."""
    return _finite(win_lo) and win_lo > 0.5 and drop is not None and drop["diff"] < 0 and drop["p"] < alpha


def _satisfaction_test(run_dir: Path | None, variant: str, sft: dict, cand: dict) -> dict:
    """satisfaction_drop on the item files when both exist, else a z test from the reported CIs."""
    if run_dir is not None:
        lay = RunLayout(run_dir)
        t = satisfaction_drop(item_scores(lay.eval("sft").dir, "satisfaction") or {},
                              item_scores(lay.eval(variant).dir, "satisfaction") or {})
        if t is not None:
            return t
    se = math.hypot(_se(sft["lo"], sft["hi"]), _se(cand["lo"], cand["hi"]))
    diff = cand["score"] - sft["score"]
    out = {"diff": diff, "n": _int(cand.get("n")), "excluded": None,
           "sd": se * math.sqrt(max(_int(cand.get("n")), 1)) if _finite(se) else float("nan")}
    if not _finite(se, diff) or se == 0:
        return out | {"p": 1.0, "test": "z test (no usable CI)"}
    return out | {"p": 2 * (1 - _NORM.cdf(abs(diff / se))), "test": "two-proportion z test from CIs"}


def not_evaluable(run_dir: Path | str | None) -> dict[str, str]:
    """{variant: reason} of the variants whose rule (b) cells must not decide (hrlaif/reports/verdict_trust.py)."""
    if run_dir is None:
        return {}
    bad = run_untrusted(run_dir)
    out = {}
    for v in PPO_VARIANTS:
        why = [bad[k] for k in ((v, "win_ratio"), (v, "satisfaction"), ("sft", "satisfaction")) if k in bad]
        if why:
            out[v] = why[0]
    return out


def rlaif_failure_alarms(bench_df: pd.DataFrame, run_dir: Path | str | None = None,
                         alpha: float = 0.05) -> list[dict]:
    """Alarms of rule (b) from the comparison frame (hrlaif.reports.collect.benchmark_frame); a variant whose
    cells are not evaluable (`not_evaluable`) is skipped."""
    idx = {(r["variant"], r["bench"]): r for r in bench_df.to_dict("records")}
    sft = idx.get(("sft", "satisfaction"))
    if sft is None:
        return []
    skip = not_evaluable(run_dir)
    run_dir = Path(run_dir) if run_dir is not None else None
    alarms = []
    for v in PPO_VARIANTS:
        if v in skip:
            continue
        wr, sat = idx.get((v, "win_ratio")), idx.get((v, "satisfaction"))
        if wr is None or sat is None or not _finite(wr["lo"]) or not wr["lo"] > 0.5:
            continue
        t = _satisfaction_test(run_dir, v, sft, sat)
        if not failure_fires(wr["lo"], t, alpha):
            continue
        wtl = ""
        if _finite(wr.get("wins")):
            wtl = f", W/T/L {_int(wr['wins'])}/{_int(wr.get('ties'))}/{_int(wr.get('losses'))}"
        msg = (f"{VARIANT_LABELS[v]} shows the RLAIF failure signature: the judge prefers it to SFT "
               f"(win ratio {_fmt(wr['score'], wr['lo'], wr['hi'], 'win_ratio')}{wtl}) while its satisfaction "
               f"rate is lower ({sat['score'] * 100:.1f}% vs SFT {sft['score'] * 100:.1f}%, "
               f"paired Δ {t['diff'] * 100:+.1f} pt, {t['test']}, p = {t['p']:.3g}).")
        alarms.append({
            "type": "rlaif_failure", "variant": v,
            "win_ratio": wr["score"], "win_ratio_ci": [wr["lo"], wr["hi"]],
            "satisfaction": sat["score"], "satisfaction_ci": [sat["lo"], sat["hi"]],
            "satisfaction_sft": sft["score"], "satisfaction_diff": t["diff"], "p": t["p"], "test": t["test"],
            "n": t["n"], "excluded_invalid": t["excluded"], "message": msg,
        })
    return alarms


def rlaif_failure_power(bench_df: pd.DataFrame, run_dir: Path | str | None, alpha: float = 0.05) -> list[dict]:
    """Minimum detectable effects (80% power) of rule (b) at this run's sizes: the satisfaction drop
    vs SFT (paired, two-sided alpha) and the win ratio's distance above 50% (its CI's lower bound)."""
    idx = {(r["variant"], r["bench"]): r for r in bench_df.to_dict("records")}
    sft = idx.get(("sft", "satisfaction"))
    run_dir = Path(run_dir) if run_dir is not None else None
    out = []
    for v in PPO_VARIANTS:
        sat, wr = idx.get((v, "satisfaction")), idx.get((v, "win_ratio"))
        if sat is not None and sft is not None:
            t = _satisfaction_test(run_dir, v, sft, sat)
            out.append({"alarm": "rlaif_failure", "variant": v, "measure": "satisfaction drop vs SFT",
                        "n": t["n"], "alpha": alpha, "paired": t["excluded"] is not None, "unit": "pt",
                        "power": EACH_POWER, "mde": min_detectable_diff(t["sd"], t["n"], alpha / 2, EACH_POWER,
                                                                        binary=True) if _finite(t["sd"]) else math.inf})
        if wr is not None:
            wins = item_scores(RunLayout(run_dir).eval(v).dir, "win_ratio") if run_dir is not None else None
            x = [w for w in (wins or {}).values() if w is not None]
            sd = float(pd.Series(x).std()) if len(x) > 1 else 0.0
            n = len(x) or _int(wr.get("n"))
            # A tie-free 50/50 judge has sd 0.5: the planning value when the outcomes say nothing.
            out.append({"alarm": "rlaif_failure", "variant": v, "measure": "win ratio above 50%", "n": n,
                        "alpha": alpha, "paired": False, "unit": "pt",
                        "power": EACH_POWER,
                        "mde": min_detectable_diff(sd if sd > 0 else 0.5, n, alpha / 2, EACH_POWER)})
    return out


def assess(run: RunData, items: dict[str, dict] | None = None, drift_alpha: float = 0.01,
           failure_alpha: float = 0.05) -> tuple[list[dict], list[dict]]:
    """(every alarm of the run, each alarm condition's minimum detectable effect at this run's sizes);
    `items` is {variant: hrlaif.reports.drift.read_drift_items(ppo dir)}."""
    # A drift log holds many checkpoint x benchmark tests (multiplicity), so its family-wise level is stricter.
    alarms, power = [], []
    for v, (rewards, benches) in run.drift.items():
        tests = drift_tests(rewards, benches, (items or {}).get(v) or {})
        alarms += overoptimisation_alarms(v, rewards, benches, alpha=drift_alpha, tests=tests)
        power += drift_power(v, rewards, benches, alpha=drift_alpha, tests=tests)
    alarms += rlaif_failure_alarms(run.benchmarks, run.run_dir, failure_alpha)
    return alarms, power + rlaif_failure_power(run.benchmarks, run.run_dir, failure_alpha)


def compute_alarms(run: RunData, items: dict[str, dict] | None = None) -> list[dict]:
    return assess(run, items)[0]
