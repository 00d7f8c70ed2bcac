"""The floor of the package tree stays a floor (docs/ARCHITECTURE.md layers), read from the source.

hrlaif/core/ imports nothing of ours; hrlaif/judges/ imports core only; hrlaif/trainers/ never imports evaluation,
reports or the harness (drift evaluation is passed in); hrlaif/evalsets/ imports core and judges; hrlaif/reports/
imports core and evalsets. No import cycle among these modules,
lazy imports included; no module imports another's underscore names; none is over 400 lines.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = ("core", "judges", "trainers", "evalsets", "reports", "harness")
ALLOWED = {"core": {"core"}, "judges": {"core", "judges"},
           "trainers": {"core", "judges", "trainers"},
           "evalsets": {"core", "judges", "evalsets"},
           "reports": {"core", "evalsets", "reports"}}  # of evalsets, only the registry (test_layers_evalsets.py)


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in OURS:
        for f in (ROOT / "hrlaif" / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[tuple[str, str]]]:
    """module -> {(imported module, imported name or '')}, every import statement anywhere in the file."""
    def owner(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    out = {}
    for m, f in mods.items():
        found = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), str(f))):
            if isinstance(node, ast.Import):
                found |= {(owner(a.name), "") for a in node.names if owner(a.name)}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    if sub in mods:
                        found.add((sub, ""))
                    elif owner(node.module):
                        found.add((owner(node.module), a.name))
        out[m] = {(t, n) for t, n in found if t != m}
    return out


MODS = _modules()
IMPORTS = _imports(MODS)
CHECKED = {m for m in MODS if m.split(".")[1] in ALLOWED}


def test_lower_layers_import_only_what_is_below_them():
    bad = sorted(f"{m} imports {t}" for m in CHECKED for t, _ in IMPORTS[m]
                 if t.split(".")[1] not in ALLOWED[m.split(".")[1]])
    assert not bad, bad


def test_no_import_cycle():
    graph = {m: {t for t, _ in IMPORTS[m] if t in CHECKED} for m in CHECKED}
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(m, path):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_no_module_imports_another_modules_private_names():
    bad = sorted(f"{m} imports {t}.{n}" for m in CHECKED for t, n in IMPORTS[m] if n.startswith("_"))
    assert not bad, bad


def test_no_module_is_over_400_lines():
    sizes = {m: len(MODS[m].read_text(encoding="utf-8").splitlines()) for m in CHECKED}
    assert not {m: n for m, n in sizes.items() if n > 400}


def test_the_checks_see_real_imports():
    # guards the walker itself: a lazy import inside a function counts, and so does `from pkg import mod`
    assert ("hrlaif.trainers.checkpointing", "") in IMPORTS["hrlaif.trainers.ppo"]
    assert any(t == "hrlaif.core.models" for t, _ in IMPORTS["hrlaif.trainers.sft"])  # imported inside train_sft
    assert IMPORTS["hrlaif.core.errors"] == set()
