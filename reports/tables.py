"""Display tables: the tidy frames of reports.collect rendered as "score [lo, hi] n=.. Δ.." cells.

Scores on a 0-1 scale are shown in percent with CI bounds in percent and deltas in
percentage points (pt); metrics whose spec unit is ‰ (ToxiGen) in ‰. Column names and order
come from the benchmark specs (evalsets.registry). A missing value is "—", never an error.
"""
from __future__ import annotations

import pandas as pd

from core.console import DASH, fmt_score, present
from evalsets import registry
from reports.collect import RM_MODES, VARIANT_LABELS, VARIANTS, benchmark_order


def fmt_delta(delta, permille: bool = False) -> str:
    if not present(delta):
        return ""
    return f"Δ {delta:+.1f}‰" if permille else f"Δ {delta * 100:+.1f} pt"


def comparison_long(bench_df: pd.DataFrame) -> pd.DataFrame:
    """Numeric comparison: one row per (variant, bench) with delta vs SFT (machine-readable)."""
    df = bench_df.copy()
    sft = df[df.variant == "sft"].set_index("bench")["score"]
    # A metric measured against a baseline (the win ratio vs SFT) has no delta vs SFT.
    df["delta_vs_sft"] = [
        (r.score - sft[r.bench]) if (r.variant != "sft" and r.bench in sft.index and not r.against_baseline)
        else float("nan") for r in df.itertuples()]
    return df.drop(columns=["definition", "label", "against_baseline"])


def comparison_table(bench_df: pd.DataFrame) -> pd.DataFrame:
    """Rows SFT, RLAIF, HRLAIF; one column per benchmark; each cell score, 95% CI, n and Δ vs SFT."""
    long = comparison_long(bench_df).set_index(["variant", "bench"])
    # How each column is shown: from the frame (what the eval recorded), else from its spec.
    meta = {r.bench: {"label": r.label, "unit": r.unit, "against_baseline": r.against_baseline}
            for r in bench_df.itertuples()}
    benches = benchmark_order(meta)
    meta = {b: meta.get(b) or registry.info(b) for b in benches}
    table = {}
    for v in VARIANTS:
        row = {}
        for b in benches:
            label = meta[b]["label"]
            if (v, b) not in long.index:
                # SFT against itself: a ratio against SFT is 50% by definition, not measured.
                row[label] = "(baseline)" if (v == "sft" and meta[b]["against_baseline"]) else DASH
                continue
            r = long.loc[(v, b)]
            pm = meta[b]["unit"] == "‰"
            cell = fmt_score(r.score, r.lo, r.hi, r.n, permille=pm)
            if meta[b]["against_baseline"] and present(r.wins):
                cell += f" W/T/L {int(r.wins)}/{int(r.ties or 0)}/{int(r.losses or 0)}"
            elif present(r.delta_vs_sft):
                cell += " " + fmt_delta(r.delta_vs_sft, permille=pm)
            if present(r.invalid):
                inv = r.invalid
                cell += f" invalid={int(inv) if float(inv).is_integer() else inv}"
            row[label] = cell
        table[VARIANT_LABELS[v]] = row
    df = pd.DataFrame.from_dict(table, orient="index")
    df.index.name = "Model"
    return df


def category_table(cat_df: pd.DataFrame, variants=VARIANTS, delta_vs: str | None = "sft") -> pd.DataFrame:
    """Rows = categories, columns = variants ("score [lo, hi] n=.." plus Δ vs `delta_vs`)."""
    if cat_df.empty:
        return pd.DataFrame()
    cats = list(dict.fromkeys(cat_df.category))
    idx = cat_df.set_index(["variant", "category"])
    shown = [v for v in variants if v in set(cat_df.variant)]
    out = {}
    for c in cats:
        row = {}
        for v in shown:
            if (v, c) not in idx.index:
                row[VARIANT_LABELS[v]] = DASH
                continue
            r = idx.loc[(v, c)]
            cell = fmt_score(r.score, r.lo, r.hi, r.n)
            if delta_vs and v != delta_vs and (delta_vs, c) in idx.index:
                cell += " " + fmt_delta(r.score - idx.loc[(delta_vs, c)].score)
            row[VARIANT_LABELS[v]] = cell
        out[c] = row
    df = pd.DataFrame.from_dict(out, orient="index")
    df.index.name = "Category"
    return df


def label_accuracy_table(label_df: pd.DataFrame) -> pd.DataFrame:
    """Rows = categories; columns basic, hybrid, and hybrid − basic."""
    if label_df.empty:
        return pd.DataFrame()
    idx = label_df.set_index(["category", "mode"])
    out = {}
    for c in dict.fromkeys(label_df.category):
        row = {}
        for mode in ("basic", "hybrid"):
            row[mode] = fmt_score(*idx.loc[(c, mode)][["score", "lo", "hi", "n"]]) if (c, mode) in idx.index else DASH
        if (c, "basic") in idx.index and (c, "hybrid") in idx.index:
            row["hybrid − basic"] = fmt_delta(idx.loc[(c, "hybrid")].score - idx.loc[(c, "basic")].score)
        else:
            row["hybrid − basic"] = DASH
        out[c] = row
    df = pd.DataFrame.from_dict(out, orient="index")
    df.index.name = "Category"
    return df


def rm_table(rm_cat: pd.DataFrame, rm_summary: pd.DataFrame) -> pd.DataFrame:
    """Reward-model pairwise accuracy per category, plus held-out overall and the clipped share."""
    if rm_cat.empty and rm_summary.empty:
        return pd.DataFrame()
    # Both RMs always get a column: a missing one is information for the basic-vs-hybrid comparison.
    modes = list(dict.fromkeys(list(RM_MODES) + list(rm_summary.rm) + list(rm_cat.rm)))
    idx = rm_cat.set_index(["rm", "category"])
    out = {}
    for c in dict.fromkeys(rm_cat.category):
        out[c] = {f"RM {m}": fmt_score(*idx.loc[(m, c)][["score", "lo", "hi", "n"]])
                  if (m, c) in idx.index else DASH for m in modes}
    summ = rm_summary.set_index("rm")
    out["(held-out, all)"] = {f"RM {m}": fmt_score(*summ.loc[m][["score", "lo", "hi", "n"]])
                              if m in summ.index else DASH for m in modes}
    out["(clipped share)"] = {
        f"RM {m}": (f"{summ.loc[m, 'clipped_share'] * 100:.2f}% at |r|>{summ.loc[m, 'clip']:g}"
                    if m in summ.index and present(summ.loc[m].clipped_share) else DASH) for m in modes}
    df = pd.DataFrame.from_dict(out, orient="index")
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
