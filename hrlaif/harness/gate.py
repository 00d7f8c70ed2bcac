"""Paired non-inferiority gate: may the candidate ship instead of the baseline?

Method (also stored in gate.json under "method"):
- Items are paired by `doc_id` per benchmark (samples/<bench>.jsonl, or an lm-eval output dir's
  samples_<task>_*.jsonl: hrlaif/reports/lmeval_output.py) and must be the same documents where both sides
  record lm-eval's `doc_hash`. Duplicated doc_ids, disjoint item sets, differing documents and
  non-numeric scores are input errors.
- Invalid items (score null: the judge or classifier gave no usable answer) are counted
  (invalid_baseline, invalid_candidate, dropped_invalid) and each side's invalid rate is reported
  with the exact McNemar p of the paired invalid indicators (p_invalid). The difference test and
  the reported diff leave them out of both sides (hrlaif.core.stats.INVALID_RULE); the verdict takes
  the worst case instead: a candidate item that is invalid counts as a failure (the lowest score
  seen; for a lower-is-better benchmark the highest) and a baseline item that is invalid as a
  success; an item invalid on both sides tells nothing about either and stays out (n_decided,
  diff_worst_case). Dropping invalid items is not neutral: a candidate whose bad outputs make
  the judge fail would lose exactly its failures. The worst case bounds that effect whatever the
  invalid items' true scores, where a test of the invalid rates alone would let through every
  difference too small to be significant (README: "The gate").
- An item present on one side but absent on the other is missing (missing_in_candidate,
  missing_in_baseline). Either direction fails the benchmark: a candidate that skipped items was
  not gated on the whole benchmark, and a baseline that lacks the candidate's items gives those
  items no reference. With --allow-partial the benchmark is gated on the common items instead.
- Difference test (reported as p / p_holm): exact McNemar for 0/1 scores, sign-flip permutation test
  otherwise; Holm-adjusted across the benchmarks. It does not decide the verdict.
- Non-inferiority (decides the verdict): d = candidate − baseline oriented so that positive is
  better (a lower-is-better benchmark such as ToxiGen is negated; the direction is the results.json
  entry's `higher_is_better`, else its spec's). The candidate is non-inferior on a benchmark when
  the lower bound of a two-sided CI of mean(d) lies above −margin:
  - 0/1 scores: Tango's score interval for the difference of paired proportions (Tango 1998,
    Stat Med 17:891), the inversion of the score test whose variance is estimated under each
    tested difference. A bootstrap or Wald interval collapses to [0, 0] when no item differs and
    would pass a candidate that is worse by the margin far more often than alpha.
  - Other scores: a paired t interval whose half-width is at least z²/(n + z²) × the score range:
    n items that agree only bound the share of items that could differ at about that much (Tango's
    bound with no discordant pair), so a near-zero sample variance cannot make the interval
    narrower than the items can show.
  Each benchmark is tested at level alpha (a two-sided 1 − alpha interval; p_noninferiority < alpha),
  without Holm: the gate passes only when every benchmark passes, an intersection-union test,
  whose chance of passing a candidate that is inferior on any benchmark is at most that
  benchmark's own alpha (Berger 1982). Holm would only cost power: at 6 benchmarks and n = 200 the
  smallest margin identical outputs clear would rise from 1.9 to 3.4 pt. A candidate exactly at −margin
  passes about alpha/2 of the time and never more than alpha (the score test is asymptotic;
  tests/test_stats.py computes its exact pass rate, bench/detector_power.py measures the gate's).
- Small n: even identical outputs have a CI of ±z²/(n + z²), so n items can show non-inferiority
  only at a margin above that (min_margin in gate.json; 8.8 pt at n = 40, 1.9 pt at n = 200,
  1 pt needs n >= 381 at 95%). Below it the benchmark fails, and the reason says which margin n
  supports.
- Judge-graded benchmarks whose verdicts cannot count (hrlaif/reports/verdict_trust.py: self-graded, the
  evaluation judge being the labeller or the policy's base model; a degenerate judge) are not gated:
  listed under "not_evaluable" with the reason ("not evaluable: self-graded ..."), unless
  --allow-self-graded. A gate left with no benchmark fails.
- The gate passes only when every benchmark is non-inferior and complete (or --allow-partial).
Margins are in points on a 0-100 scale (1 point = 0.01), the same for ToxiGen (1 point = 10 ‰).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from hrlaif.core.errors import UserError
from hrlaif.core.layout import EvalDir
from hrlaif.core.stats import holm, is_binary, mcnemar_p, pair_scores, paired_bootstrap, paired_noninferiority
from hrlaif.evalsets import registry
from hrlaif.reports.collect import check_documents, read_items, read_results
from hrlaif.reports.verdict_trust import allowed, untrusted
from hrlaif.reports.verdict_trust import not_evaluable as not_evaluable_text

log = logging.getLogger(__name__)

DEFAULT_MARGIN_PTS = 1.0
BOOT_ITERS = 10000
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
    """Everything except the CI and the verdict (filled in by `compare`)."""
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
    inv = invalid_rates(base, cand)
    if counts["dropped_invalid"]:
        warnings.append(f"{counts['dropped_invalid']} of {shared} items invalid (score null; baseline "
                        f"{counts['invalid_baseline']}, candidate {counts['invalid_candidate']}): decided at the worst "
                        f"case, invalid rates' McNemar p = {inv['p']:.2g}")
    a = np.array([base[k] for k in common])
    b = np.array([cand[k] for k in common])
    if is_binary(a) and is_binary(b):
        p, test = mcnemar_p(a, b), "mcnemar_exact"
    else:
        _, p, test = paired_bootstrap(a, b, iters=BOOT_ITERS, seed=SEED)
    # Non-inferiority on the oriented difference (swapping the sides negates candidate − baseline), with
    # the invalid items at their worst case for the candidate.
    x, y = worst_case(base, cand, higher_is_better)
    ni = paired_noninferiority(x, y, margin, alpha, ci=False)
    return {
        "n": len(common), "n_baseline": len(base), "n_candidate": len(cand), **counts,
        # Set when items are missing and --allow-partial was not given: the benchmark fails on it.
        "incomplete": None if allow_partial or not missing else "; ".join(missing),
        "baseline": float(a.mean()), "candidate": float(b.mean()), "diff": float((b - a).mean()),
        "n_decided": len(x), "diff_worst_case": float((y - x).mean()) * (1.0 if higher_is_better else -1.0),
        "invalid_rate_baseline": inv["baseline"], "invalid_rate_candidate": inv["candidate"],
        "p_invalid": inv["p"], "higher_is_better": higher_is_better, "margin": margin,
        "test": test, "ci_method": ni["method"],
        "p": float(p), "p_noninferiority": ni["p"],
        "_oriented": (x, y), "_warnings": warnings,
    }


def invalid_rates(base: dict[str, float | None], cand: dict[str, float | None]) -> dict:
    """Each side's share of invalid items over the items both evaluated, and the exact McNemar p of
    the paired invalid indicators (do the two sides' invalid rates differ?)."""
    shared = sorted(set(base) & set(cand))
    ia, ib = [float(base[k] is None) for k in shared], [float(cand[k] is None) for k in shared]
    n = max(1, len(shared))
    return {"n": len(shared), "baseline": sum(ia) / n, "candidate": sum(ib) / n, "p": mcnemar_p(ia, ib)}


def worst_case(base: dict[str, float | None], cand: dict[str, float | None], higher_is_better: bool
               ) -> tuple[np.ndarray, np.ndarray]:
    """The non-inferiority test's (x, y), oriented as before (y - x: positive is better; a
    lower-is-better benchmark swaps the sides), over the items both evaluated and not invalid on
    both: a candidate item that is invalid takes the worst score seen (a failure for 0/1 scores), a
    baseline item that is invalid the best (a success). Whatever the invalid items' true scores,
    the candidate cannot look better than this, so invalid items never help it."""
    shared = sorted(k for k in set(base) & set(cand) if base[k] is not None or cand[k] is not None)
    valid = [v for v in list(base.values()) + list(cand.values()) if v is not None]
    low, high = min(valid + [0.0]), max(valid + [1.0])
    worst, best = (low, high) if higher_is_better else (high, low)
    a = np.array([best if base[k] is None else base[k] for k in shared])
    b = np.array([worst if cand[k] is None else cand[k] for k in shared])
    return (a, b) if higher_is_better else (b, a)


def _not_shown(r: dict, lo: float) -> str:
    """Why a benchmark is not shown non-inferior, in points of the oriented difference."""
    margin, n, y = r["margin"] * 100, r["n"], r["min_margin"] * 100
    # two decimals, more when they would print the bound as the margin itself
    digits = next((d for d in (2, 3, 4) if round(lo * 100, d) != -margin), 6)
    text = f"not shown non-inferior: {r['ci_level'] * 100:.4g}% CI lower bound {lo * 100:+.{digits}f} pt"
    if lo > -r["margin"]:
        text += f" > -{margin:g} pt, but p_noninferiority >= alpha"
    else:
        text += f" < -{margin:g} pt"
    y_up = (math.floor(y * 10) + 1) / 10  # the next 0.1 pt above: a margin identical outputs do clear
    if y >= margin:
        return text + f"; n={n} can show non-inferiority only at a margin >= {y_up:.1f} pt"
    return text + f"; n={n} would support margins down to {y_up:.1f} pt if the two agreed on every item"


def compare(baseline: Path | str, candidate: Path | str, margins: dict[str, float] | None = None,
            alpha: float = 0.05, benchmarks: list[str] | None = None, allow_partial: bool = False,
            allow_self_graded: bool = False) -> dict:
    """Gate two evaluation directories; returns the gate.json dict ("passed" is the verdict)."""
    if not 0 < alpha < 1:
        raise UserError(f"--alpha must be in (0, 1), got {alpha}")
    margins = dict(margins or {})
    base_res, cand_res = read_results(Path(baseline)), read_results(Path(candidate))
    # human verdicts (hrlaif annotate) are gated only when both sides were rated
    benches = benchmarks or [b for b in gated(base_res) if b in cand_res["benchmarks"]
                             or not (base_res["benchmarks"][b] or {}).get("human")]
    unknown = sorted(set(margins) - set(benches) - {"default"})
    if unknown:
        raise UserError(f"--margin names benchmarks not gated here: {', '.join(unknown)}")
    if not benches:
        raise UserError(f"{baseline}/results.json lists no benchmark to gate")
    not_evaluable = {b: not_evaluable_text(r) for b, r in
                     untrusted(baseline, candidate, allow=allowed(allow_self_graded)).items() if b in benches}
    benches = [b for b in benches if b not in not_evaluable]
    default_margin = margins.get("default", DEFAULT_MARGIN_PTS / 100.0)
    rows = {}
    for bench in benches:
        entry = base_res["benchmarks"].get(bench) or cand_res["benchmarks"].get(bench) or {}
        higher = registry.info(bench, entry)["higher_is_better"]
        base_items, cand_items = read_items(baseline, bench, required=True), read_items(candidate, bench, required=True)
        check_documents(bench, base_items, cand_items, "the baseline", "the candidate")  # same doc_hash per id
        rows[bench] = compare_benchmark(bench, {k: v["score"] for k, v in base_items.items()},
                                        {k: v["score"] for k, v in cand_items.items()},
                                        margins.get(bench, default_margin), higher, alpha, allow_partial)
    names = list(rows)
    p_holm = holm([rows[b]["p"] for b in names])
    for b in names:
        r = rows[b]
        # All must pass (an intersection-union test): each benchmark at level alpha, no Holm (Method).
        level_alpha = alpha
        ni = paired_noninferiority(*r.pop("_oriented"), r["margin"], level_alpha)
        lo, hi = ni["ci"]
        sign = 1.0 if r["higher_is_better"] else -1.0
        # The interval is of the oriented diff; report the CI of the raw candidate − baseline.
        r["ci"] = sorted([sign * lo + 0.0, sign * hi + 0.0])  # + 0.0 drops "-0.0"
        r["ci_level"] = 1 - level_alpha
        r["bound_vs_margin"] = float(lo)  # worst plausible oriented diff; non-inferior if > -margin
        r["min_margin"] = ni["min_margin"]  # identical outputs on these n items clear only larger margins
        r["p_holm"] = p_holm[names.index(b)]
        ok = r["p_noninferiority"] < alpha
        warnings = r.pop("_warnings")
        reasons = []
        if r["incomplete"]:
            reasons.append(f"missing items: {r['incomplete']} (rerun the evaluation on every item, or pass "
                           f"--allow-partial to gate on the {r['n'] + r['dropped_invalid']} common items)")
        if not ok:
            reasons.append(_not_shown(r, lo))
        r["verdict"] = "fail" if reasons else "pass"
        r["reason"] = "; ".join(reasons) or None
        r["warning"] = "; ".join(warnings) or None
    passed = bool(names) and all(rows[b]["verdict"] == "pass" for b in names)
    return {"baseline": str(baseline), "candidate": str(candidate), "alpha": alpha,
            "allow_partial": allow_partial, "allow_self_graded": allow_self_graded, "passed": passed,
            "verdict": "pass" if passed else "fail",
            "incomplete": [b for b in names if rows[b]["incomplete"]],
            "benchmarks": rows, "not_evaluable": not_evaluable, "method": METHOD}


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
            row["invalid b/c"] = f"{r['invalid_baseline']}/{r['invalid_candidate']} p={r['p_invalid']:.2g}"
        if show_missing:
            row["missing b/c"] = f"{r['missing_in_baseline']}/{r['missing_in_candidate']}"
        verdict = r["verdict"].upper() if r["verdict"] == "fail" else r["verdict"]
        row["verdict"] = verdict + (" (missing items)" if r.get("incomplete") else "")
        rows.append(row)
    table = pd.DataFrame(rows).to_string(index=False) if rows else "no benchmark could be gated"
    lines = [table, "", "scores, diffs and margins in points (0-100) over the items valid on both sides; CI of "
             "candidate − baseline with invalid items at the worst case for the candidate (Tango score interval "
             "for 0/1 scores, paired t with a small-n floor otherwise), each benchmark at level alpha (all must "
             "pass: no Holm); a benchmark passes when the CI's bound on the worse side clears the margin"]
    if show_invalid:
        lines.append("invalid b/c: items with a null (invalid) score in baseline/candidate, McNemar p of the two "
                     "invalid rates; the verdict counts a candidate's invalid item as a failure, a baseline's as a "
                     "success")
    if show_missing:
        lines.append("missing b/c: items the other side evaluated that the baseline/candidate lacks")
    for b, r in benches.items():
        if r["verdict"] == "fail" and r.get("reason"):
            lines.append(f"FAIL: {b}: {r['reason']}")
    for b, r in benches.items():
        if r["warning"]:
            lines.append(f"warning: {b}: {r['warning']}")
    for b, why in (report.get("not_evaluable") or {}).items():
        lines.append(f"NOT GATED: {b}: {why}")
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
    ref = None if is_checkpoint(other) or not EvalDir(Path(other)).results.exists() else read_results(Path(other))
    if benchmarks is None and ref is not None:
        benchmarks = gated(ref)
    cfg = (ref or {}).get("config") or {}
    limit = limit if limit is not None else cfg.get("limit")
    data_dir = data_dir if data_dir is not None else cfg.get("data_dir")
    spec_dirs = cfg.get("spec_dirs") or None  # benchmarks registered from the other side's spec dirs
    from hrlaif.evalsets.runner import evaluate_to_dir  # lazy: pulls torch and transformers

    target = Path(out_dir) / f"{role}_eval"
    log.warning("%s is a checkpoint; evaluating it into %s", path, target)
    # Keywords go to hrlaif.evalsets.runner.EvalConfig; unset ones keep the runner's defaults.
    kw = {k: v for k, v in (("benchmarks", benchmarks), ("limit", limit), ("data_dir", data_dir),
                            ("spec_dirs", spec_dirs)) if v is not None}
    evaluate_to_dir(str(path), target, **kw)
    return target
