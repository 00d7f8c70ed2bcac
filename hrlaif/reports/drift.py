"""PPO drift, checkpoint by checkpoint against step 0: the over-optimisation alarm, its power, and
the gold-vs-proxy view.

Per-item drift files (docs/FORMATS.md), written by `hrlaif ppo` beside drift.jsonl:
ppo_<v>/drift/step_<N>/<bench>.jsonl  {doc_id, score}        the drift benchmarks' items
ppo_<v>/drift/step_<N>/heldout.jsonl  {id, reward, response, gold}  held-out prompts: RM reward
                                                              and the evaluation judge's verdict
Each checkpoint is compared with step 0 on the same items (paired, hrlaif.core.stats.paired_diff), and
"reward rose" is read from the held-out prompts' rewards paired per prompt, never from the
training batch. Without per-item files (older runs) the comparison falls back to the CIs and
held-out means of drift.jsonl (unpaired), and says so.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from hrlaif.core.errors import UserError
from hrlaif.core.stats import holm, min_detectable_diff, pair_scores, paired_diff, paired_sd, wilson
from hrlaif.evalsets import registry
from hrlaif.reports.collect import VARIANT_LABELS, read_item_file

STEP_DIR = re.compile(r"step_(\d+)$")
# An alarm fires only when both of its conditions hold. With each condition at power sqrt(0.8) on
# independent items (held-out prompts vs benchmark items), both hold with probability 0.8: the
# Alarm power table's MDEs are each condition's at EACH_POWER, so the alarm as a whole has JOINT_POWER.
JOINT_POWER = 0.8
EACH_POWER = math.sqrt(JOINT_POWER)
HELDOUT = "heldout"
_NORM_Z95 = 1.959963984540054


def read_drift_items(ppo_dir: Path | str) -> dict[int, dict]:
    """{step: {"benches": {bench: {doc_id: score | None}}, "heldout": {prompt id: {reward, gold}}}}
    from ppo_dir/drift/step_<N>/ ({} when the run wrote no per-item files)."""
    root = Path(ppo_dir) / "drift"
    out: dict[int, dict] = {}
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        m = STEP_DIR.match(d.name)
        if not m or not d.is_dir():
            continue
        step = {"benches": {}, "heldout": {}}
        for f in sorted(d.glob("*.jsonl")):
            if f.stem == HELDOUT:
                rows = read_item_file(f, "reward", key=("id", "prompt_id"))
                step["heldout"] = {k: {"reward": r["reward"], "gold": _gold(f, k, r.get("gold"))}
                                   for k, r in rows.items()}
            else:
                step["benches"][f.stem] = {k: r["score"] for k, r in read_item_file(f).items()}
        out[int(m.group(1))] = step
    return out


def _gold(path: Path, key: str, v):
    if v is None or v in (0, 1):
        return v
    raise UserError(f"{path}: gold of {key!r} is {v!r}; expected 1, 0 or null")


def _scale(bench: str) -> float:
    return 1000.0 if registry.info(bench)["unit"] == "‰" else 1.0


def _fmt(x: float, bench: str) -> str:
    return f"{x:.1f}‰" if _scale(bench) > 1 else f"{x * 100:.1f}%"


def _fmt_d(x: float, bench: str) -> str:
    return f"{x:+.1f}‰" if _scale(bench) > 1 else f"{x * 100:+.1f} pt"


def reward_change(s0: int, s1: int, rewards: pd.DataFrame, items: dict) -> dict | None:
    """Held-out reward at s1 vs s0: paired per prompt when both heldout.jsonl exist (a paired
    sign-flip permutation p, which holds its level at any n), else the drift.jsonl means (no test
    possible). None when neither is there."""
    h0, h1 = items.get(s0, {}).get(HELDOUT) or {}, items.get(s1, {}).get(HELDOUT) or {}
    if h0 and h1:
        common, _ = pair_scores({k: r["reward"] for k, r in h0.items()}, {k: r["reward"] for k, r in h1.items()})
        if common:
            a, b = [h0[k]["reward"] for k in common], [h1[k]["reward"] for k in common]
            r = paired_diff(a, b)
            return {"r0": float(np.mean(a)), "r1": float(np.mean(b)), "diff": r["diff"], "p": r["p"],
                    "n": len(common), "paired": True, "sd": paired_sd(a, b)}
    by = rewards.set_index("step")["reward_heldout"].to_dict() if not rewards.empty else {}
    r0, r1 = by.get(s0), by.get(s1)
    if r0 is None or r1 is None or math.isnan(r0) or math.isnan(r1):
        return None
    return {"r0": r0, "r1": r1, "diff": r1 - r0, "p": float("nan"), "n": None, "paired": False, "sd": None}


def bench_change(bench: str, s0: int, s1: int, benches: pd.DataFrame, items: dict) -> dict | None:
    """A drift benchmark at s1 vs s0: paired on the same items when both per-item files exist,
    else a z test from drift.jsonl's CIs. Scores in display scale (‰ for ‰ metrics)."""
    i0 = items.get(s0, {}).get("benches", {}).get(bench)
    i1 = items.get(s1, {}).get("benches", {}).get(bench)
    k = _scale(bench)
    if i0 and i1:
        common, counts = pair_scores(i0, i1)
        if common:
            a, b = [i0[c] for c in common], [i1[c] for c in common]
            r = paired_diff(a, b)
            return {"score_from": float(np.mean(a)) * k, "score_to": float(np.mean(b)) * k, "diff": r["diff"] * k,
                    "ci": [r["ci95"][0] * k, r["ci95"][1] * k], "p": r["p"], "n": len(common),
                    "excluded": counts["dropped_invalid"], "test": r["test"], "paired": True,
                    "sd": paired_sd(a, b) * k}
    rows = benches[benches.bench == bench].set_index("step") if not benches.empty else pd.DataFrame()
    if s0 not in rows.index or s1 not in rows.index:
        return None
    p0, p1 = rows.loc[s0], rows.loc[s1]
    se0, se1 = (p0.hi - p0.lo) / (2 * _NORM_Z95), (p1.hi - p1.lo) / (2 * _NORM_Z95)
    se = math.hypot(se0, se1)
    if not all(map(math.isfinite, (se, p0.score, p1.score))):
        return None
    diff = p1.score - p0.score
    z = diff / se if se > 0 else (math.inf if diff else 0.0)
    p = math.erfc(abs(z) / math.sqrt(2))
    return {"score_from": p0.score, "score_to": p1.score, "diff": diff, "ci": [diff - _NORM_Z95 * se,
            diff + _NORM_Z95 * se], "p": p, "n": int(p0.n), "excluded": 0, "test": "z_from_cis",
            "paired": False, "sd": math.sqrt(2) * se0 * math.sqrt(max(int(p0.n), 1))}


def steps_of(rewards: pd.DataFrame, benches: pd.DataFrame, items: dict) -> list[int]:
    s = set(items) | set(rewards.step if not rewards.empty else []) | set(benches.step if not benches.empty else [])
    return sorted(int(x) for x in s)


def drift_tests(rewards: pd.DataFrame, benches: pd.DataFrame, items: dict) -> list[dict]:
    """Every (checkpoint, benchmark) compared with step 0, with the held-out reward change."""
    steps = steps_of(rewards, benches, items)
    if len(steps) < 2:
        return []
    names = set(benches.bench if not benches.empty else []) | {b for s in items.values() for b in s["benches"]}
    order = [b for b in registry.table_order() if b in names] + sorted(names - set(registry.table_order()))
    out = []
    for s1 in steps[1:]:
        rew = reward_change(steps[0], s1, rewards, items)
        for bench in order:
            t = bench_change(bench, steps[0], s1, benches, items)
            if t is not None:
                hib = registry.info(bench)["higher_is_better"]
                out.append({"bench": bench, "step_from": steps[0], "step_to": s1, **t, "reward": rew,
                            "worse": (t["diff"] < 0) if hib else (t["diff"] > 0)})
    return out


def overoptimisation_alarms(variant: str, rewards: pd.DataFrame, benches: pd.DataFrame, items: dict | None = None,
                            alpha: float = 0.01, reward_alpha: float = 0.05,
                            tests: list[dict] | None = None) -> list[dict]:
    """Alarms of the over-optimisation rule (hrlaif.reports.alarms.RULES) for one PPO run (`tests`: drift_tests'
    result when already computed)."""
    tests = drift_tests(rewards, benches, items or {}) if tests is None else tests
    for t, q in zip(tests, holm([t["p"] for t in tests])):
        t["p_holm"] = q
        rew = t["reward"]
        t["rose"] = bool(rew and rew["diff"] > 0 and (not rew["paired"] or rew["p"] < reward_alpha))
    kl = rewards.set_index("step")["sqrt_kl"].to_dict() if not rewards.empty else {}
    alarms = []
    for bench in dict.fromkeys(t["bench"] for t in tests):
        fired = [t for t in tests if t["bench"] == bench and t["worse"] and t["rose"] and t["p_holm"] < alpha]
        if not fired:
            continue
        t = min(fired, key=lambda f: (f["p_holm"], f["step_to"]))
        rew, name = t["reward"], registry.info(bench)["label"]
        verb = "fell" if registry.info(bench)["higher_is_better"] else "rose (worse)"
        how = (f"paired over {rew['n']} held-out prompts, p = {rew['p']:.2g}" if rew["paired"]
               else "held-out means of drift.jsonl, no per-prompt file")
        if t["paired"]:
            on = (f"on the same {t['n']} items" + (f", {t['excluded']} invalid excluded" if t["excluded"] else "")
                  + (", exact McNemar and Tango" if t["test"].startswith("mcnemar") else ", sign-flip permutation")
                  + f" p = {t['p']:.2g}")
        else:
            on = f"unpaired z test from drift.jsonl CIs, p = {t['p']:.2g}"
        msg = (f"{VARIANT_LABELS.get(variant, variant)} over-optimisation: at PPO step {t['step_to']} (sqrt KL "
               f"{kl.get(t['step_from'], float('nan')):.2f} -> {kl.get(t['step_to'], float('nan')):.2f}) the held-out "
               f"reward rose {rew['r0']:.3f} -> {rew['r1']:.3f} ({how}) while {name} {verb} "
               f"{_fmt(t['score_from'], bench)} -> {_fmt(t['score_to'], bench)} vs step {t['step_from']} "
               f"(Δ {_fmt_d(t['diff'], bench)}, {on}; Holm p = {t['p_holm']:.2g} < {alpha:g}); "
               f"first seen at step {min(f['step_to'] for f in fired)}.")
        alarms.append({
            "type": "over_optimisation", "variant": variant, "bench": bench, "step_from": t["step_from"],
            "step_to": t["step_to"], "first_step": min(f["step_to"] for f in fired),
            "sqrt_kl_from": kl.get(t["step_from"]), "sqrt_kl_to": kl.get(t["step_to"]),
            "reward_heldout_from": rew["r0"], "reward_heldout_to": rew["r1"], "reward_p": rew["p"],
            "reward_paired": rew["paired"], "score_from": t["score_from"], "score_to": t["score_to"],
            "diff": t["diff"], "ci": t["ci"], "n": t["n"], "excluded_invalid": t["excluded"], "test": t["test"],
            "paired": t["paired"], "p": t["p"], "p_holm": t["p_holm"], "alpha": alpha, "message": msg,
        })
    return alarms


def drift_power(variant: str, rewards: pd.DataFrame, benches: pd.DataFrame, items: dict | None = None,
                alpha: float = 0.01, reward_alpha: float = 0.05, tests: list[dict] | None = None) -> list[dict]:
    """Minimum detectable effects of the over-optimisation rule at this run's sizes, each at power
    EACH_POWER so that the alarm (both conditions) fires with JOINT_POWER when both effects are at
    their MDE: per benchmark the drop vs step 0 at the Holm family's first-step level alpha / m (the
    cell's own test: exact McNemar + Tango for 0/1 scores), and the held-out reward rise at
    reward_alpha (sign-flip test). The sd is the paired differences' pooled over checkpoints."""
    tests = drift_tests(rewards, benches, items or {}) if tests is None else tests
    m = len(tests)
    out = []
    for bench in dict.fromkeys(t["bench"] for t in tests):
        ts = [t for t in tests if t["bench"] == bench]
        n = max(t["n"] for t in ts)
        sd = float(np.sqrt(np.mean([t["sd"] ** 2 for t in ts])))
        binary = ts[0]["test"].startswith("mcnemar")
        out.append({"alarm": "over_optimisation", "variant": variant, "measure": f"{registry.info(bench)['label']} "
                    "change vs step 0", "n": n, "alpha": alpha / m, "paired": ts[0]["paired"], "power": EACH_POWER,
                    "mde": min_detectable_diff(sd / _scale(bench) if binary else sd, n, alpha / m / 2, EACH_POWER,
                                               binary=binary) * (_scale(bench) if binary else 1.0),
                    "unit": "‰" if _scale(bench) > 1 else "pt"})
    rews = {t["step_to"]: t["reward"] for t in tests if t["reward"] and t["reward"]["paired"]}
    if rews:
        n = max(r["n"] for r in rews.values())
        sd = float(np.sqrt(np.mean([r["sd"] ** 2 for r in rews.values()])))
        out.append({"alarm": "over_optimisation", "variant": variant, "measure": "held-out reward rise vs step 0",
                    "n": n, "alpha": reward_alpha, "paired": True, "power": EACH_POWER,
                    "mde": min_detectable_diff(sd, n, reward_alpha / 2, EACH_POWER), "unit": "reward"})
    return out


def gold_proxy_frame(rewards: pd.DataFrame, items: dict) -> pd.DataFrame:
    """Per checkpoint: sqrt(KL), the RM reward (proxy) and the evaluation judge's verdict (gold,
    share satisfying with its Wilson CI; null verdicts excluded and counted) on the held-out
    responses. Empty when no heldout.jsonl carries gold."""
    kl = rewards.set_index("step")["sqrt_kl"].to_dict() if not rewards.empty else {}
    rows = []
    for step in sorted(items):
        h = items[step].get(HELDOUT) or {}
        golds = [r["gold"] for r in h.values() if r["gold"] is not None]
        rew = [r["reward"] for r in h.values() if r["reward"] is not None]
        if not h:
            continue
        lo, hi = wilson(sum(golds), len(golds)) if golds else (float("nan"),) * 2
        rows.append({"step": step, "sqrt_kl": kl.get(step, float("nan")),
                     "reward": float(np.mean(rew)) if rew else float("nan"),
                     "gold": float(np.mean(golds)) if golds else float("nan"), "gold_lo": lo, "gold_hi": hi,
                     "n": len(golds), "invalid": len(h) - len(golds)})
    df = pd.DataFrame(rows, columns=["step", "sqrt_kl", "reward", "gold", "gold_lo", "gold_hi", "n", "invalid"])
    return df if df.gold.notna().any() else df.iloc[0:0]
