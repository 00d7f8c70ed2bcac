"""lm-eval output directories (0.4.x, `--output_path OUT --log_samples`) read as evaluation dirs.

lm-eval writes OUT/<model name>/results_<time>.json and samples_<task>_<time>.jsonl (OUT itself when
it was given as a file path). `read_results` here gives the results.json dict of an `hrlaif eval`
dir, `read_items` its per-item scores, so compare, gate and the paired tables take either.

- The run: the newest results_<time>.json of OUT or of its one subfolder that has any, and the
  samples files of that same <time>. Several model subfolders are an error naming them.
- Tasks map to benchmarks through the registry's specs: a spec's `lm_eval_task` (`mmlu_{subject}`:
  the subject is the item's group) or `lm_eval_task_chat`, and the harness's own task names
  (`hrlaif_<benchmark>_<group>`, hrlaif.evalsets.lmeval_tasks). Other tasks keep their own name.
- Per-item scores: the spec's metric and `primary_filter` when the task has them, else the first
  metric of the task in results_<time>.json (its `metric,filter` key) and that filter's rows. Tasks
  without a per-item number (e.g. a corpus-level BLEU) are left out with a warning.
- Items: id `<group>/<doc_id>` (`<doc_id>` without a group), or the document's own `doc_id` when it
  carries one (documents from the harness's loaders, which `hrlaif eval` names the same way), and
  lm-eval's `doc_hash` of the document, which pairing compares (hrlaif.reports.collect.check_documents).
- Scores and CIs are recomputed from the items (hrlaif.core.stats.mean_ci), so they carry n and a 95% CI
  like every other entry; lm-eval's own aggregate is kept as `lm_eval_score`.
"""
from __future__ import annotations

import functools
import logging
import math
import re
from pathlib import Path

from hrlaif.core import stats
from hrlaif.core.errors import UserError
from hrlaif.core.layout import EvalDir
from hrlaif.core.store import read_json, read_jsonl
from hrlaif.evalsets import registry

log = logging.getLogger(__name__)
RESULTS_GLOB = "results_*.json"


def run_dir(path: Path | str) -> Path | None:
    """The folder of an lm-eval output that holds results_*.json: PATH or its one subfolder with
    any; None when PATH is not an lm-eval output (e.g. an `hrlaif eval` dir)."""
    path = Path(path)
    if not path.is_dir() or EvalDir(path).results.exists():
        return None
    if any(path.glob(RESULTS_GLOB)):
        return path
    subs = sorted(d for d in path.iterdir() if d.is_dir() and any(d.glob(RESULTS_GLOB)))
    if len(subs) > 1:
        raise UserError(f"{path} holds lm-eval outputs of several models ({', '.join(d.name for d in subs)}); "
                        "pass one of these folders")
    return subs[0] if subs else None


def is_lmeval_dir(path: Path | str) -> bool:
    return run_dir(path) is not None


def _field(sp, name: str):
    """A spec field, whether the registry gives mappings or spec objects."""
    return sp.get(name) if isinstance(sp, dict) else getattr(sp, name, None)


def _primary_filter(sp) -> str | None:
    return _field(sp, "primary_filter") or _field(_field(sp, "generate_extract") or {}, "primary_filter")


def _task_patterns() -> list[tuple[re.Pattern, str, dict]]:
    pats = []
    for name, sp in registry.specs().items():
        for key in ("lm_eval_task", "lm_eval_task_chat"):
            if _field(sp, key):
                pre, has_subject, post = _field(sp, key).partition("{subject}")
                rx = re.escape(pre) + ("(?P<group>.+)" if has_subject else "") + re.escape(post)
                pats.append((re.compile(rx + "$"), name, sp))
        pats.append((re.compile(re.escape(f"hrlaif_{name}_") + "(?P<group>.+)$"), name, sp))
    return pats


def task_benchmark(task: str) -> tuple[str, str | None, dict]:
    """(benchmark, group or None, spec or {}) of an lm-eval task name."""
    for rx, name, sp in _task_patterns():
        m = rx.match(task)
        if m:
            return name, m.groupdict().get("group"), sp
    return task, None, {}


def _metric_key(task: str, res: dict, sp: dict, rows: list[dict]) -> tuple[str, str | None]:
    """(metric, filter) of a task: the spec's when it names one the task reports, else the first."""
    keys = [k for k in res if "," in k and not k.split(",")[0].endswith("_stderr")]
    if _field(sp, "metric"):
        want = [k for k in keys if k.split(",")[0] == _field(sp, "metric")]
        pref = [k for k in want if k.split(",", 1)[1] == _primary_filter(sp)]
        if pref or want:
            return tuple((pref or want)[0].split(",", 1))
    if keys:
        return tuple(keys[0].split(",", 1))
    first = next(iter(rows), {})  # a task the results file does not list: what its samples name
    if not first.get("metrics"):
        raise UserError(f"lm-eval task {task}: neither the results nor the samples name a metric")
    return first["metrics"][0], first.get("filter")


def _score(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None if v is None else float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    raise ValueError(v)


def _task_items(path: Path, rows: list[dict], metric: str, group: str | None) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for i, r in enumerate(rows, 1):
        if "doc_id" not in r:
            raise UserError(f"{path}:{i} lacks 'doc_id' (not an lm-eval samples file)")
        doc = r.get("doc") if isinstance(r.get("doc"), dict) else {}
        own = "doc_id" in doc and "group" in doc  # a document from the harness's loaders
        key = str(doc["doc_id"]) if own else (f"{group}/{r['doc_id']}" if group else str(r["doc_id"]))
        if key in out:
            raise UserError(f"{path}: duplicate item {key!r} (doc_id {r['doc_id']}); items cannot be paired")
        out[key] = {"score": _score(r.get(metric)), "doc_hash": r.get("doc_hash"),
                    "group": str(doc["group"]) if own else group}
    return out


@functools.lru_cache(maxsize=16)
def _load(folder: str, stamp: float) -> tuple[dict, dict]:
    folder_p = Path(folder)
    res_file = sorted(folder_p.glob(RESULTS_GLOB))[-1]  # <time> is ISO: the last name is the newest
    date_id = res_file.stem[len("results_"):]
    data = read_json(res_file)
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise UserError(f"{res_file} has no 'results' object (not an lm-eval results file)")
    samples = {p.name[len("samples_"): -len(f"_{date_id}.jsonl")]: p
               for p in folder_p.glob(f"samples_*_{date_id}.jsonl")}
    if not samples:
        raise UserError(f"{folder_p} has no samples_<task>_{date_id}.jsonl: run lm-eval with --log_samples "
                        "(paired comparisons pair items)")
    benches: dict[str, dict] = {}
    items: dict[str, dict] = {}
    for task, path in sorted(samples.items()):
        res = data["results"].get(task) or {}
        bench, group, sp = task_benchmark(task)
        rows = read_jsonl(path)
        metric, filt = _metric_key(task, res, sp, rows)
        rows = [r for r in rows if filt is None or r.get("filter", filt) == filt]
        try:
            got = _task_items(path, rows, metric, group)
        except ValueError as bad:
            log.warning("%s: %s has no per-item number (%r); task left out", path, metric, bad.args[0])
            continue
        bucket = items.setdefault(bench, {})
        dup = next((k for k in got if k in bucket), None)
        if dup is not None:
            raise UserError(f"{path}: item {dup!r} also in another task of {bench}; items cannot be paired")
        bucket.update(got)
        hib = (data.get("higher_is_better") or {}).get(task, {}).get(metric)
        e = benches.setdefault(bench, {"tasks": [], "metric": metric, "filter": filt, "lm_eval_score": {},
                                       "higher_is_better": _field(sp, "higher_is_better") if sp else
                                       (True if hib is None else hib)})
        e["tasks"].append(task)
        if isinstance(res.get(f"{metric},{filt}"), (int, float)):
            e["lm_eval_score"][task] = res[f"{metric},{filt}"]
    results = {b: _entry(b, e, items[b], res_file) for b, e in benches.items() if items.get(b)}
    if not results:
        raise UserError(f"{folder_p}: no lm-eval task has per-item scores to compare")
    cfg = data.get("config") or {}
    out = {"benchmarks": results, "created": date_id,
           "model": {"name": data.get("model_name") or cfg.get("model_args") or cfg.get("model"),
                     "source": f"lm-eval {data.get('lm_eval_version') or ''}".strip()},
           "config": {"limit": cfg.get("limit"), "lm_eval": str(res_file)}}
    return out, {b: items[b] for b in results}


def _entry(bench: str, e: dict, items: dict, res_file: Path) -> dict:
    vals = [v["score"] for v in items.values() if v["score"] is not None]
    by: dict[str, list[float]] = {}
    for v in items.values():
        if v["score"] is not None and v["group"] is not None:
            by.setdefault(v["group"], []).append(v["score"])
    filt = f" (filter {e['filter']})" if e["filter"] not in (None, "none") else ""
    return {"title": registry.info(bench)["title"], "metric": e["metric"], "higher_is_better": e["higher_is_better"],
            **stats.mean_ci(vals), "breakdown": {g: stats.mean_ci(v) for g, v in sorted(by.items())} if len(by) > 1
            else {}, "metrics": {}, "extra": {"invalid": len(items) - len(vals)} if len(items) > len(vals) else {},
            "lm_eval_score": e["lm_eval_score"], "source": f"lm-eval {res_file}",
            "definition": f"lm-eval `{e['metric']}`{filt} per item, from samples_<task>_*.jsonl of "
                          f"{', '.join(e['tasks'])}; mean with a 95% CI over the items"}


def _cached(path: Path | str) -> tuple[dict, dict]:
    folder = run_dir(path)
    if folder is None:
        raise UserError(f"{path} is not an lm-eval output dir (no results_*.json)")
    stamp = max(p.stat().st_mtime for p in folder.iterdir())
    return _load(str(folder.resolve()), stamp)


def read_results(path: Path | str) -> dict:
    """The results.json dict of an lm-eval output dir (every benchmark with per-item scores)."""
    return _cached(path)[0]


def read_items(path: Path | str, bench: str) -> dict[str, dict] | None:
    """{item id: {"score", "group", "doc_hash"}} of one benchmark, None when the run lacks it."""
    return _cached(path)[1].get(bench)
