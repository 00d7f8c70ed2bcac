"""`build_index(runs_dir)`: one page (index.html + index.md) listing the runs under a directory,
with their headline numbers and links to their reports."""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import pandas as pd

from hrlaif.core.console import DASH
from hrlaif.core.errors import UserError
from hrlaif.core.layout import VARIANTS, RunLayout
from hrlaif.core.store import read_json
from hrlaif.evalsets import registry
from hrlaif.reports import tables
from hrlaif.reports.collect import SATISFACTION, VARIANT_LABELS, WIN_RATIO, load_results
from hrlaif.reports.render import write_pages

HEADLINE = (SATISFACTION, WIN_RATIO)


def find_runs(runs_dir: Path) -> list[Path]:
    """Run directories directly under runs_dir (or runs_dir itself): any dir holding an eval_<variant>/
    results.json or a stage manifest. Newest first."""
    cands = [runs_dir] + sorted(p for p in runs_dir.iterdir() if p.is_dir())
    runs = [p for p in cands if RunLayout(p).has_results() or RunLayout(p).manifests()]
    return sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)


def _stages(run: Path) -> str:
    done = total = 0
    for m in RunLayout(run).manifests():
        total += 1
        try:
            done += (read_json(m) or {}).get("status") == "done"
        except UserError:
            pass  # a torn manifest of a killed stage: counted, not done
    return f"{done}/{total} done" if total else DASH


def _alarms(run: Path) -> str:
    p = RunLayout(run).report.alarms
    if not p.exists():
        return "no report"
    data = read_json(p) or {}
    n = data.get("n_alarms", 0)
    return "none" if not n else f"{n}: " + ", ".join(sorted({f"{a.get('type')} ({a.get('variant')})"
                                                             for a in data.get("alarms", [])}))


def _headline(results: dict, v: str, bench: str) -> str:
    e = ((results.get(v) or {}).get("benchmarks") or {}).get(bench)
    if not e:
        return DASH
    lo, hi = (e.get("ci95") or [None, None])[:2]
    return tables.cell(e.get("score"), lo, hi, e.get("n"))


def build_index(runs_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"runs directory not found: {runs_dir}")
    out = Path(out_dir) if out_dir else runs_dir
    out.mkdir(parents=True, exist_ok=True)
    rows, links = {}, {}
    for run in find_runs(runs_dir):
        name = run.name if run != runs_dir else "."
        results = load_results(run)
        row = {"updated": _dt.datetime.fromtimestamp(run.stat().st_mtime).isoformat(timespec="minutes"),
               "stages": _stages(run)}
        for bench in HEADLINE:
            for v in VARIANTS:
                if v == "sft" and registry.info(bench)["against_baseline"]:  # SFT is the win ratio's baseline
                    continue
                row[f"{registry.info(bench)['label']} ({VARIANT_LABELS[v]})"] = _headline(results, v, bench)
        row["alarms"] = _alarms(run)
        page = RunLayout(run).report.html
        row["report"] = "report" if page.exists() else "not built (hrlaif report RUN)"
        if page.exists():
            links[(name, "report")] = os.path.relpath(page, out)
        rows[name] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "Run"
    title = f"HRLAIF runs in {runs_dir.resolve()}"
    blocks = [("h1", title),
              ("note", f"Generated {_dt.datetime.now().isoformat(timespec='seconds')}: {len(rows)} run(s), newest "
                       "first. Headline numbers from each run's eval_<variant>/results.json; alarms from its "
                       "report/alarms.json."),
              ("table", df, "runs", links)]
    if not rows:
        blocks.append(("note", "No run directory here (a run has eval_<variant>/results.json or stage manifests)."))
    write_pages(out, "index", title, blocks)
    return out
