"""Evaluation and reports, beyond tests/test_layers.py's rules (which cover them too: layers, no
import cycle, no private names, <= 400 lines), read from the source with its import walker.

hrlaif/reports/ uses only the benchmark registry of evaluation; the gate and the pipeline use public names
of evaluation; and no code names a benchmark: adding one is a spec and its data.
"""
from __future__ import annotations

import ast

from test_layers import IMPORTS, MODS

CHECKED = {m for m in MODS if m.split(".")[1] in ("evalsets", "reports")}


def test_reports_use_only_the_registry_of_evaluation():
    bad = sorted(f"{m} imports {t}" for m in CHECKED if m.startswith("hrlaif.reports")
                 for t, _ in IMPORTS[m] if t.startswith("hrlaif.evalsets") and t != "hrlaif.evalsets.registry")
    assert not bad, bad


def test_the_gate_and_pipeline_use_public_names_of_evaluation():
    bad = sorted(f"{m} imports {t}.{n}" for m in ("hrlaif.harness.gate", "hrlaif.harness.pipeline")
                 for t, n in IMPORTS[m] if n.startswith("_"))
    assert not bad, bad


# Where code may still spell a benchmark's name, and why.
NAMED_ON_PURPOSE = {
    "hrlaif.evalsets.humaneval": {"humaneval"},            # HumanEval's own execution code and file layout
    "hrlaif.evalsets.scoring": {"win_ratio"},              # the name of a statistic a spec can aggregate with
    "hrlaif.evalsets.satisfaction": {"win_ratio"},         # the statistic of the HRLAIF-vs-RLAIF head-to-head entry
    "hrlaif.reports.alarms": {"satisfaction", "win_ratio"},   # the paper's RLAIF failure rule
    "hrlaif.reports.collect": {"satisfaction", "win_ratio"},  # the paper's per-category sections
}


def test_no_code_names_a_benchmark():
    """Benchmarks are data: the registry, runner, kinds, loaders, reports and gate dispatch on spec
    fields, never on a benchmark's name (a string constant equal to one)."""
    names = {"ceval", "mmlu", "gsm8k", "humaneval", "toxigen", "satisfaction", "win_ratio"}
    bad = []
    for m in sorted(CHECKED | {"hrlaif.harness.gate"}):
        for node in ast.walk(ast.parse(MODS[m].read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names - NAMED_ON_PURPOSE.get(m, set()):
                bad.append(f"{m}:{node.lineno}: {node.value!r}")
    assert not bad, bad


def test_the_walker_sees_the_kinds():
    assert ("hrlaif.evalsets.kinds.judge", "") in IMPORTS["hrlaif.evalsets.kinds"]
    assert ("hrlaif.evalsets.registry", "") in IMPORTS["hrlaif.reports.collect"] or \
        any(t == "hrlaif.evalsets.registry" for t, _ in IMPORTS["hrlaif.reports.collect"])
