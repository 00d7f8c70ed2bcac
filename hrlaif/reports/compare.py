"""`build_compare(dirs, out)`: any number of evaluation dirs side by side, each paired with the first.

Writes OUT/comparison.md, comparison.html (self-contained), comparison.csv (display cells),
comparison_long.csv (numbers: paired Δ vs the first entry, CI, p, Holm p, MDE), breakdown.csv
(per category) and bars_<bench>.png (one bar chart per benchmark with 95% CI whiskers). The
tables are the run report's (hrlaif.reports.tables), with the first entry as the baseline row.
Entries must have evaluated the same items of every benchmark they share with the first one.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pandas as pd

from hrlaif.core.errors import UserError
from hrlaif.core.store import write_text
from hrlaif.evalsets import registry
from hrlaif.reports import tables
from hrlaif.reports.build import STAT_DEFINITIONS, benchmark_definitions, describe_model
from hrlaif.reports.collect import (
    benchmark_frame,
    benchmark_order,
    breakdown_frame,
    check_documents,
    read_items,
    read_results,
)
from hrlaif.reports.human import human_blocks
from hrlaif.reports.paired import comparable, paired_frame
from hrlaif.reports.plots import save_bar_chart
from hrlaif.reports.render import write_pages
from hrlaif.reports.verdict_trust import cell_marks, untrusted


def entry_labels(dirs: list[Path], names: list[str] | None = None) -> list[str]:
    """A short unique label per entry: the dir name, else parent/name, else name #i."""
    labels = list(names) if names else [Path(d).name or str(d) for d in dirs]
    if len(set(labels)) < len(labels) and not names:
        labels = [f"{Path(d).parent.name}/{Path(d).name}" for d in dirs]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} #{seen[lab]}")
    return out


def check_items(results: dict[str, dict], dirs: dict[str, Path], labels: dict[str, str]) -> None:
    """Every entry evaluated the same items as the first on each benchmark both have, else a one-line
    UserError naming the benchmark and the difference (a paired Δ needs the same items)."""
    keys = list(results)
    first = keys[0]
    for bench in comparable(results[first]):
        base = read_items(dirs[first], bench, required=True)
        for k in keys[1:]:
            if bench not in comparable(results[k]):
                continue
            other = read_items(dirs[k], bench, required=True)
            extra, lacks = len(set(other) - set(base)), len(set(base) - set(other))
            if extra or lacks:
                raise UserError(
                    f"{bench}: {labels[k]} evaluated different items than {labels[first]} ({lacks} of its "
                    f"{len(base)} missing, {extra} extra); compare needs the same items (same --limit, data and "
                    "benchmark version)")
            check_documents(bench, base, other, labels[first], labels[k])


def _bars(out: Path, bench_df: pd.DataFrame, keys: list[str], labels: dict[str, str]) -> dict[str, Path]:
    plots = {}
    for bench in benchmark_order(set(bench_df.bench)):
        sub = bench_df[bench_df.bench == bench].set_index("variant")
        if sub.empty:
            continue
        shown = [k for k in keys if k in sub.index]
        r = sub.loc[shown]
        plots[bench] = save_bar_chart(out / f"bars_{bench}.png", r.label.iloc[0], [labels[k] for k in shown],
                                      list(r.score), list(r.lo), list(r.hi), r.unit.iloc[0])
    return plots


def build_compare(dirs: list[Path | str], out: Path | str, names: list[str] | None = None) -> Path:
    """Compare evaluation dirs (the first is the baseline); returns OUT."""
    if len(dirs) < 2:
        raise UserError("compare needs at least two evaluation dirs (or checkpoints)")
    out = Path(out)
    keys = [f"e{i}" for i in range(len(dirs))]
    labels = dict(zip(keys, entry_labels([Path(d) for d in dirs], names)))
    paths = dict(zip(keys, (Path(d) for d in dirs)))
    results = {k: read_results(paths[k]) for k in keys}
    check_items(results, paths, labels)
    bench_df = benchmark_frame(results)
    marks = {k: cell_marks(untrusted(paths[k])) for k in keys}  # e.g. self-graded (hrlaif/reports/verdict_trust.py)
    bench_df["untrusted"] = [marks[v].get(b) for v, b in zip(bench_df.variant, bench_df.bench)]
    with_breakdown = [b for b in set(bench_df.bench) if any(
        (results[k]["benchmarks"].get(b) or {}).get("breakdown") for k in keys)]
    paired = paired_frame(results, paths, baseline=keys[0], groups=with_breakdown)
    out.mkdir(parents=True, exist_ok=True)
    plots = _bars(out, bench_df, keys, labels)

    # Only the benchmarks some entry evaluated; a win ratio's own baseline model need not be the first
    # entry, so its cell there is a dash.
    absent = [b for b in benchmark_order(set(bench_df.bench)) if b not in set(bench_df.bench)]
    table = tables.comparison_table(bench_df, paired, rows=keys, labels=labels, baseline=keys[0], exclude=absent,
                                    baseline_cell="—")
    write_text(out / "comparison.csv", table.to_csv())
    long = tables.comparison_long(bench_df, paired, baseline=keys[0])
    long.insert(0, "model", [labels[k] for k in long.variant])
    long["vs"] = [labels.get(v) if isinstance(v, str) else None for v in long.vs]
    write_text(out / "comparison_long.csv", long.drop(columns=["variant"]).to_csv(index=False))

    title = "Comparison: " + " vs ".join(labels.values())
    b: list[tuple] = [("h1", title),
                      ("note", f"Generated {_dt.datetime.now().isoformat(timespec='seconds')}; every Δ is paired "
                               f"with the first entry, {labels[keys[0]]}, on the same items."),
                      ("ul", [f"{labels[k]}: {describe_model(results[k])}, {paths[k]}" for k in keys]),
                      ("h2", "Comparison"), ("table", table, "comparison"),
                      *human_blocks(results, paired, labels, keys[0]),
                      ("h2", "Per benchmark")]
    breakdowns = []
    for bench, png in plots.items():
        info = registry.info(bench, next((results[k]["benchmarks"][bench] for k in keys
                                          if bench in results[k]["benchmarks"]), {}))
        b += [("h3", info["label"]), ("img", png, f"{bench} by model")]
        cats = breakdown_frame(results, bench)
        if not cats.empty:
            breakdowns.append(cats.assign(model=[labels[k] for k in cats.variant], bench=bench))
            t = tables.category_table(cats, variants=keys, delta_vs=keys[0], paired=paired, bench=bench,
                                      labels=labels, permille=info["unit"] == "‰")
            b.append(("table", t, f"breakdown_{bench}"))
    if breakdowns:
        write_text(out / "breakdown.csv", pd.concat(breakdowns).drop(columns=["variant"]).to_csv(index=False))
    b += [("h2", "Definitions"), ("ul", STAT_DEFINITIONS + benchmark_definitions(bench_df))]
    write_pages(out, "comparison", title, b)
    return out

