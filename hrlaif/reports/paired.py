"""Paired differences between evaluation directories, item by item on the same doc_ids.

Every Δ the reports show comes from here: candidate − baseline over the items both evaluated
with a valid score (hrlaif.core.stats.INVALID_RULE), with a paired 95% CI and p (exact McNemar and Tango's
score test for 0/1 scores, the sign-flip permutation test otherwise; hrlaif.core.stats.paired_diff),
Holm-adjusted across the benchmarks of one comparison (or the categories of one benchmark;
`holm_family` names it), the minimum detectable effect at 80% power, and each side's invalid rate with
the exact McNemar p of their difference.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from hrlaif.core.stats import holm, inconclusive, mcnemar_p, pair_scores, paired_diff
from hrlaif.evalsets import registry
from hrlaif.reports.collect import read_items

COLUMNS = ["variant", "vs", "bench", "group", "n", "excluded", "missing", "diff", "lo", "hi", "p", "p_holm",
           "holm_family", "test", "mde", "inconclusive", "invalid_base", "invalid_cand", "p_invalid"]


def comparable(res: dict | None) -> dict[str, dict]:
    """The entries of a results.json that a paired Δ applies to: not those measured against their
    own baseline model (the win ratio), whose item scores are already a comparison."""
    return {b: e for b, e in ((res or {}).get("benchmarks") or {}).items()
            if isinstance(e, dict) and not registry.info(b, e)["against_baseline"]}


def _row(variant: str, vs: str, bench: str, group, base: dict, cand: dict, scale: float) -> dict:
    common, counts = pair_scores(base, cand)
    r = paired_diff([base[k] for k in common], [cand[k] for k in common])
    # each side's invalid rate over the items both evaluated, and the exact McNemar p of their difference
    shared = sorted(set(base) & set(cand))
    ia, ib = [float(base[k] is None) for k in shared], [float(cand[k] is None) for k in shared]
    return {"variant": variant, "vs": vs, "bench": bench, "group": group, "n": r["n"],
            "excluded": counts["dropped_invalid"],
            "missing": counts["missing_in_candidate"] + counts["missing_in_baseline"],
            "diff": r["diff"] * scale, "lo": r["ci95"][0] * scale, "hi": r["ci95"][1] * scale, "p": r["p"],
            "test": r["test"], "mde": r["mde"] * scale,
            "inconclusive": bool(r["n"]) and inconclusive(r["diff"], r["ci95"], r["mde"]),
            "invalid_base": sum(ia) / max(1, len(shared)), "invalid_cand": sum(ib) / max(1, len(shared)),
            "p_invalid": mcnemar_p(ia, ib)}


def paired_frame(results: dict[str, dict | None], dirs: dict[str, Path | None], baseline: str,
                 groups=()) -> pd.DataFrame:
    """One row per (variant, bench) — and per (variant, bench, group) for benchmarks in `groups` — comparing each
    variant's items with the baseline's. Benchmarks without samples on either side get no row
    (tables then fall back to the unpaired difference). Differences are in display scale: 0-1 for
    % metrics, ‰ for ‰ metrics."""
    rows = []
    base_res, base_dir = results.get(baseline), dirs.get(baseline)
    if not base_res or base_dir is None:
        return pd.DataFrame(columns=COLUMNS)
    base_items: dict[str, dict | None] = {}
    for v, res in results.items():
        if v == baseline or not res or dirs.get(v) is None:
            continue
        family = []
        for bench, entry in comparable(res).items():
            if bench not in comparable(base_res):
                continue
            if bench not in base_items:
                base_items[bench] = read_items(base_dir, bench)
            a, b = base_items[bench], read_items(dirs[v], bench)
            if not a or not b:
                continue
            scale = 1000.0 if registry.info(bench, entry)["unit"] == "‰" else 1.0
            family.append(_row(v, baseline, bench, None, {k: x["score"] for k, x in a.items()},
                               {k: x["score"] for k, x in b.items()}, scale))
            if bench in groups:
                by = {}
                for k, x in a.items():
                    by.setdefault(x["group"], set()).add(k)
                sub = [_row(v, baseline, bench, g, {k: a[k]["score"] for k in ks},
                            {k: b[k]["score"] for k in ks if k in b}, scale)
                       for g, ks in by.items() if g is not None]
                _holm(sub, f"categories of {bench}")
                rows += sub
        _holm(family, "benchmarks")
        rows += family
    return pd.DataFrame(rows, columns=COLUMNS)


def _holm(rows: list[dict], what: str) -> None:
    """Holm-adjusted p across one family of comparisons (the benchmarks of one variant, or the
    categories of one benchmark), and the family's name ('6 benchmarks', '12 categories of ...')."""
    tested = [r for r in rows if r["n"]]
    for r, q in zip(tested, holm([r["p"] for r in tested])):
        r["p_holm"], r["holm_family"] = q, f"{len(tested)} {what}"
    for r in rows:
        r.setdefault("p_holm", float("nan"))
        r.setdefault("holm_family", None)


def lookup(paired: pd.DataFrame | None, variant: str, bench: str, group=None) -> dict | None:
    """The row of `paired` for (variant, bench[, group]), or None."""
    if paired is None or paired.empty:
        return None
    sel = paired[(paired.variant == variant) & (paired.bench == bench)]
    sel = sel[sel.group.isna()] if group is None else sel[sel.group == group]
    return sel.iloc[0].to_dict() if len(sel) else None
