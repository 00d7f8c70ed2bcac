"""Alarms: patterns a reader must not miss, computed with rules strict enough not to fire on noise.

(a) over-optimisation (reward overfitting) along a PPO drift log;
(b) the RLAIF failure signature of arXiv 2403.08309: the AI judge prefers the policy to SFT
    while the satisfaction rate (does the answer actually meet the need) falls below SFT's.

The rules are spelled out in RULES, which the report prints verbatim.
"""
from __future__ import annotations

import math
from pathlib import Path

from statistics import NormalDist

import pandas as pd

from evalsets import registry
from reports.collect import VARIANT_LABELS, RunData, item_scores

# stdlib normal: importing scipy.stats would double the report's start-up time.
_NORM = NormalDist()
Z95 = _NORM.inv_cdf(0.975)

RULES = {
    "over_optimisation": (
        "For every PPO drift log ppo_<variant>/drift.jsonl and every pair of checkpoints t0 < t1, "
        "the alarm fires for a benchmark when all three hold: (1) reward_train(t1) > reward_train(t0) "
        "(the reward kept rising); (2) the 95% CIs do not overlap in the worse direction "
        "(hi(t1) < lo(t0); for a lower-is-better benchmark such as ToxiGen lo(t1) > hi(t0)), i.e. the benchmark fell by more "
        "than its CI; (3) the drop is significant after a Bonferroni correction over all pairs x benchmarks "
        "of that variant: z = drop / sqrt(se(t0)^2 + se(t1)^2) > z_(1 - alpha/m), se = CI width / (2 x 1.96), "
        "alpha = 0.01. Rule (3) bounds the chance that pure checkpoint-to-checkpoint noise raises any "
        "alarm for a variant at 1% (about 1% measured on simulated flat benchmarks with a rising reward). "
        "One alarm per (variant, benchmark), naming the most significant pair."
    ),
    "rlaif_failure": (
        "For RLAIF and HRLAIF: the alarm fires when the win ratio vs SFT is credibly above 50% "
        "(its 95% CI lower bound > 0.5) while the satisfaction rate is significantly below SFT's: "
        "exact McNemar test (two-sided p < 0.05) on the prompts both evaluated when both "
        "samples/satisfaction.jsonl files exist, otherwise a two-proportion z test from the reported "
        "95% CIs (|z| > 1.96). Point estimates alone (e.g. 52% win ratio, 1 pt less satisfaction) do not fire."
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


def overoptimisation_alarms(variant: str, rewards: pd.DataFrame, benches: pd.DataFrame,
                            alpha: float = 0.01) -> list[dict]:
    """Alarms of rule (a) for one drift log (frames from reports.collect.drift_frames)."""
    if rewards.empty or benches.empty:
        return []
    reward = rewards.set_index("step")["reward_train"].to_dict()
    kl = rewards.set_index("step")["sqrt_kl"].to_dict()
    series = {b: g.sort_values("step").to_dict("records") for b, g in benches.groupby("bench", sort=False)}
    m = sum(len(s) * (len(s) - 1) // 2 for s in series.values())
    if m == 0:
        return []
    z_crit = _NORM.inv_cdf(1 - alpha / m)
    alarms = []
    for bench, pts in series.items():
        fired = []
        for i, p0 in enumerate(pts):
            for p1 in pts[i + 1:]:
                r0, r1 = reward.get(p0["step"]), reward.get(p1["step"])
                if not _finite(r0, r1, p0["score"], p1["score"], p0["lo"], p0["hi"], p1["lo"], p1["hi"]):
                    continue
                if not r1 > r0:
                    continue
                higher = bool(p0["higher_is_better"])
                drop = (p0["score"] - p1["score"]) if higher else (p1["score"] - p0["score"])
                apart = (p1["hi"] < p0["lo"]) if higher else (p1["lo"] > p0["hi"])
                se = math.hypot(_se(p0["lo"], p0["hi"]), _se(p1["lo"], p1["hi"]))
                z = drop / se if se > 0 else (math.inf if drop > 0 else 0.0)
                if apart and z > z_crit:
                    fired.append((z, p0, p1, r0, r1))
        if not fired:
            continue
        z, p0, p1, r0, r1 = max(fired, key=lambda f: f[0])
        first_step = min(f[2]["step"] for f in fired)
        name = registry.info(bench)["label"]
        verb = "fell" if p0["higher_is_better"] else "rose (worse)"
        msg = (f"{VARIANT_LABELS.get(variant, variant)} over-optimisation: between PPO steps {p0['step']} and "
               f"{p1['step']} (sqrt KL {kl.get(p0['step'], float('nan')):.2f} -> {kl.get(p1['step'], float('nan')):.2f}) "
               f"reward_train rose {r0:.3f} -> {r1:.3f} while {name} {verb} "
               f"{_fmt(p0['score'], p0['lo'], p0['hi'], bench)} -> {_fmt(p1['score'], p1['lo'], p1['hi'], bench)} "
               f"(z = {z:.1f} > {z_crit:.2f}); first seen at step {first_step}.")
        alarms.append({
            "type": "over_optimisation", "variant": variant, "bench": bench,
            "step_from": int(p0["step"]), "step_to": int(p1["step"]), "first_step": int(first_step),
            "sqrt_kl_from": kl.get(p0["step"]), "sqrt_kl_to": kl.get(p1["step"]),
            "reward_train_from": r0, "reward_train_to": r1,
            "score_from": p0["score"], "ci_from": [p0["lo"], p0["hi"]],
            "score_to": p1["score"], "ci_to": [p1["lo"], p1["hi"]],
            "z": z, "z_crit": z_crit, "message": msg,
        })
    return alarms


def _satisfaction_test(run_dir: Path | None, variant: str, sft: dict, cand: dict) -> tuple[float, float, str]:
    """(two-sided p, candidate − SFT satisfaction, test name): paired when item files allow it."""
    if run_dir is not None:
        a = item_scores(run_dir / "eval_sft", "satisfaction")
        b = item_scores(run_dir / f"eval_{variant}", "satisfaction")
        common = sorted(set(a or {}) & set(b or {}))
        if common:
            from core.stats import mcnemar_p  # lazy: pulls scipy.stats, needed only here

            xa, xb = [a[k] for k in common], [b[k] for k in common]
            diff = (sum(xb) - sum(xa)) / len(common)
            return mcnemar_p(xa, xb), diff, f"McNemar on {len(common)} paired prompts"
    se = math.hypot(_se(sft["lo"], sft["hi"]), _se(cand["lo"], cand["hi"]))
    diff = cand["score"] - sft["score"]
    if not _finite(se, diff) or se == 0:
        return 1.0, diff, "z test (no usable CI)"
    return 2 * (1 - _NORM.cdf(abs(diff / se))), diff, "two-proportion z test from CIs"


def rlaif_failure_alarms(bench_df: pd.DataFrame, run_dir: Path | str | None = None,
                         alpha: float = 0.05) -> list[dict]:
    """Alarms of rule (b) from the comparison frame (reports.collect.benchmark_frame)."""
    idx = {(r["variant"], r["bench"]): r for r in bench_df.to_dict("records")}
    sft = idx.get(("sft", "satisfaction"))
    if sft is None:
        return []
    run_dir = Path(run_dir) if run_dir is not None else None
    alarms = []
    for v in ("rlaif", "hrlaif"):
        wr, sat = idx.get((v, "win_ratio")), idx.get((v, "satisfaction"))
        if wr is None or sat is None or not _finite(wr["lo"]) or not wr["lo"] > 0.5:
            continue
        p, diff, test = _satisfaction_test(run_dir, v, sft, sat)
        if not (diff < 0 and p < alpha):
            continue
        wtl = ""
        if _finite(wr.get("wins")):
            wtl = f", W/T/L {_int(wr['wins'])}/{_int(wr.get('ties'))}/{_int(wr.get('losses'))}"
        msg = (f"{VARIANT_LABELS[v]} shows the RLAIF failure signature: the judge prefers it to SFT "
               f"(win ratio {_fmt(wr['score'], wr['lo'], wr['hi'], 'win_ratio')}{wtl}) while its satisfaction "
               f"rate is lower ({sat['score'] * 100:.1f}% vs SFT {sft['score'] * 100:.1f}%, "
               f"Δ {diff * 100:+.1f} pt, {test}, p = {p:.3g}).")
        alarms.append({
            "type": "rlaif_failure", "variant": v,
            "win_ratio": wr["score"], "win_ratio_ci": [wr["lo"], wr["hi"]],
            "satisfaction": sat["score"], "satisfaction_ci": [sat["lo"], sat["hi"]],
            "satisfaction_sft": sft["score"], "satisfaction_diff": diff, "p": p, "test": test,
            "message": msg,
        })
    return alarms


def compute_alarms(run: RunData, drift_alpha: float = 0.01, failure_alpha: float = 0.05) -> list[dict]:
    # Drift logs hold many checkpoint pairs (multiplicity), so their family-wise level is stricter.
    alarms = []
    for v, (rewards, benches) in run.drift.items():
        alarms += overoptimisation_alarms(v, rewards, benches, drift_alpha)
    alarms += rlaif_failure_alarms(run.benchmarks, run.run_dir, failure_alpha)
    return alarms
