"""Training seeds in the run report: per variant each seed's score, the seeds' mean and sd, and every
variant-vs-variant Δ with a CI that resamples seeds, then items (hrlaif.core.seed_stats).

A run with `seeds: [s1, s2, ...]` evaluates each PPO variant once per seed: eval_<v> (the first
seed) and eval_<v>_s<seed> (the others); the first seed's value is in ppo_<v>/manifest.json. SFT is
shared by all seeds. With one training seed the Δ cells say so: the comparison tables above are
then all the evidence there is, and it speaks for one checkpoint, not for the method.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hrlaif.core.console import DASH, present
from hrlaif.core.errors import UserError
from hrlaif.core.layout import PPO_VARIANTS, RunLayout
from hrlaif.core.seed_stats import METHOD, hierarchical_diff, seed_summary
from hrlaif.core.stats import MIN_N_CI, Z95
from hrlaif.core.store import read_json
from hrlaif.evalsets import registry
from hrlaif.reports.collect import (
    HEAD_TO_HEAD,
    VARIANT_LABELS,
    benchmark_order,
    display_scale,
    item_scores,
    read_results,
)
from hrlaif.reports.tables import FEW, cell

ONE_SEED = "one training seed: checkpoint-level only"
CONTRASTS = (("rlaif", "sft"), ("hrlaif", "sft"), ("hrlaif", "rlaif"))
ITERS = 4000
DEFINITION = ("Training seeds: each seed's score is one reward model + PPO run of the variant (SFT, samples and "
              "labels are shared); 'mean (sd)' is the mean over seeds and the between-seed standard deviation. "
              "A Δ across seeds is mean(candidate seeds) − mean(baseline seeds) over the items every seed "
              "scored, with a 95% CI by " + METHOD.format(iters=ITERS) + "; p from the same replicates; MDE = "
              "(1.96 + 0.84) x the CI's half-width / 1.96. '" + ONE_SEED + "': a variant trained once, whose "
              "Δ can only be checkpoint-level (the comparison tables).")


def _first_seed(run_dir: Path, variant: str) -> int | None:
    p = RunLayout(run_dir).ppo(variant).manifest
    try:
        return int(read_json(p)["config"]["ppo"]["seed"]) if p.exists() else None
    except (UserError, KeyError, TypeError, ValueError):
        return None  # an older run's manifest (its config is not the resolved records'): seed unknown


def seed_dirs(run_dir: Path | str) -> dict[str, list[tuple[int | None, Path]]]:
    """{variant: [(seed, eval dir)]}, the first seed's (unsuffixed) dir first; SFT: one shared dir."""
    run_dir = Path(run_dir)
    lay = RunLayout(run_dir)
    out: dict[str, list] = {}
    if lay.eval("sft").results.exists():
        out["sft"] = [(None, lay.eval("sft").dir)]
    for v in PPO_VARIANTS:
        dirs = [(_first_seed(run_dir, v), lay.eval(v).dir)] if lay.eval(v).results.exists() else []
        more = [(seed, d.dir) for seed, d in lay.seed_evals(v) if d.results.exists()]
        if dirs or more:
            out[v] = dirs + more
    return out


def _scale(bench: str) -> tuple[float, str]:
    return (1000.0, "‰") if registry.info(bench)["unit"] == "‰" else (100.0, " pt")


def _benches(dirs: dict) -> list[str]:
    present_ = {b for runs in dirs.values() for _, d in runs for b in read_results(d)["benchmarks"]}
    return [b for b in benchmark_order(present_) if b in present_ and b != HEAD_TO_HEAD]


def seed_score_table(dirs: dict, benches: list[str]) -> pd.DataFrame:
    """Rows: each variant's seeds, then its mean (sd); SFT once (shared). Cells: score [CI] n."""
    labels = {b: registry.info(b)["label"] for b in benches}
    rows: dict[str, dict] = {}
    for v, runs in dirs.items():
        res = [(s, read_results(d)["benchmarks"]) for s, d in runs]
        for i, (s, r) in enumerate(res):
            seed = s if s is not None else i + 1  # an older run's first seed: its position
            name = f"{VARIANT_LABELS[v]} (shared)" if v == "sft" else f"{VARIANT_LABELS[v]} seed {seed}"
            rows[name] = {labels[b]: _score_cell(b, r.get(b)) for b in benches}
        if v != "sft" and len(res) > 1:
            rows[f"{VARIANT_LABELS[v]} mean (sd), {len(res)} seeds"] = {
                labels[b]: _mean_cell(b, [r.get(b) for _, r in res]) for b in benches}
    df = pd.DataFrame.from_dict(rows, orient="index", columns=[labels[b] for b in benches])
    df.index.name = "Model"
    return df


def _score_cell(bench: str, e: dict | None) -> str:
    if not isinstance(e, dict) or not present(e.get("score")):
        return DASH
    if isinstance(e.get("unreliable"), str):
        return f"unreliable: {e['unreliable']}"
    k = display_scale(bench, e)
    lo, hi = ((e.get("ci95") or []) + [None, None])[:2]
    return cell(e["score"] * k, None if lo is None else lo * k, None if hi is None else hi * k, e.get("n"),
                permille=registry.info(bench, e)["unit"] == "‰")


def _mean_cell(bench: str, entries: list) -> str:
    """'41.2% (sd 2.3, k=3)': the seeds' mean and between-seed sd, in the table's unit."""
    shown = [e["score"] * display_scale(bench, e) for e in entries
             if isinstance(e, dict) and present(e.get("score")) and not isinstance(e.get("unreliable"), str)]
    s = seed_summary(shown)
    if not s["k"]:
        return DASH
    k, unit = (1.0, "‰") if registry.info(bench)["unit"] == "‰" else (100.0, "%")
    sd = f"sd {s['sd'] * k:.1f}" if s["sd"] is not None else "sd —"
    return f"{s['mean'] * k:.1f}{unit} ({sd}, k={s['k']})"


def _matrix(runs: list, bench: str) -> dict[str, list]:
    """{doc_id: [score per seed]} over the items every seed has (None: invalid or missing)."""
    per = [item_scores(d, bench) or {} for _, d in runs]
    ids = set.intersection(*(set(p) for p in per)) if per else set()
    return {i: [p[i] for p in per] for i in sorted(ids)}


def _array(m: dict[str, list], ids: list[str]) -> np.ndarray:
    """(seeds, items) with NaN for an invalid item."""
    return np.array([[np.nan if m[i][k] is None else m[i][k] for i in ids] for k in range(len(m[ids[0]]))])


def seed_delta_frame(dirs: dict, benches: list[str]) -> pd.DataFrame:
    """One row per (contrast, bench): diff, lo, hi, p, mde, n, seeds, or `note` when there is no Δ."""
    rows = []
    for cand, base in CONTRASTS:
        for b in benches:
            row = {"contrast": f"{cand} - {base}", "cand": cand, "base": base, "bench": b, "note": None}
            rows.append(row)
            if cand not in dirs or base not in dirs:
                row["note"] = DASH
                continue
            if base == "sft" and registry.info(b)["against_baseline"]:
                row["note"] = DASH  # a ratio against SFT: SFT has no score of its own
                continue
            if len(dirs[cand]) < 2 and len(dirs[base]) < 2:
                row["note"] = ONE_SEED
                continue
            ma, mb = _matrix(dirs[cand], b), _matrix(dirs[base], b)
            ids = sorted(set(ma) & set(mb))
            if not ids:
                row["note"] = DASH
                continue
            r = hierarchical_diff(_array(ma, ids), _array(mb, ids), iters=ITERS)
            half = (r["hi"] - r["lo"]) / 2
            row.update(diff=r["diff"], lo=r["lo"], hi=r["hi"], p=r["p"], n=r["n"], seeds=tuple(r["seeds"]),
                       sd_seeds=tuple(r["sd_seeds"]), mde=(Z95 + 0.8416) * half / Z95)
    return pd.DataFrame(rows)


def _delta_cell(r) -> str:
    if isinstance(r.note, str):
        return r.note
    k, unit = _scale(r.bench)
    s = f"Δ {r.diff * k:+.1f}{unit}"
    seeds = f"{r.seeds[0]} vs {r.seeds[1]} seeds" if r.seeds[0] != r.seeds[1] else f"{r.seeds[0]} seeds each"
    if r.n < MIN_N_CI:
        return s + f" n={int(r.n)} {FEW}"
    s += f" [{r.lo * k:+.1f}, {r.hi * k:+.1f}]"
    inconclusive = r.lo <= 0 <= r.hi and r.mde > abs(r.diff)
    s += f" inconclusive (MDE {r.mde * k:.1f}{unit})" if inconclusive else f" p={r.p:.2g}"
    return s + f" ({seeds}, n={int(r.n)})"


def seed_delta_table(frame: pd.DataFrame) -> pd.DataFrame:
    rows: dict[str, dict] = {}
    for r in frame.itertuples():
        name = f"{VARIANT_LABELS[r.cand]} − {VARIANT_LABELS[r.base]}"
        rows.setdefault(name, {})[registry.info(r.bench)["label"]] = _delta_cell(r)
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "Δ across seeds"
    return df


def seed_blocks(run_dir: Path | str) -> tuple[list[tuple], pd.DataFrame | None]:
    """The report's 'Training seeds' section and its numbers (for seeds_long.csv)."""
    dirs = seed_dirs(run_dir)
    if not any(v in dirs for v in PPO_VARIANTS):
        return [], None
    benches = _benches(dirs)
    frame = seed_delta_frame(dirs, benches)
    k = max(len(dirs.get(v, [])) for v in PPO_VARIANTS)
    note = (f"{k} training seeds per variant: a Δ here is about the method (its seeds), not one checkpoint. "
            "CIs resample seeds, then items (Definitions). The other sections, `hrlaif compare` and `hrlaif gate` "
            "speak for the first seed's checkpoints (eval_rlaif, eval_hrlaif)." if k > 1 else
            f"{ONE_SEED}: each variant was trained once (set `seeds: [1, 2, 3]` or `hrlaif run --seeds 1,2,3` "
            "for a verdict about the method).")
    return [("h2", "Training seeds"), ("note", note),
            ("table", seed_score_table(dirs, benches), "seed_scores"),
            ("table", seed_delta_table(frame), "seed_deltas")], frame
