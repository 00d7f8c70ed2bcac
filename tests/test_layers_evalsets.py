"""Evaluation and reports, beyond tests/test_layers.py's rules (which cover them too: layers, no
import cycle, no private names, <= 400 lines), read from the source with its import walker.

reports/ uses only the benchmark registry of evaluation; the gate and the pipeline use public names
of evaluation; and no code names a benchmark: adding one is a spec and its data.
"""
from __future__ import annotations

import ast

from test_layers import IMPORTS, MODS

CHECKED = {m for m in MODS if m.split(".")[0] in ("evalsets", "reports")}


def test_reports_use_only_the_registry_of_evaluation():
    bad = sorted(f"{m} imports {t}" for m in CHECKED if m.startswith("reports")
                 for t, _ in IMPORTS[m] if t.startswith("evalsets") and t != "evalsets.registry")
    assert not bad, bad


def test_the_gate_and_pipeline_use_public_names_of_evaluation():
    bad = sorted(f"{m} imports {t}.{n}" for m in ("harness.gate", "harness.pipeline")
                 for t, n in IMPORTS[m] if n.startswith("_"))
    assert not bad, bad


# Where code may still spell a benchmark's name, and why.
NAMED_ON_PURPOSE = {
    "evalsets.humaneval": {"humaneval"},            # HumanEval's own execution code and file layout
    "evalsets.scoring": {"win_ratio"},              # the name of a statistic a spec can aggregate with
    "evalsets.satisfaction": {"win_ratio"},         # the statistic of the HRLAIF-vs-RLAIF head-to-head entry
    "reports.alarms": {"satisfaction", "win_ratio"},   # the paper's RLAIF failure rule
    "reports.collect": {"satisfaction", "win_ratio"},  # the paper's per-category sections
}


def test_no_code_names_a_benchmark():
    """Benchmarks are data: the registry, runner, kinds, loaders, reports and gate dispatch on spec
    fields, never on a benchmark's name (a string constant equal to one)."""
    names = {"ceval", "mmlu", "gsm8k", "humaneval", "toxigen", "satisfaction", "win_ratio"}
    bad = []
    for m in sorted(CHECKED | {"harness.gate"}):
        for node in ast.walk(ast.parse(MODS[m].read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names - NAMED_ON_PURPOSE.get(m, set()):
                bad.append(f"{m}:{node.lineno}: {node.value!r}")
    assert not bad, bad


def test_the_walker_sees_the_kinds():
    assert ("evalsets.kinds.judge", "") in IMPORTS["evalsets.kinds"]
    assert ("evalsets.registry", "") in IMPORTS["reports.collect"] or \
        any(t == "evalsets.registry" for t, _ in IMPORTS["reports.collect"])
