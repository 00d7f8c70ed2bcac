"""Benchmark registry: every benchmark is a declarative YAML spec in evalsets/specs/.

A spec names the official lm-eval task it reuses, where its data lives (local layout,
hub id, embedded copy), its prompt settings and its metric. Code exists only for
what data cannot express (file formats, sandboxed execution, toxicity classification).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from core.errors import UserError

SPEC_DIR = Path(__file__).parent / "specs"
DATA_DIR = Path(__file__).parent / "data"
# Order used in tables and the default `hrlaif eval` run.
ALL = ["ceval", "mmlu", "gsm8k", "humaneval", "toxigen", "satisfaction"]
DEFAULT = ["ceval", "mmlu", "gsm8k", "humaneval", "toxigen"]


@lru_cache(maxsize=None)
def spec(name: str) -> dict:
    path = SPEC_DIR / f"{name}.yaml"
    if not path.exists():
        raise UserError(f"unknown benchmark {name!r} (known: {', '.join(ALL)})")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def parse_benchmarks(text: str | list[str] | None) -> list[str]:
    if not text:
        return list(DEFAULT)
    names = text if isinstance(text, list) else [t.strip() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return list(ALL)
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise UserError(f"unknown benchmark {unknown[0]!r} (known: {', '.join(ALL)})")
    if not names:
        raise UserError("no benchmark given")
    return list(dict.fromkeys(names))
