"""`hrlaif gate --summary/--junit`: the verdict as CI systems show it (step summary, JUnit XML), and
the example CI configs in docs/ci/ (YAML that parses, the steps, flags hrlaif accepts)."""
from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from synthetic_run import RATES, degrade_eval_dir, make_samples, write_eval_dir

ROOT = Path(__file__).resolve().parents[1]
XSD = Path(__file__).parent / "data" / "junit.xsd"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    benches = ("mmlu", "gsm8k", "ceval", "toxigen")
    samples = {b: make_samples(b, RATES["sft"][b], rng) for b in benches}
    root = tmp_path_factory.mktemp("gate_ci")
    base = write_eval_dir(root / "base", samples, "sft")
    return base, degrade_eval_dir(base, root / "cand", benches=("gsm8k", "mmlu"), fraction=0.5)


def test_summary_and_junit(dirs, tmp_path, run_cli, monkeypatch):
    """A failing gate writes the Markdown summary (also appended to $GITHUB_STEP_SUMMARY) and JUnit
    XML that validates against the Jenkins/Ant schema, one case per benchmark, FAILs with their reason."""
    import xmlschema

    base, cand = dirs
    gh = tmp_path / "step_summary.md"
    gh.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(gh))
    code, out, err = run_cli("gate", "--baseline", base, "--candidate", cand, "--out", tmp_path / "g",
                             "--margin", "default=10", "--summary", tmp_path / "s.md", "--junit", tmp_path / "j.xml")
    assert code == 1, err
    g = json.loads((tmp_path / "g" / "gate.json").read_text())
    verdicts = {b: r["verdict"] for b, r in g["benchmarks"].items()}
    assert verdicts == {"mmlu": "fail", "gsm8k": "fail", "ceval": "pass", "toxigen": "pass"}

    md = (tmp_path / "s.md").read_text()
    assert md.startswith("## hrlaif gate: FAIL")
    assert gh.read_text() == "earlier step\n" + md + "\n"  # appended, not overwritten
    for b, r in g["benchmarks"].items():
        row = next(line for line in md.splitlines() if line.startswith(f"| {b}"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == str(r["n"]) and cells[2] == f"{r['baseline'] * 100:.1f}"
        assert cells[4] == f"{r['diff'] * 100:+.1f}"
        assert cells[5] == f"[{r['ci'][0] * 100:+.1f}, {r['ci'][1] * 100:+.1f}] @{r['ci_level'] * 100:.1f}%"
        assert cells[6] == "10" and cells[8].endswith("FAIL**" if r["verdict"] == "fail" else "pass")
        if r["verdict"] == "fail":
            assert f"- **{b}**: {r['reason']}" in md

    xmlschema.XMLSchema(str(XSD)).validate(str(tmp_path / "j.xml"))  # raises on any violation
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite.get("tests") == "4" and suite.get("failures") == "2"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == set(verdicts)
    for b, c in cases.items():
        f = c.find("failure")
        if verdicts[b] == "fail":
            assert f is not None and f.get("message") == g["benchmarks"][b]["reason"]
        else:
            assert f is None


def test_passing_gate_without_github(dirs, tmp_path, run_cli, monkeypatch):
    base, _ = dirs
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    code, _, err = run_cli("gate", "--baseline", base, "--candidate", base, "--out", tmp_path,
                           "--margin", "default=10", "--junit", tmp_path / "j.xml")
    assert code == 0, err
    root = ET.parse(tmp_path / "j.xml").getroot()
    assert root.get("failures") == "0" and not root.findall(".//failure")
    assert len(root.findall(".//testcase")) == 4
    assert not (tmp_path / "s.md").exists()


def _hrlaif_argv(cmd: str, env: dict) -> list[str]:
    for k, v in env.items():
        cmd = cmd.replace(f'"${k}"', v).replace(f"${k}", v)
    argv = shlex.split(cmd)
    assert argv[0] == "hrlaif"
    return argv[1:]


def _check_commands(commands: list[str], env: dict) -> None:
    """The configs' hrlaif commands parse with hrlaif's own argument parser; pip uses the constraints."""
    from hrlaif.harness.cli import parse_args

    names = [c.split()[1] for c in commands if c.startswith("hrlaif")]
    assert names == ["eval", "gate"]
    for c in commands:
        if c.startswith("hrlaif"):
            _, args = parse_args(_hrlaif_argv(c, env))
            if args.command == "gate":
                assert args.summary and args.junit and str(args.candidate) == "gate/candidate_eval"
            else:
                assert args.out == "gate/candidate_eval"
    assert any(c.startswith("pip install -c constraints-cpu.txt") for c in commands)
    assert (ROOT / "constraints-cpu.txt").is_file()


def test_github_workflow():
    wf = yaml.safe_load((ROOT / "docs" / "ci" / "github-actions.yml").read_text())
    steps = wf["jobs"]["gate"]["steps"]
    assert [s["name"] for s in steps] == ["Checkout", "Set up Python", "Install", "Evaluate the candidate",
                                          "Gate", "Upload the verdict", "Test report"]
    assert steps[-1]["with"]["report_paths"] == "gate/junit.xml" and steps[-1]["if"] == "always()"
    assert steps[-2]["with"]["path"] == "gate/"
    env = {k: v for k, v in wf["env"].items()} | {"CANDIDATE": "models/candidate"}
    _check_commands([" ".join(s["run"].split()) for s in steps if "run" in s], env)


def test_gitlab_job():
    job = yaml.safe_load((ROOT / "docs" / "ci" / "gitlab-ci.yml").read_text())["model-gate"]
    assert job["artifacts"]["reports"]["junit"] == "gate/junit.xml" and job["artifacts"]["when"] == "always"
    _check_commands([" ".join(c.split()) for c in job["script"]], job["variables"])
