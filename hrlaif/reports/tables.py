"""Display tables: the tidy frames of hrlaif.reports.collect rendered as "score [lo, hi] n=.. Δ.." cells.

Scores on a 0-1 scale are shown in percent with CI bounds in percent and deltas in
percentage points (pt); metrics whose spec unit is ‰ (ToxiGen) in ‰. Column names and order
come from the benchmark specs (hrlaif.evalsets.registry). A missing value is "—", never an error.
A Δ is paired (hrlaif.reports.paired): its 95% CI and p, or "inconclusive (MDE x pt)" when the CI
includes 0 and the items could not have detected an effect of the size seen. Below
hrlaif.core.stats.MIN_N_CI items no CI is shown and the cell carries FEW (greyed in HTML).
The run report and `hrlaif compare` both render through `comparison_table` / `category_table`.
"""
from __future__ import annotations

import math

import pandas as pd

from hrlaif.core.console import DASH, fmt_score, present
from hrlaif.core.stats import MIN_N_CI
from hrlaif.evalsets import registry
from hrlaif.reports.collect import RM_MODES, VARIANT_LABELS, VARIANTS, benchmark_order
from hrlaif.reports.paired import lookup

FEW = f"(n<{MIN_N_CI}: no CI)"


def cell(score, lo=None, hi=None, n=None, permille: bool = False) -> str:
    """fmt_score, without the CI (and marked FEW) below MIN_N_CI items."""
    if present(n) and int(n) < MIN_N_CI and present(score):
        return fmt_score(score, None, None, n, permille=permille) + " " + FEW
    return fmt_score(score, lo, hi, n, permille=permille)


def fmt_delta(delta, permille: bool = False) -> str:
    if not present(delta):
        return ""
    return f"Δ {delta:+.1f}‰" if permille else f"Δ {delta * 100:+.1f} pt"


def fmt_paired(r: dict, permille: bool = False) -> str:
    """'Δ -5.0 pt [-9.1, -0.9] p=0.021 (Holm p=0.063 over 6 benchmarks)', 'Δ +0.0 pt [-8.3, +8.3]
    inconclusive (MDE 12.1 pt)', 'Δ +1.0 pt n=3 (n<5: no CI)'; with 'excl. K invalid (invalid a% vs
    b%, McNemar p=P)' when invalid items left the pairs and
    'on N common items' when one side lacks items the other has."""
    k, unit = (1.0, "‰") if permille else (100.0, " pt")
    s = f"Δ {r['diff'] * k:+.1f}{unit}"
    if r["n"] < MIN_N_CI:
        s += f" n={int(r['n'])} {FEW}"
    else:
        s += f" [{r['lo'] * k:+.1f}, {r['hi'] * k:+.1f}]"
        mde = f"{r['mde'] * k:.1f}{unit}" if math.isfinite(r["mde"]) else "∞: too few items differ"
        s += (f" inconclusive (MDE {mde})" if r["inconclusive"] else f" p={r['p']:.2g}")
        if r.get("holm_family") and not r["inconclusive"]:  # multiplicity: Holm p and the family adjusted over
            s += f" (Holm p={r['p_holm']:.2g} over {r['holm_family']})"
    if r["excluded"]:
        s += f" excl. {int(r['excluded'])} invalid"
    if present(r.get("p_invalid")) and (r.get("invalid_base") or r.get("invalid_cand")):
        s += (f" (invalid {r['invalid_base'] * 100:.1f}% vs {r['invalid_cand'] * 100:.1f}%, "
              f"McNemar p={r['p_invalid']:.2g})")
    if r.get("missing"):  # items one side lacks: the Δ covers only the common ones
        s += f" on {int(r['n'])} common items"
    return s


def _delta_cell(paired, variant: str, bench: str, unpaired, permille: bool, group=None) -> str:
    r = lookup(paired, variant, bench, group)
    if r is not None and r["n"]:
        return fmt_paired(r, permille)
    # No item files on one side: the bare difference of the two scores, said to be unpaired.
    return (fmt_delta(unpaired, permille) + " (unpaired: no samples)") if present(unpaired) else ""


def comparison_long(bench_df: pd.DataFrame, paired: pd.DataFrame | None = None,
                    baseline: str = "sft") -> pd.DataFrame:
    """Numeric comparison: one row per (variant, bench) with the paired Δ vs the baseline
    (delta, its CI, p, Holm-adjusted p, MDE, items paired and excluded as invalid)."""
    df = bench_df.copy()
    base = df[df.variant == baseline].set_index("bench")["score"]
    cols = {"delta": "diff", "delta_lo": "lo", "delta_hi": "hi", "p": "p", "p_holm": "p_holm",
            "holm_family": "holm_family", "test": "test", "mde": "mde", "n_paired": "n", "excluded_invalid": "excluded",
            "inconclusive": "inconclusive", "invalid_rate_baseline": "invalid_base",
            "invalid_rate_candidate": "invalid_cand", "p_invalid": "p_invalid"}
    out = {c: [] for c in cols}
    for r in df.itertuples():
        pr = lookup(paired, r.variant, r.bench) if r.variant != baseline else None
        for c, src in cols.items():
            out[c].append(pr[src] if pr is not None else None)
        if pr is None and r.variant != baseline and r.bench in base.index and not r.against_baseline:
            out["delta"][-1] = r.score - base[r.bench]  # unpaired fallback: no samples
    for c, vals in out.items():
        df[c] = vals
    df["vs"] = [None if v == baseline else baseline for v in df.variant]
    return df.drop(columns=["definition", "label", "against_baseline"])


def comparison_table(bench_df: pd.DataFrame, paired: pd.DataFrame | None = None, rows=VARIANTS,
                     labels: dict | None = None, baseline: str = "sft", exclude=(),
                     baseline_cell: str = "(baseline)") -> pd.DataFrame:
    """One row per entry of `rows` (labelled by `labels`), one column per benchmark; each cell score,
    95% CI, n and the paired Δ vs `baseline`. `exclude` drops benchmarks (columns). `baseline_cell`
    fills the baseline row's cell of a metric measured against a baseline model (the win ratio)."""
    labels = labels or VARIANT_LABELS
    idx = bench_df.set_index(["variant", "bench"])
    # How each column is shown: from the frame (what the eval recorded), else from its spec.
    meta = {r.bench: {"label": r.label, "unit": r.unit, "against_baseline": r.against_baseline}
            for r in bench_df.itertuples()}
    benches = [b for b in benchmark_order(meta) if b not in exclude]
    meta = {b: meta.get(b) or registry.info(b) for b in benches}
    base = bench_df[bench_df.variant == baseline].set_index("bench")["score"]
    unreliable_base = set(bench_df[(bench_df.variant == baseline) & bench_df.unreliable.notna()].bench)
    table = {}
    for v in rows:
        row = {}
        for b in benches:
            label = meta[b]["label"]
            if (v, b) not in idx.index:
                # The baseline against itself: a ratio against it is 50% by definition, not measured.
                row[label] = baseline_cell if (v == baseline and meta[b]["against_baseline"]) else DASH
                continue
            r = idx.loc[(v, b)]
            pm = meta[b]["unit"] == "‰"
            if isinstance(r.unreliable, str):
                # No rate: a figure from a classifier that fails its audit says nothing (the long CSV keeps it).
                row[label] = f"unreliable: {r.unreliable}"
                continue
            text = cell(r.score, r.lo, r.hi, r.n, permille=pm)
            if isinstance(getattr(r, "untrusted", None), str):  # hrlaif.reports.verdict_trust: e.g. self-graded
                text += f" [{r.untrusted}]"
            if present(r.invalid):
                inv = r.invalid
                text += f" invalid={int(inv) if float(inv).is_integer() else inv}"
            if meta[b]["against_baseline"] and present(r.wins):
                text += f" W/T/L {int(r.wins)}/{int(r.ties or 0)}/{int(r.losses or 0)}"
            elif v != baseline and not meta[b]["against_baseline"] and b not in unreliable_base:
                delta = _delta_cell(paired, v, b, r.score - base[b] if b in base.index else None, pm)
                text += (" " + delta) if delta else ""
            row[label] = text
        table[labels.get(v, v)] = row
    df = pd.DataFrame.from_dict(table, orient="index", columns=[meta[b]["label"] for b in benches])
    df.index.name = "Model"
    return df


def category_table(cat_df: pd.DataFrame, variants=VARIANTS, delta_vs: str | None = "sft",
                   paired: pd.DataFrame | None = None, bench: str | None = None,
                   labels: dict | None = None, permille: bool = False) -> pd.DataFrame:
    """Rows = categories, columns = variants ("score [lo, hi] n=.." plus the paired Δ vs `delta_vs`
    of `bench`'s items in that category)."""
    if cat_df.empty:
        return pd.DataFrame()
    labels = labels or VARIANT_LABELS
    cats = list(dict.fromkeys(cat_df.category))
    idx = cat_df.set_index(["variant", "category"])
    shown = [v for v in variants if v in set(cat_df.variant)]
    out = {}
    for c in cats:
        row = {}
        for v in shown:
            if (v, c) not in idx.index:
                row[labels.get(v, v)] = DASH
                continue
            r = idx.loc[(v, c)]
            text = cell(r.score, r.lo, r.hi, r.n, permille=permille)
            if delta_vs and v != delta_vs and (delta_vs, c) in idx.index:
                delta = _delta_cell(paired, v, bench, r.score - idx.loc[(delta_vs, c)].score, permille, group=c)
                text += (" " + delta) if delta else ""
            row[labels.get(v, v)] = text
        out[c] = row
    df = pd.DataFrame.from_dict(out, orient="index")
    df.index.name = "Category"
    return df


def pair_cell(r) -> str:
    """An accuracy over pairs: its CI is a bootstrap clustered by prompt when the file says so
    (n_clusters); otherwise the cell says its CI treats pairs as independent."""
    text = cell(r["score"], r["lo"], r["hi"], r["n"])
    if text == DASH:
        return text
    if present(r.get("n_clusters")):
        k = int(r["n_clusters"])
        return text + f" ({k} prompt{'s' if k != 1 else ''})"
    return text + " (CI not clustered)" if int(r["n"] or 0) >= MIN_N_CI else text


def paired_pair_cell(r: dict) -> str:
    """A paired difference of two accuracies on the same pairs, CI clustered by prompt."""
    s = f"Δ {r['score'] * 100:+.1f} pt"
    if int(r.get("n") or 0) < MIN_N_CI or not present(r.get("lo")):
        return s + f" n={int(r.get('n') or 0)} {FEW}"
    k = int(r["n_clusters"]) if present(r.get("n_clusters")) else None
    return s + f" [{r['lo'] * 100:+.1f}, {r['hi'] * 100:+.1f}] paired, n={int(r['n'])}" + (
        f" ({k} prompts)" if k else "")


AGREEMENT = "answer-check agreement"  # rows scored against the second answer check (trainers/feedback/accuracy.py)


def label_accuracy_table(label_df: pd.DataFrame) -> pd.DataFrame:
    """Rows = categories; columns basic, hybrid, and hybrid − basic (paired on the same truth pairs
    with a prompt-clustered CI; a file without it: the bare difference, said to be unpaired). Rows
    scored against the second answer check are 'answer-check agreement', not label accuracy."""
    if label_df.empty:
        return pd.DataFrame()
    idx = label_df.set_index(["category", "mode"])
    out = {}
    for c in dict.fromkeys(label_df.category):
        row = {}
        for mode in ("basic", "hybrid"):
            row[mode] = pair_cell(idx.loc[(c, mode)].to_dict()) if (c, mode) in idx.index else DASH
        if (c, "hybrid_minus_basic") in idx.index:
            row["hybrid − basic"] = paired_pair_cell(idx.loc[(c, "hybrid_minus_basic")].to_dict())
        elif (c, "basic") in idx.index and (c, "hybrid") in idx.index:
            row["hybrid − basic"] = fmt_delta(idx.loc[(c, "hybrid")].score - idx.loc[(c, "basic")].score) + \
                " (unpaired)"
        else:
            row["hybrid − basic"] = DASH
        truth = [t for t in label_df[label_df.category == c].truth if isinstance(t, str)]
        if truth or label_df.truth.notna().any():
            row["truth"] = truth[0] if truth else DASH
        if truth and truth[0].startswith("second answer check") and AGREEMENT not in c:
            c = f"{c} ({AGREEMENT})"  # a file written before the rows were named so
        out[c] = row
    df = pd.DataFrame.from_dict(out, orient="index")
    df.index.name = "Category"
    return df


def _verdict(check: dict | None) -> str:
    check = check or {}
    return f"{check.get('extracted')} -> {check.get('correct')}"


def disagreement_table(dis: dict | None) -> pd.DataFrame:
    """One row per listed response where the labeller's answer check and the second check disagree."""
    if not dis or not dis.get("items"):
        return pd.DataFrame()
    rows = {f"{it.get('id')} #{it.get('response')}": {
        "category": it.get("category"), "standard answer": it.get("std_answer"),
        "labeller check": _verdict(it.get("labeller")), "second check": _verdict(it.get("second")),
        "response (start)": str(it.get("text") or "")[:120]} for it in dis["items"]}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "Response"
    return df


def rm_table(rm_cat: pd.DataFrame, rm_summary: pd.DataFrame, paired: dict | None = None) -> pd.DataFrame:
    """Reward-model pairwise accuracy per category, plus held-out overall and the clipped share;
    `paired` (hrlaif.reports.table1.rm_paired): RM hybrid − RM basic on the shared held-out pairs."""
    if rm_cat.empty and rm_summary.empty:
        return pd.DataFrame()
    # Both RMs always get a column: a missing one is information for the basic-vs-hybrid comparison.
    modes = list(dict.fromkeys(list(RM_MODES) + list(rm_summary.rm) + list(rm_cat.rm)))
    idx = rm_cat.set_index(["rm", "category"])
    out = {}
    for c in dict.fromkeys(rm_cat.category):
        out[c] = {f"RM {m}": pair_cell(idx.loc[(m, c)].to_dict()) if (m, c) in idx.index else DASH for m in modes}
    summ = rm_summary.set_index("rm")
    out["(held-out, all)"] = {f"RM {m}": pair_cell(summ.loc[m].to_dict()) if m in summ.index else DASH
                              for m in modes}
    if summ.shared.notna().any():
        # One pair set with independent truth scored by both RMs: the comparable accuracy.
        out["(shared held-out pairs)"] = {f"RM {m}": pair_cell(summ.loc[m, "shared"])
                                          if m in summ.index and isinstance(summ.loc[m, "shared"], dict) else DASH
                                          for m in modes}
    out["(clipped share)"] = {
        f"RM {m}": (f"{summ.loc[m, 'clipped_share'] * 100:.2f}% at |r|>{summ.loc[m, 'clip']:g}"
                    if m in summ.index and present(summ.loc[m].clipped_share) else DASH) for m in modes}
    if paired:  # one pair set scored by both RMs: their paired difference
        out.setdefault("(shared held-out pairs)", {})["RM hybrid − RM basic"] = paired_pair_cell(paired)
    df = pd.DataFrame.from_dict(out, orient="index").fillna(DASH)
    df.index.name = "Category"
    return df


def to_markdown(df: pd.DataFrame) -> str:
    """GitHub-flavoured markdown table (pandas' own needs `tabulate`, which we do not ship)."""
    if df.empty:
        return "_no data_\n"
    esc = lambda x: str(x).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    head = [df.index.name or ""] + [esc(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in df.iterrows():
        lines.append("| " + " | ".join([esc(i)] + [esc(x) for x in row]) + " |")
    return "\n".join(lines) + "\n"
