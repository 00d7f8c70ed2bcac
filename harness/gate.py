"""Paired non-inferiority gate: may the candidate ship instead of the baseline?

Method (also stored in gate.json under "method"):
- Items are paired by `doc_id` per benchmark (samples/<bench>.jsonl). Duplicated doc_ids, disjoint
  item sets and non-numeric scores are input errors.
- Invalid items (core.stats.INVALID_RULE, the rule every report and alarm follows): an item whose
  score is null on either side (the judge or classifier gave no usable answer) is excluded from
  both sides of the pairs and counted (invalid_baseline, invalid_candidate, dropped_invalid).
- An item present on one side but absent on the other is missing (missing_in_candidate,
  missing_in_baseline). Either direction fails the benchmark: a candidate that skipped items was
  not gated on the whole benchmark, and a baseline that lacks the candidate's items gives those
  items no reference. With --allow-partial the benchmark is gated on the common items instead.
- Difference test (reported as p / p_holm): exact McNemar for 0/1 scores, paired bootstrap
  otherwise; Holm-adjusted across the benchmarks.
- Non-inferiority (decides the verdict): d = candidate − baseline oriented so that positive is
  better (a lower-is-better benchmark such as ToxiGen is negated; the direction is the results.json
  entry's `higher_is_better`, else its spec's). The candidate is non-inferior on a benchmark when
  the lower bound of the paired bootstrap CI of mean(d) lies above −margin. The CI level is Holm-
  adjusted: the benchmark with the k-th smallest non-inferiority p-value (k = 0..m-1) uses a
  two-sided 1 − alpha/(m − k) interval (95% for alpha = 0.05 when m = 1), so that all m decisions
  hold jointly at family-wise level alpha. Equivalently p_noninferiority_holm < alpha.
- The gate passes only when every benchmark is non-inferior and complete (or --allow-partial).
Margins are in points on a 0-100 scale (1 point = 0.01), the same for ToxiGen (1 point = 10 ‰).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from core.errors import UserError
from core.stats import holm, min_detectable_diff, pair_scores, paired_bootstrap, paired_sd
from evalsets import registry
from reports.collect import item_scores, read_results

log = logging.getLogger(__name__)

DEFAULT_MARGIN_PTS = 1.0
BINARY_ITERS = 10000
SEED = 0
METHOD = __doc__.split("Method (also stored in gate.json under \"method\"):\n", 1)[1].strip()


def is_checkpoint(path: Path) -> bool:
    return (Path(path) / "config.json").exists()


def parse_margins(specs: list[str] | None) -> dict[str, float]:
    """['gsm8k=2', 'default=0.5'] -> {'gsm8k': 0.02, 'default': 0.005} (points -> 0-1 scale)."""
    out = {}
    for s in specs or []:
        name, sep, val = s.partition("=")
        try:
            pts = float(val)
        except ValueError:
            pts = float("nan")
        if not sep or not name.strip() or not math.isfinite(pts) or pts < 0:
            raise UserError(f"--margin expects BENCH=POINTS with POINTS >= 0, got {s!r}")
        out[name.strip()] = pts / 100.0
    return out


def gated(res: dict) -> list[str]:
    """The benchmarks of a results.json the gate compares: not those measured against their own
    baseline model (the win ratio), whose two sides are not paired scores."""
    return [b for b, e in res["benchmarks"].items() if not registry.info(b, e)["against_baseline"]]


def _missing_text(bench: str, side: str, other: str, k: int, n_other: int) -> str:
    return f"{side} lacks {k} of the {other}'s {n_other} {bench} items"


def compare_benchmark(bench: str, base: dict[str, float | None], cand: dict[str, float | None],
                      margin: float, higher_is_better: bool, alpha: float,
                      allow_partial: bool = False) -> dict:
    """Everything except the Holm-dependent fields (filled in by `compare`)."""
    common, counts = pair_scores(base, cand)
    shared = len(common) + counts["dropped_invalid"]
    if not shared:
        raise UserError(f"{bench}: baseline and candidate share no doc_id; they evaluated different items")
    if not common:
        raise UserError(f"{bench}: no item has a valid score on both sides "
                        f"(baseline invalid {counts['invalid_baseline']}, "
                        f"candidate invalid {counts['invalid_candidate']} of {shared} shared items)")
    missing = []
    if counts["missing_in_candidate"]:
        missing.append(_missing_text(bench, "candidate", "baseline", counts["missing_in_candidate"], len(base)))
    if counts["missing_in_baseline"]:
        missing.append(_missing_text(bench, "baseline", "candidate", counts["missing_in_baseline"], len(cand)))
    warnings = []
    if missing and allow_partial:
        warnings.append(f"--allow-partial: gated on the {shared} items both evaluated ("
                        + "; ".join(missing) + ")")
    if counts["dropped_invalid"]:
        warnings.append(f"{counts['dropped_invalid']} of {shared} items excluded from both sides as invalid "
                        f"(score null; baseline {counts['invalid_baseline']}, candidate {counts['invalid_candidate']} "
                        "invalid)")
    a = np.array([base[k] for k in common])
    b = np.array([cand[k] for k in common])
    sign = 1.0 if higher_is_better else -1.0
    boot, p, test = paired_bootstrap(a, b, iters=BINARY_ITERS, seed=SEED)
    boot = sign * boot
    # Share of resampled mean differences at or below -margin; x2 puts it on the two-sided scale of the CI.
    p_ni = max(min(1.0, 2 * float(np.mean(boot <= -margin))), 1.0 / len(boot))
    mdd = min_detectable_diff(paired_sd(a, b), len(common), alpha=alpha / 2)
    if mdd > margin:
        warnings.append(f"n={len(common)} is too small to detect a {margin * 100:g}-point margin "
                        f"(min detectable difference {mdd * 100:.1f} points at 80% power)")
    return {
        "n": len(common), "n_baseline": len(base), "n_candidate": len(cand), **counts,
        # Set when items are missing and --allow-partial was not given: the benchmark fails on it.
        "incomplete": None if allow_partial or not missing else "; ".join(missing),
        "baseline": float(a.mean()), "candidate": float(b.mean()), "diff": float((b - a).mean()),
        "higher_is_better": higher_is_better, "margin": margin,
        "test": test,
        "p": float(p), "p_noninferiority": p_ni, "min_detectable_diff": mdd,
        "_boot": boot, "_warnings": warnings,
    }


def compare(baseline: Path | str, candidate: Path | str, margins: dict[str, float] | None = None,
            alpha: float = 0.05, benchmarks: list[str] | None = None, allow_partial: bool = False) -> dict:
    """Gate two evaluation directories; returns the gate.json dict ("passed" is the verdict)."""
    if not 0 < alpha < 1:
        raise UserError(f"--alpha must be in (0, 1), got {alpha}")
    margins = dict(margins or {})
    base_res, cand_res = read_results(Path(baseline)), read_results(Path(candidate))
    benches = benchmarks or gated(base_res)
    unknown = sorted(set(margins) - set(benches) - {"default"})
    if unknown:
        raise UserError(f"--margin names benchmarks not gated here: {', '.join(unknown)}")
    if not benches:
        raise UserError(f"{baseline}/results.json lists no benchmark to gate")
    default_margin = margins.get("default", DEFAULT_MARGIN_PTS / 100.0)
    rows = {}
    for bench in benches:
        entry = base_res["benchmarks"].get(bench) or cand_res["benchmarks"].get(bench) or {}
        higher = registry.info(bench, entry)["higher_is_better"]
        rows[bench] = compare_benchmark(bench, item_scores(baseline, bench, required=True),
                                        item_scores(candidate, bench, required=True),
                                        margins.get(bench, default_margin), higher, alpha, allow_partial)
    names = list(rows)
    m = len(names)
    p_holm = holm([rows[b]["p"] for b in names])
    p_ni_holm = holm([rows[b]["p_noninferiority"] for b in names])
    order = sorted(names, key=lambda b: rows[b]["p_noninferiority"])
    for rank, b in enumerate(order):
        r = rows[b]
        level_alpha = alpha / (m - rank)
        lo, hi = np.quantile(r.pop("_boot"), [level_alpha / 2, 1 - level_alpha / 2])
        sign = 1.0 if r["higher_is_better"] else -1.0
        # The bootstrap is of the oriented diff; report the CI of the raw candidate − baseline.
        r["ci"] = sorted([float(sign * lo) + 0.0, float(sign * hi) + 0.0])  # + 0.0 drops "-0.0"
        r["ci_level"] = 1 - level_alpha
        r["bound_vs_margin"] = float(lo)  # worst plausible oriented diff; non-inferior if > -margin
        r["p_holm"] = p_holm[names.index(b)]
        r["p_noninferiority_holm"] = p_ni_holm[names.index(b)]
        ok = r["p_noninferiority_holm"] < alpha
        warnings = r.pop("_warnings")
        if not ok and lo > -r["margin"]:
            warnings.append("fails by Holm step-down: a benchmark with stronger evidence already failed")
        reasons = []
        if r["incomplete"]:
            reasons.append(f"missing items: {r['incomplete']} (rerun the evaluation on every item, or pass "
                           f"--allow-partial to gate on the {r['n'] + r['dropped_invalid']} common items)")
        if not ok:
            # lo is the CI bound at this benchmark's Holm level, in points of the oriented difference
            reasons.append(f"not shown non-inferior: CI bound {lo * 100:+.1f} points vs margin -{r['margin'] * 100:g}"
                           + (" (Holm step-down)" if lo > -r["margin"] else ""))
        r["verdict"] = "fail" if reasons else "pass"
        r["reason"] = "; ".join(reasons) or None
        r["warning"] = "; ".join(warnings) or None
    passed = all(rows[b]["verdict"] == "pass" for b in names)
    return {"baseline": str(baseline), "candidate": str(candidate), "alpha": alpha,
            "allow_partial": allow_partial, "passed": passed, "verdict": "pass" if passed else "fail",
            "incomplete": [b for b in names if rows[b]["incomplete"]],
            "benchmarks": rows, "method": METHOD}


def format_table(report: dict) -> str:
    import pandas as pd

    rows = []
    benches = report["benchmarks"]
    # Columns for excluded items appear only when some benchmark has any, to keep the usual table narrow.
    show_invalid = any(r.get("dropped_invalid") for r in benches.values())
    show_missing = any(r.get("missing_in_candidate") or r.get("missing_in_baseline") for r in benches.values())
    for b, r in benches.items():
        row = {
            "benchmark": b + ("" if r["higher_is_better"] else " (lower better)"), "n": r["n"],
            "baseline": f"{r['baseline'] * 100:.1f}", "candidate": f"{r['candidate'] * 100:.1f}",
            "diff": f"{r['diff'] * 100:+.1f}",
            "CI": f"[{r['ci'][0] * 100:+.1f}, {r['ci'][1] * 100:+.1f}] @{r['ci_level'] * 100:.1f}%",
            "p": f"{r['p']:.3g}", "p_holm": f"{r['p_holm']:.3g}", "margin": f"{r['margin'] * 100:g}",
        }
        if show_invalid:
            row["invalid b/c"] = f"{r['invalid_baseline']}/{r['invalid_candidate']}"
        if show_missing:
            row["missing b/c"] = f"{r['missing_in_baseline']}/{r['missing_in_candidate']}"
        verdict = r["verdict"].upper() if r["verdict"] == "fail" else r["verdict"]
        row["verdict"] = verdict + (" (missing items)" if r.get("incomplete") else "")
        rows.append(row)
    table = pd.DataFrame(rows).to_string(index=False)
    lines = [table, "", "scores, diffs and margins in points (0-100); CI of candidate − baseline, Holm-adjusted level"]
    if show_invalid:
        lines.append("invalid b/c: items with a null (invalid) score in baseline/candidate; excluded from both sides")
    if show_missing:
        lines.append("missing b/c: items the other side evaluated that the baseline/candidate lacks")
    for b, r in benches.items():
        if r["verdict"] == "fail" and r.get("reason"):
            lines.append(f"FAIL: {b}: {r['reason']}")
    for b, r in benches.items():
        if r["warning"]:
            lines.append(f"warning: {b}: {r['warning']}")
    lines.append(f"gate: {'PASS' if report['passed'] else 'FAIL'}")
    return "\n".join(lines)


def evaluate_if_checkpoint(path: Path, out_dir: Path, role: str, other: Path,
                           benchmarks: list[str] | None, limit: int | None, data_dir: str | None) -> Path:
    """Return an evaluation dir for `path`: itself, or a fresh evaluation when it is a checkpoint.

    Defaults for the evaluation come from the other side when that is an evaluation dir, so the
    two evaluate the same benchmarks and items.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"not found: {path}")
    if not is_checkpoint(path):
        return path
    ref = None if is_checkpoint(other) or not (Path(other) / "results.json").exists() else read_results(Path(other))
    if benchmarks is None and ref is not None:
        benchmarks = gated(ref)
    cfg = (ref or {}).get("config") or {}
    limit = limit if limit is not None else cfg.get("limit")
    data_dir = data_dir if data_dir is not None else cfg.get("data_dir")
    spec_dirs = cfg.get("spec_dirs") or None  # benchmarks registered from the other side's spec dirs
    from evalsets.runner import evaluate_to_dir  # lazy: pulls torch and transformers

    target = Path(out_dir) / f"{role}_eval"
    log.warning("%s is a checkpoint; evaluating it into %s", path, target)
    # Keywords go to evalsets.runner.EvalConfig; unset ones keep the runner's defaults.
    kw = {k: v for k, v in (("benchmarks", benchmarks), ("limit", limit), ("data_dir", data_dir),
                            ("spec_dirs", spec_dirs)) if v is not None}
    evaluate_to_dir(str(path), target, **kw)
    return target
