"""Benchmark registry: every benchmark is one YAML spec, and the registry is a listing of spec dirs.

Spec dirs, searched in this order: hrlaif/evalsets/specs (shipped), each entry of $HRLAIF_SPEC_PATH
(os.pathsep-separated), then the evaluation's own `spec_dirs` (EvalConfig). A spec says
everything about its benchmark: where its data lives and how to read it, which runner kind
scores it, its prompt (an official lm-eval task or a template), its metric, title, direction,
display unit and place in tables. Nothing else in the code names a benchmark.

Every spec field is declared and documented in hrlaif/evalsets/spec.py (`BenchmarkSpec`, its sections
and `DerivedSpec`); a spec is read strictly, so a misspelt key or kind is a one-line error naming
the file and suggesting the nearest valid one.
"""
from __future__ import annotations

import dataclasses
import os
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import yaml

from hrlaif.core.errors import UserError
from hrlaif.core.settings import UnknownKeyError, fields_of, from_mapping
from hrlaif.evalsets.spec import SECTIONS, BenchmarkSpec, DerivedSpec

SPEC_DIR = Path(__file__).parent / "specs"
ENV = "HRLAIF_SPEC_PATH"
# Fields that only change how a benchmark is shown, not its outputs (left out of cache keys).
DISPLAY_ONLY = ("title", "label", "order", "default", "definition", "derived", "path")


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


def _read_spec(path: Path) -> BenchmarkSpec:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"benchmark spec {path} is not UTF-8 text")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"benchmark spec {path} is not valid YAML" + (f" (line {mark.line + 1})" if mark else ""))
    if not isinstance(data, dict):
        raise UserError(f"benchmark spec {path} must be a mapping of fields")
    if data.get("name", path.stem) != path.stem:
        raise UserError(f"benchmark spec {path}: name {data['name']!r} must equal the file name {path.stem!r}")
    if "path" in data:
        raise UserError(f"benchmark spec {path}: unknown key 'path' (the registry sets it: the spec file)")
    try:
        return from_mapping(BenchmarkSpec, {**data, "name": path.stem, "path": str(path)})
    except UnknownKeyError as e:
        raise UserError(f"benchmark spec {path}: {_unknown(e)}") from None
    except UserError as e:
        raise UserError(f"benchmark spec {path}: {e}") from None


def _unknown(e: UnknownKeyError) -> str:
    """An unknown spec key: the nearest valid one, or the kind section it belongs in."""
    section = next((k for k, cls in SECTIONS.items() if "." not in e.where
                    and e.key in {f.name for f in fields_of(cls)}), None)
    if section:
        return f"unknown key {e.where!r} (a field of the {section}: section, for kind {section})"
    if e.nearest:
        return f"unknown key {e.where!r} (did you mean {e.nearest!r}?)"
    return f"unknown key {e.where!r} (allowed: {', '.join(e.allowed)})"


def _derive(parent: BenchmarkSpec, name: str, d: DerivedSpec) -> DerivedSpec:
    """A derived metric with what it takes from its benchmark (kind, unit, breakdown, file)."""
    for k, v in (("name", name), ("parent", parent.name), ("kind", parent.kind), ("unit", parent.unit),
                 ("group_by", parent.group_by), ("path", parent.path)):
        object.__setattr__(d, k, v)
    return d


@lru_cache(maxsize=16)
def _load(signature: tuple) -> tuple[dict[str, BenchmarkSpec], dict[str, DerivedSpec]]:
    """({benchmark: spec} in table order, {derived metric: spec}) for one listing of spec files."""
    found: dict[str, BenchmarkSpec] = {}
    for file, _ in signature:
        sp = _read_spec(Path(file))
        if sp.name in found:
            raise UserError(f"benchmark {sp.name!r} is defined twice: {found[sp.name].path} and {file}")
        found[sp.name] = sp
    inf = float("inf")
    ordered = dict(sorted(found.items(), key=lambda kv: (inf if kv[1].order is None else kv[1].order, kv[0])))
    derived: dict[str, DerivedSpec] = {}
    for sp in ordered.values():
        for name, d in sp.derived.items():
            if name in ordered or name in derived:
                raise UserError(f"derived metric {name!r} of {sp.path} clashes with another benchmark")
            derived[name] = _derive(sp, name, d)
    return ordered, derived


def _registry(extra: Iterable[str | Path] = ()) -> tuple[dict, dict]:
    return _load(_signature(spec_dirs(extra)))


def specs(extra: Iterable[str | Path] = ()) -> dict[str, BenchmarkSpec]:
    """Every benchmark spec, in table order."""
    return _registry(extra)[0]


def names(extra: Iterable[str | Path] = ()) -> list[str]:
    return list(specs(extra))


def defaults(extra: Iterable[str | Path] = ()) -> list[str]:
    """The benchmarks `hrlaif eval` runs when none are named (specs with `default: true`)."""
    return [n for n, sp in specs(extra).items() if sp.default]


def spec(name: str, extra: Iterable[str | Path] = ()) -> BenchmarkSpec:
    found = specs(extra)
    if name not in found:
        raise UserError(f"unknown benchmark {name!r} (known: {', '.join(found)})")
    return found[name]


def metric(name: str, extra: Iterable[str | Path] = ()) -> BenchmarkSpec | DerivedSpec:
    """The spec of a benchmark or of a derived metric (which carries its parent's kind and unit)."""
    found, derived = _registry(extra)
    if name in derived:
        return derived[name]
    return spec(name, extra)


def table_order(extra: Iterable[str | Path] = ()) -> list[str]:
    """Benchmarks in spec order, each followed by its derived metrics: the columns of reports."""
    out = []
    for name, sp in specs(extra).items():
        out += [name, *sp.derived]
    return out


def info(name: str, entry: dict | None = None) -> dict:
    """How to show and compare one results.json entry: {title, label, unit, higher_is_better,
    against_baseline}. The registered spec decides display; the entry's own fields cover a
    benchmark registered elsewhere (its results.json carries title, unit and direction)."""
    entry = entry or {}
    found, derived = _registry()
    sp = derived.get(name) or found.get(name)
    if sp is None:  # registered elsewhere: its results.json entry says how to show it
        title = entry.get("title") or name
        return {"title": title, "label": entry.get("label") or title, "unit": entry.get("unit") or "%",
                "higher_is_better": bool(entry.get("higher_is_better", True)),
                "against_baseline": bool(entry.get("against_baseline", False))}
    return {"title": sp.title, "label": sp.label or sp.title, "unit": sp.unit,
            "higher_is_better": bool(entry.get("higher_is_better", sp.higher_is_better)),
            "against_baseline": sp.against_baseline}


def cache_fields(sp: BenchmarkSpec) -> dict:
    """The spec without what only changes display: the part that belongs in a cache key."""
    return {k: v for k, v in dataclasses.asdict(sp).items() if k not in DISPLAY_ONLY}


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
