"""Read a run directory (docs/FORMATS.md) into tidy pandas frames.

Everything here tolerates missing stages: a run that stopped after `eval_sft` still
reports, with the absent cells left empty. Malformed files raise `UserError` (via
hrlaif.core.store) so the CLI prints one line instead of a traceback.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hrlaif.core.errors import UserError
from hrlaif.core.layout import MODES, VARIANTS, EvalDir, RunLayout
from hrlaif.core.store import read_json, read_jsonl
from hrlaif.evalsets import registry
from hrlaif.reports import lmeval_output

VARIANT_LABELS = {"sft": "SFT", "rlaif": "RLAIF", "hrlaif": "HRLAIF"}
RM_MODES = tuple(MODES.values())
# The paper's headline metrics, with sections of their own (per-category tables, the failure alarm).
SATISFACTION, WIN_RATIO = "satisfaction", "win_ratio"
# eval_hrlaif's head-to-head against RLAIF (same row format as win_ratio; samples field win_vs_rlaif).
HEAD_TO_HEAD = "win_ratio_vs_rlaif"
_NAN = float("nan")


def benchmark_order(present) -> list[str]:
    """Comparison columns: every default benchmark and derived metric, and every other registered one
    a results.json holds, in spec order (a missing default shows as a dash); then any unregistered
    benchmark a results.json holds."""
    shown = set(registry.defaults()) | set(present)
    order = [b for b in registry.table_order() if b in shown or getattr(registry.metric(b), "parent", None) in shown]
    return order + sorted(set(present) - set(order))


def display_scale(bench: str, entry: dict) -> float:
    """Factor that puts an entry in its display scale: 1 for % metrics (0-1 scores shown x100
    by the tables); for ‰ metrics the factor that makes the stored value ‰ (permille_scale)."""
    return permille_scale(entry) if registry.info(bench, entry)["unit"] == "‰" else 1.0


def permille_scale(entry: dict) -> float:
    """Factor that puts a ‰ entry (e.g. ToxiGen) in ‰.

    Per-item scores are 0/1, so an eval may store either the fraction or the permille value. A 95% CI
    (or score) above 1 can only be ‰;
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
    # `invalid` counts items left out (INVALID_RULE); older files had only the judge answers' count.
    for key in ("invalid", "invalid_judgements", "invalid_answers", "n_invalid"):
        if key in extra:
            return extra[key]
    return None


def read_results(eval_dir: Path | str) -> dict:
    """One evaluation dir's results.json (must hold a 'benchmarks' object)."""
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise UserError(f"evaluation directory not found: {eval_dir}")
    if lmeval_output.is_lmeval_dir(eval_dir):  # an lm-eval --output_path dir (with --log_samples)
        return lmeval_output.read_results(eval_dir)
    p = EvalDir(eval_dir).results
    res = read_json(p)
    if not isinstance(res, dict) or not isinstance(res.get("benchmarks"), dict):
        raise UserError(f"{p} has no 'benchmarks' object")
    return res


def load_results(run_dir: Path | str) -> dict[str, dict | None]:
    """{variant: results.json dict or None}, for eval_sft / eval_rlaif / eval_hrlaif."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    layout = RunLayout(run_dir)
    return {v: read_results(layout.eval(v).dir) if layout.eval(v).results.exists() else None for v in VARIANTS}


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
                raise UserError(f"results.json of {v}: benchmark {bench!r} is not an object")
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
                # why the figure cannot be trusted (e.g. a ToxiGen classifier at chance on its audit)
                "unreliable": e.get("unreliable") if isinstance(e.get("unreliable"), str) else None,
            })
    cols = ["variant", "bench", "metric", "score", "lo", "hi", "n", "higher_is_better", "label", "unit",
            "against_baseline", "definition", "source", "wins", "ties", "losses", "invalid", "unreliable"]
    return pd.DataFrame(rows, columns=cols)


def breakdown_frame(results: dict[str, dict | None], bench: str) -> pd.DataFrame:
    """Per-category rows (variant, category, score, lo, hi, n) of one benchmark's `breakdown`, in
    the display scale of benchmark_frame (‰ for ‰ metrics)."""
    rows = []
    for v, res in results.items():
        e = (res or {}).get("benchmarks", {}).get(bench)
        if not e:
            continue
        permille = registry.info(bench, e)["unit"] == "‰"
        for cat, b in (e.get("breakdown") or {}).items():
            lo, hi = _ci(b)
            k = permille_scale(b) if permille else 1.0
            rows.append({"variant": v, "category": cat, "score": _num(b.get("score")) * k,
                         "lo": lo * k, "hi": hi * k, "n": int(b.get("n") or 0)})
    return pd.DataFrame(rows, columns=["variant", "category", "score", "lo", "hi", "n"])


# An accuracy over pairs: n pairs, n_clusters prompts when its CI is clustered by prompt (else NaN).
ACC_COLUMNS = ["score", "lo", "hi", "n", "n_clusters"]
# label_accuracy.json's entry (not a category) listing where the two answer checks disagree.
DISAGREEMENTS = "answer_check_disagreements"


def _acc(e: dict, lo: float, hi: float) -> dict:
    return {"score": _num(e.get("score")), "lo": lo, "hi": hi, "n": int(e.get("n") or 0),
            "n_clusters": _num(e.get("n_clusters"))}


def _label_files(run_dir: Path):
    # Hybrid last, so its (more complete) file wins on overlap.
    for mode in RM_MODES:
        p = RunLayout(run_dir).label(mode).accuracy
        if p.exists():
            data = read_json(p)
            if not isinstance(data, dict):
                raise UserError(f"{p} is not a JSON object")
            yield data


def label_accuracy_frame(run_dir: Path | str) -> pd.DataFrame:
    """Label accuracy per (category, mode), with what the truth was (`truth`: the second answer
    check, hh-rlhf, human sheets) when the file says. label_hybrid's file carries both modes;
    label_basic is the fallback when only basic labelling ran."""
    rows: dict[tuple[str, str], dict] = {}
    for data in _label_files(Path(run_dir)):
        for cat, modes in data.items():
            if cat == DISAGREEMENTS or not isinstance(modes, dict):
                continue
            for mode, e in modes.items():
                if isinstance(e, dict):
                    lo, hi = _ci(e)
                    rows[(cat, mode)] = {"category": cat, "mode": mode, **_acc(e, lo, hi),
                                         "truth": modes.get("truth") if isinstance(modes.get("truth"), str) else None}
    return pd.DataFrame(list(rows.values()), columns=["category", "mode", *ACC_COLUMNS, "truth"])


def label_disagreements(run_dir: Path | str) -> dict | None:
    """{checked, n, items, definition}: responses where the hybrid labeller's answer check and the
    second check disagree (None when no label file lists them)."""
    found = None
    for data in _label_files(Path(run_dir)):
        found = data.get(DISAGREEMENTS) if isinstance(data.get(DISAGREEMENTS), dict) else found
    return found


def rm_frames(run_dir: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-category accuracy rows, one summary row per RM with held-out acc and clipped share)."""
    run_dir = Path(run_dir)
    cats, summary = [], []
    for mode in RM_MODES:
        # `hrlaif run` keeps the RM checkpoint (with its metrics) in rm_<mode>/model/
        p = next((q for q in RunLayout(run_dir).rm(mode).metrics_candidates if q.exists()), None)
        if p is None:
            continue
        m = read_json(p)
        if not isinstance(m, dict):
            raise UserError(f"{p} is not a JSON object")
        h = m.get("heldout_acc") or {}
        lo, hi = _ci(h)
        sh = m.get("shared_heldout_acc") or {}
        slo, shi = _ci(sh)
        summary.append({"rm": mode, **_acc(h, lo, hi), "clipped_share": _num(m.get("clipped_share")),
                        "clip": _num(m.get("clip")),
                        "shared": _acc(sh, slo, shi) | {"file": sh.get("file"), "sha": sh.get("sha256_12")}
                        if sh else None})
        for cat, e in (m.get("per_category") or {}).items():
            if isinstance(e, dict):
                lo, hi = _ci(e)
                cats.append({"rm": mode, "category": cat, **_acc(e, lo, hi)})
    return (pd.DataFrame(cats, columns=["rm", "category", *ACC_COLUMNS]),
            pd.DataFrame(summary, columns=["rm", *ACC_COLUMNS, "clipped_share", "clip", "shared"]))


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
        # The sqrt(KL) axis uses k3 when logged: never negative, unlike the k1 sample mean the reward uses.
        kl_axis = _num(r["kl_k3"]) if r.get("kl_k3") is not None else kl
        sq = math.sqrt(max(kl_axis, 0.0)) if not math.isnan(kl_axis) else _NAN
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
        p = RunLayout(run_dir).ppo(v).drift
        if p.exists():
            drift[v] = drift_frames(p)
    rm_cat, rm_sum = rm_frames(run_dir)
    return RunData(
        run_dir=run_dir, results=results, benchmarks=benchmark_frame(results),
        satisfaction_by_cat=breakdown_frame(results, SATISFACTION),
        win_ratio_by_cat=breakdown_frame(results, WIN_RATIO),
        label_accuracy=label_accuracy_frame(run_dir), rm_per_category=rm_cat, rm_summary=rm_sum,
        drift=drift,
    )


def sample_source(bench: str) -> tuple[str, str]:
    """(samples file stem, per-item field) of a benchmark: its own file's `score`, or for a derived
    metric (the win ratio) its parent's file and the field the spec `requires` (`win`)."""
    try:
        sp = registry.metric(bench)
    except UserError:  # not registered here: results.json alone describes it
        sp = None
    if sp is not None and sp.parent:
        return sp.parent, sp.requires
    if bench == HEAD_TO_HEAD:  # before (or without) a spec for it: the contract's field
        return SATISFACTION, "win_vs_rlaif"
    return bench, "score"


def read_items(eval_dir: Path | str, bench: str, required: bool = False) -> dict[str, dict] | None:
    """{doc_id: {"score": float | None, "group": str | None}} from samples/<file>.jsonl (sample_source);
    a None score marks an invalid item (hrlaif.core.stats.INVALID_RULE). An absent file is None, or an error
    when `required`."""
    if lmeval_output.is_lmeval_dir(eval_dir):
        items = lmeval_output.read_items(eval_dir, bench)
        if items is None and required:
            raise UserError(f"{eval_dir}: the lm-eval output has no task of benchmark {bench}")
        return items
    stem, fld = sample_source(bench)
    p = Path(eval_dir) / "samples" / f"{stem}.jsonl"
    own = Path(eval_dir) / "samples" / f"{bench}.jsonl"
    if bench == HEAD_TO_HEAD and own.exists():  # the head-to-head's own file: win ratio rows
        p, fld = own, "win"
    if not p.exists():
        if required:
            raise UserError(f"missing {p}: paired comparisons pair items from samples/<bench>.jsonl")
        return None
    items = read_item_file(p, fld, key="doc_id")
    if not items and required:
        raise UserError(f"{p} has no items")
    return items


def read_item_file(p: Path, fld: str = "score", key: str | tuple = "doc_id") -> dict[str, dict]:
    """{id: {fld: float | None, "group": str | None, **row}} of one per-item JSONL file. `key` names
    the id field (a tuple: the first present). Items that cannot be paired (duplicate id, a value
    that is neither null nor a finite number) are errors; a row without `fld` is skipped when `fld`
    is not `score` (a satisfaction row judged without a baseline has no `win`)."""
    keys = (key,) if isinstance(key, str) else key
    items: dict[str, dict] = {}
    for i, r in enumerate(read_jsonl(p), 1):
        kf = next((k for k in keys if k in r), None)
        if kf is None or fld not in r:
            if fld != "score" and kf is not None:
                continue
            raise UserError(f"{p}:{i} lacks '{keys[0]}' or '{fld}'")
        k = str(r[kf])
        if k in items:
            raise UserError(f"{p}: duplicate {kf} {k!r}; items cannot be paired")
        v = r[fld]
        if v is not None:
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise UserError(f"{p}:{i} {fld} {v!r} is not a number (null marks an invalid item)")
            if not math.isfinite(v):
                raise UserError(f"{p}:{i} {fld} {r[fld]!r} is not a finite number")
        items[k] = {**r, fld: v, "score": v,
                    "group": None if r.get("group") is None else str(r["group"])}
    return items


def item_scores(eval_dir: Path | str, bench: str, required: bool = False) -> dict[str, float | None] | None:
    """{doc_id: score or None (invalid)} of read_items."""
    items = read_items(eval_dir, bench, required)
    return None if items is None else {k: v["score"] for k, v in items.items()}


def check_documents(bench: str, a: dict[str, dict], b: dict[str, dict], a_name: str, b_name: str) -> None:
    """Items paired by id must be the same documents: where both sides record lm-eval's `doc_hash`
    (lm-eval samples, `hrlaif eval` rows), a differing hash is a one-line UserError."""
    for k in sorted(a.keys() & b.keys()):
        ha, hb = a[k].get("doc_hash"), b[k].get("doc_hash")
        if ha and hb and ha != hb:
            n = sum(1 for j in a.keys() & b.keys() if a[j].get("doc_hash") and b[j].get("doc_hash")
                    and a[j]["doc_hash"] != b[j]["doc_hash"])
            raise UserError(f"{bench}: item {k} of {b_name} is a different document than {a_name}'s (doc_hash "
                            f"{hb[:12]} vs {ha[:12]}; {n} such items); paired comparisons need the same documents")
