"""Read a run directory (docs/FORMATS.md) into tidy pandas frames.

Everything here tolerates missing stages: a run that stopped after `eval_sft` still
reports, with the absent cells left empty. Malformed files raise `UserError` (via
core.store) so the CLI prints one line instead of a traceback.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.errors import UserError
from core.store import read_json, read_jsonl
from evalsets import registry

VARIANTS = ("sft", "rlaif", "hrlaif")
VARIANT_LABELS = {"sft": "SFT", "rlaif": "RLAIF", "hrlaif": "HRLAIF"}
RM_MODES = ("basic", "hybrid")
_NAN = float("nan")


def benchmark_order(present) -> list[str]:
    """Comparison columns: every registered benchmark and derived metric in spec order (a missing
    one shows as a dash), then any other benchmark a results.json holds."""
    order = registry.table_order()
    return order + sorted(set(present) - set(order))


def display_scale(bench: str, entry: dict) -> float:
    """Factor that puts an entry in its display scale: 1 for % metrics (0-1 scores shown x100
    by the tables); for ‰ metrics the factor that makes the stored value ‰ (permille_scale)."""
    return permille_scale(entry) if registry.info(bench, entry)["unit"] == "‰" else 1.0


def permille_scale(entry: dict) -> float:
    """Factor that puts a ‰ entry (e.g. ToxiGen) in ‰.

    Per-item scores are 0/1, so an eval may store either the fraction or the permille value. A 95% CI (or score) above 1 can only be ‰;
    everything within [0, 1] is read as a fraction (wrong only for n > ~3800 at ~0 toxicity).
    """
    vals = [entry.get("score")] + list(entry.get("ci95") or [])
    if any(isinstance(v, (int, float)) and not math.isnan(v) and v > 1.0 for v in vals):
        return 1.0
    return 1000.0


def _ci(entry: dict) -> tuple[float, float]:
    ci = entry.get("ci95") or [_NAN, _NAN]
    if len(ci) != 2:
        return (_NAN, _NAN)
    return (_num(ci[0]), _num(ci[1]))


def _num(v) -> float:
    try:
        return _NAN if v is None else float(v)
    except (TypeError, ValueError):
        return _NAN


def _invalid_count(entry: dict):
    extra = entry.get("extra") or {}
    for key in ("invalid_judgements", "invalid", "invalid_answers", "n_invalid"):
        if key in extra:
            return extra[key]
    return None


def load_results(run_dir: Path | str) -> dict[str, dict | None]:
    """{variant: results.json dict or None}, for eval_sft / eval_rlaif / eval_hrlaif."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    out = {}
    for v in VARIANTS:
        p = run_dir / f"eval_{v}" / "results.json"
        res = read_json(p) if p.exists() else None
        if res is not None and not isinstance(res.get("benchmarks"), dict):
            raise UserError(f"{p} has no 'benchmarks' object")
        out[v] = res
    return out


def benchmark_frame(results: dict[str, dict | None]) -> pd.DataFrame:
    """One row per (variant, benchmark) with the primary metric and its 95% CI, and how to show it
    (label, unit, direction, measured against a baseline) from the spec or the entry itself.

    ‰ metrics (ToxiGen) are converted to ‰; every other metric stays on its 0-1 scale.
    """
    rows = []
    for v, res in results.items():
        if not res:
            continue
        for bench, e in res["benchmarks"].items():
            if not isinstance(e, dict):
                raise UserError(f"eval_{v}/results.json: benchmark {bench!r} is not an object")
            scale = display_scale(bench, e)
            lo, hi = _ci(e)
            extra = e.get("extra") or {}
            meta = registry.info(bench, e)
            rows.append({
                "variant": v, "bench": bench, "metric": e.get("metric", ""),
                "score": _num(e.get("score")) * scale, "lo": lo * scale, "hi": hi * scale,
                "n": int(e["n"]) if e.get("n") is not None else 0,
                "higher_is_better": meta["higher_is_better"], "label": meta["label"], "unit": meta["unit"],
                "against_baseline": meta["against_baseline"],
                "definition": e.get("definition") or "", "source": e.get("source") or "",
                "wins": extra.get("wins"), "ties": extra.get("ties"), "losses": extra.get("losses"),
                "invalid": _invalid_count(e),
            })
    cols = ["variant", "bench", "metric", "score", "lo", "hi", "n", "higher_is_better", "label", "unit",
            "against_baseline", "definition", "source", "wins", "ties", "losses", "invalid"]
    return pd.DataFrame(rows, columns=cols)


def breakdown_frame(results: dict[str, dict | None], bench: str) -> pd.DataFrame:
    """Per-category rows (variant, category, score, lo, hi, n) of one benchmark's `breakdown`."""
    rows = []
    for v, res in results.items():
        e = (res or {}).get("benchmarks", {}).get(bench)
        if not e:
            continue
        for cat, b in (e.get("breakdown") or {}).items():
            lo, hi = _ci(b)
            rows.append({"variant": v, "category": cat, "score": _num(b.get("score")),
                         "lo": lo, "hi": hi, "n": int(b.get("n") or 0)})
    return pd.DataFrame(rows, columns=["variant", "category", "score", "lo", "hi", "n"])


def label_accuracy_frame(run_dir: Path | str) -> pd.DataFrame:
    """Label accuracy per (category, mode). label_hybrid's file carries both modes; label_basic
    is the fallback when only basic labelling ran."""
    run_dir = Path(run_dir)
    rows: dict[tuple[str, str], dict] = {}
    # Hybrid last, so its (more complete) file wins on overlap.
    for stage in ("label_basic", "label_hybrid"):
        p = run_dir / stage / "label_accuracy.json"
        if not p.exists():
            continue
        data = read_json(p)
        if not isinstance(data, dict):
            raise UserError(f"{p} is not a JSON object")
        for cat, modes in data.items():
            for mode, e in (modes or {}).items():
                if isinstance(e, dict):
                    lo, hi = _ci(e)
                    rows[(cat, mode)] = {"category": cat, "mode": mode, "score": _num(e.get("score")),
                                         "lo": lo, "hi": hi, "n": int(e.get("n") or 0)}
    return pd.DataFrame(list(rows.values()), columns=["category", "mode", "score", "lo", "hi", "n"])


def rm_frames(run_dir: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-category accuracy rows, one summary row per RM with held-out acc and clipped share)."""
    run_dir = Path(run_dir)
    cats, summary = [], []
    for mode in RM_MODES:
        # `hrlaif run` keeps the RM checkpoint (with its metrics) in rm_<mode>/model/
        p = next((q for q in (run_dir / f"rm_{mode}" / "rm_metrics.json",
                              run_dir / f"rm_{mode}" / "model" / "rm_metrics.json") if q.exists()), None)
        if p is None:
            continue
        m = read_json(p)
        if not isinstance(m, dict):
            raise UserError(f"{p} is not a JSON object")
        h = m.get("heldout_acc") or {}
        lo, hi = _ci(h)
        summary.append({"rm": mode, "score": _num(h.get("score")), "lo": lo, "hi": hi,
                        "n": int(h.get("n") or 0), "clipped_share": _num(m.get("clipped_share")),
                        "clip": _num(m.get("clip"))})
        for cat, e in (m.get("per_category") or {}).items():
            if isinstance(e, dict):
                lo, hi = _ci(e)
                cats.append({"rm": mode, "category": cat, "score": _num(e.get("score")), "lo": lo,
                             "hi": hi, "n": int(e.get("n") or 0)})
    return (pd.DataFrame(cats, columns=["rm", "category", "score", "lo", "hi", "n"]),
            pd.DataFrame(summary, columns=["rm", "score", "lo", "hi", "n", "clipped_share", "clip"]))


def drift_frames(path: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rewards: step, kl, sqrt_kl, reward_train, reward_heldout;
        benches: step, kl, sqrt_kl, bench, score, lo, hi, n), both sorted by step.

    A repeated step (a resumed run re-logging a checkpoint) keeps its last line.
    """
    rows = read_jsonl(path)
    rew, ben = [], []
    for i, r in enumerate(rows):
        if "step" not in r:
            raise UserError(f"{path}:{i + 1} has no 'step'")
        step = int(r["step"])
        kl = _num(r.get("kl"))
        sq = math.sqrt(max(kl, 0.0)) if not math.isnan(kl) else _NAN
        rew.append({"step": step, "kl": kl, "sqrt_kl": sq, "reward_train": _num(r.get("reward_train")),
                    "reward_heldout": _num(r.get("reward_heldout"))})
        for bench, e in (r.get("benchmarks") or {}).items():
            scale = display_scale(bench, e)
            lo, hi = _ci(e)
            meta = registry.info(bench, e)
            ben.append({"step": step, "kl": kl, "sqrt_kl": sq, "bench": bench,
                        "score": _num(e.get("score")) * scale, "lo": lo * scale, "hi": hi * scale,
                        "n": int(e.get("n") or 0), "higher_is_better": meta["higher_is_better"],
                        "label": meta["label"], "unit": meta["unit"]})
    rew_df = pd.DataFrame(rew, columns=["step", "kl", "sqrt_kl", "reward_train", "reward_heldout"])
    ben_df = pd.DataFrame(ben, columns=["step", "kl", "sqrt_kl", "bench", "score", "lo", "hi", "n",
                                        "higher_is_better", "label", "unit"])
    rew_df = rew_df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)
    ben_df = ben_df.drop_duplicates(["step", "bench"], keep="last").sort_values(["bench", "step"])
    return rew_df, ben_df.reset_index(drop=True)


@dataclass
class RunData:
    run_dir: Path
    results: dict[str, dict | None]
    benchmarks: pd.DataFrame
    satisfaction_by_cat: pd.DataFrame
    win_ratio_by_cat: pd.DataFrame
    label_accuracy: pd.DataFrame
    rm_per_category: pd.DataFrame
    rm_summary: pd.DataFrame
    # {variant: (rewards, benches)} for every ppo_<variant>/drift.jsonl present
    drift: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = field(default_factory=dict)


def collect(run_dir: Path | str) -> RunData:
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    drift = {}
    for v in VARIANTS:
        p = run_dir / f"ppo_{v}" / "drift.jsonl"
        if p.exists():
            drift[v] = drift_frames(p)
    rm_cat, rm_sum = rm_frames(run_dir)
    return RunData(
        run_dir=run_dir, results=results, benchmarks=benchmark_frame(results),
        satisfaction_by_cat=breakdown_frame(results, "satisfaction"),
        win_ratio_by_cat=breakdown_frame(results, "win_ratio"),
        label_accuracy=label_accuracy_frame(run_dir), rm_per_category=rm_cat, rm_summary=rm_sum,
        drift=drift,
    )


def item_scores(eval_dir: Path | str, bench: str) -> dict[str, float] | None:
    """{doc_id: score} from samples/<bench>.jsonl, or None when the file is absent."""
    p = Path(eval_dir) / "samples" / f"{bench}.jsonl"
    if not p.exists():
        return None
    return {str(r.get("doc_id")): float(r.get("score", 0) or 0) for r in read_jsonl(p)}
