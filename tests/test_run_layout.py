"""hrlaif/core/layout.py's RunLayout names every stage directory and artifact of a run dir (issue 20 item 3): its
paths, their agreement with the stage records, and a source scan that fails when a module outside hrlaif/core/
and the report writer spells a run-layout name itself."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from hrlaif.core.layout import MODES, RM_METRICS, VARIANTS, PPODir, RunLayout, eval_name, seed_suffix

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "judges", "trainers", "evalsets", "reports", "harness")
# Where the layout may be spelled: the floor (hrlaif/core/layout.py) and the report writer (its own output dir).
ALLOWED = {"core", "hrlaif/reports/build.py"}
STAGE_DIR = re.compile(r"^(eval|ppo|label|rm|export)_(sft|rlaif|hrlaif|basic|hybrid)(_s\d+)?(/.*)?$")
ARTIFACTS = {"drift.jsonl", "results.json", "heldout/pairs.jsonl", "manifest.json", "judge_usage.json",
             "run_summary.json", "label_accuracy.json", "rm_metrics.json", "report.html", "alarms.json"}
PREFIXES = ("eval_", "ppo_", "label_", "rm_", "export_")


def test_layout_paths(tmp_path):
    lay = RunLayout(tmp_path)
    assert lay.eval("sft").results == tmp_path / "eval_sft" / "results.json"
    assert lay.eval("hrlaif", "_s2").sample_file("mmlu") == tmp_path / "eval_hrlaif_s2" / "samples" / "mmlu.jsonl"
    assert lay.ppo("rlaif", "_s3").drift == tmp_path / "ppo_rlaif_s3" / "drift.jsonl"
    assert lay.label("hybrid").accuracy == tmp_path / "label_hybrid" / "label_accuracy.json"
    assert lay.rm("basic").metrics_candidates == (tmp_path / "rm_basic" / "rm_metrics.json",
                                                  tmp_path / "rm_basic" / "model" / "rm_metrics.json")
    assert lay.heldout.pairs == tmp_path / "heldout" / "pairs.jsonl"
    assert lay.judge_usage == tmp_path / "judge_usage.json" and lay.report.html == tmp_path / "report" / "report.html"
    assert VARIANTS == ("sft", "rlaif", "hrlaif") and MODES == {"rlaif": "basic", "hrlaif": "hybrid"}
    assert not lay.has_results() and lay.manifests() == []
    lay.eval("rlaif").dir.mkdir()
    lay.eval("rlaif").results.write_text("{}")
    lay.sft.dir.mkdir()
    lay.sft.manifest.write_text("{}")
    assert lay.has_results() and lay.manifests() == [tmp_path / "sft" / "manifest.json"]


def test_seed_dirs_and_a_writers_own_dir(tmp_path):
    """A training seed's stages are found from the dir names; a writer that knows only its out dir names
    its files through that dir's class or a constant, so both spell the same path."""
    lay = RunLayout(tmp_path)
    for name in (eval_name("rlaif", seed_suffix(10)), eval_name("rlaif", seed_suffix(2)), "eval_rlaif_sx",
                 eval_name("hrlaif", seed_suffix(3)), eval_name("rlaif")):
        (tmp_path / name).mkdir()
    assert [(s, d.dir.name) for s, d in lay.seed_evals("rlaif")] == [(2, "eval_rlaif_s2"), (10, "eval_rlaif_s10")]
    assert PPODir(lay.ppo("rlaif").dir).drift == lay.ppo("rlaif").drift
    assert lay.ppo("hrlaif", "_s2").checkpoints == tmp_path / "ppo_hrlaif_s2" / "checkpoints"
    assert lay.rm("hybrid").model / RM_METRICS == lay.rm("hybrid").metrics_candidates[1]


def test_layout_names_the_stage_records_dirs():
    from hrlaif.harness.stages import STAGES
    names = set(STAGES)
    lay = RunLayout(Path("RUN"))
    for d in (lay.sft, lay.sample, lay.heldout, lay.eval("sft"), lay.report, *(lay.eval(v) for v in MODES),
              *(lay.ppo(v) for v in MODES), *(lay.label(m) for m in MODES.values()),
              *(lay.rm(m) for m in MODES.values())):
        assert d.dir.name in names, d.dir.name


def _layout_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
            if STAGE_DIR.match(n.value) or n.value in ARTIFACTS:
                found.append(f"{n.lineno}: {n.value!r}")
        elif isinstance(n, ast.JoinedStr) and n.values and isinstance(n.values[0], ast.Constant):
            if str(n.values[0].value) in PREFIXES:  # f"eval_{v}", f"ppo_{variant}{s}"
                found.append(f"{n.lineno}: f{n.values[0].value!r}...")
    return found


def test_no_module_outside_core_spells_a_run_path():
    offenders = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / "hrlaif" / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.split("/")[1] in ALLOWED or rel in ALLOWED:
                continue
            hits = _layout_literals(path)
            if hits:
                offenders[rel] = hits
    assert not offenders, (f"run-layout literals outside hrlaif/core/layout.py: use RunLayout, a stage dir's class "
                           f"(PPODir(out).drift) or a file name constant (layout.RM_METRICS): {offenders}")


def test_the_scan_catches_a_spelt_path(tmp_path):
    p = tmp_path / "m.py"
    p.write_text('"""eval_sft/results.json in a docstring is fine."""\n'
                 'def f(run, v):\n    return run / f"eval_{v}" / "results.json", run / "ppo_rlaif"\n')
    assert sorted(h.split(": ", 1)[1] for h in _layout_literals(p)) == ["'ppo_rlaif'", "'results.json'", "f'eval_'..."]
