"""The gate's verdict in the forms CI systems show: a Markdown step summary (GitHub Actions'
`$GITHUB_STEP_SUMMARY`, a GitLab/Jenkins artifact) and JUnit XML (one test case per benchmark, a
failed one carrying the reason), both from the gate.json dict of `hrlaif.harness.gate.compare`.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from hrlaif.core.errors import UserError
from hrlaif.core.store import write_text

# Set by GitHub Actions in every step: Markdown appended to it is shown on the run's summary page.
GITHUB_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def _pt(v: float, sign: bool = False) -> str:
    return f"{v * 100:{'+' if sign else ''}.1f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report: dict) -> str:
    """The gate table (scores, paired Δ, its CI at level 1 − alpha (no Holm: all must pass), margin, p) and the
    reason for each FAIL."""
    verdict = "PASS" if report["passed"] else "FAIL"
    lines = [f"## hrlaif gate: {verdict}", "",
             f"Baseline `{report['baseline']}`, candidate `{report['candidate']}`; α = {report['alpha']:g}. "
             "Scores, Δ and margins in points (0-100).", "",
             "| benchmark | n | baseline | candidate | Δ | CI of Δ | margin | p (Holm) | verdict |",
             "|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for b, r in report["benchmarks"].items():
        name = b + ("" if r["higher_is_better"] else " (lower better)")
        ci = f"[{_pt(r['ci'][0], True)}, {_pt(r['ci'][1], True)}] @{r['ci_level'] * 100:.1f}%"
        v = "✅ pass" if r["verdict"] == "pass" else "❌ **FAIL**"
        lines.append(f"| {_cell(name)} | {r['n']} | {_pt(r['baseline'])} | {_pt(r['candidate'])} | "
                     f"{_pt(r['diff'], True)} | {ci} | {r['margin'] * 100:g} | {r['p_holm']:.3g} | {v} |")
    fails = [(b, r) for b, r in report["benchmarks"].items() if r["verdict"] == "fail"]
    if fails:
        lines += ["", "**Why it failed**", ""] + [f"- **{_cell(b)}**: {_cell(r['reason'])}" for b, r in fails]
    skipped = report.get("not_evaluable") or {}
    if skipped:
        lines += ["", "**Not gated**", ""] + [f"- {_cell(b)}: {_cell(why)}" for b, why in skipped.items()]
    warns = [(b, r["warning"]) for b, r in report["benchmarks"].items() if r.get("warning")]
    if warns:
        lines += ["", "Warnings:", ""] + [f"- {_cell(b)}: {_cell(w)}" for b, w in warns]
    lines += ["", "A benchmark passes when the CI's bound on the worse side of Δ = candidate − baseline clears "
                  "−margin; p tests Δ = 0 (Holm-adjusted). The method is in gate.json (`method`).", ""]
    return "\n".join(lines)


def junit_xml(report: dict, suite: str = "hrlaif gate") -> str:
    """JUnit XML: a <testsuite> with one <testcase> per benchmark; a failed benchmark has a <failure>
    whose message is the gate's reason (the Ant/Jenkins layout GitLab, Jenkins and most readers take)."""
    benches, skipped = report["benchmarks"], report.get("not_evaluable") or {}
    failed, total = sum(r["verdict"] == "fail" for r in benches.values()), str(len(benches) + len(skipped))
    root = ET.Element("testsuites", name=suite, tests=total, failures=str(failed), errors="0")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=total, failures=str(failed),
                       errors="0", skipped=str(len(skipped)), time="0")
    props = ET.SubElement(ts, "properties")
    for k in ("baseline", "candidate", "alpha", "verdict"):
        ET.SubElement(props, "property", name=k, value=str(report[k]))
    for b, r in benches.items():
        tc = ET.SubElement(ts, "testcase", name=b, classname="hrlaif.gate", time="0")
        detail = (f"n={r['n']} baseline={_pt(r['baseline'])} candidate={_pt(r['candidate'])} "
                  f"diff={_pt(r['diff'], True)} pt, {r['ci_level'] * 100:.1f}% CI "
                  f"[{_pt(r['ci'][0], True)}, {_pt(r['ci'][1], True)}], margin {r['margin'] * 100:g} pt, "
                  f"p_holm={r['p_holm']:.3g}")
        if r["verdict"] == "fail":
            f = ET.SubElement(tc, "failure", message=r["reason"] or "not non-inferior", type="NotNonInferior")
            f.text = detail
        ET.SubElement(tc, "system-out").text = detail + (f"\nwarning: {r['warning']}" if r.get("warning") else "")
    for b, why in skipped.items():  # benchmarks the gate could not evaluate (e.g. a degenerate judge)
        ET.SubElement(ET.SubElement(ts, "testcase", name=b, classname="hrlaif.gate", time="0"), "skipped",
                      message=str(why))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_ci_outputs(report: dict, summary: Path | None = None, junit: Path | None = None,
                     env: dict | None = None) -> list[Path]:
    """Write the summary and JUnit files asked for; under GitHub Actions also append the summary to
    $GITHUB_STEP_SUMMARY. Returns the paths written."""
    env = os.environ if env is None else env
    written = []
    md = markdown(report)
    if summary is not None:
        write_text(Path(summary), md)
        written.append(Path(summary))
    gh = env.get(GITHUB_SUMMARY_ENV)
    if gh and (summary is None or Path(gh).resolve() != Path(summary).resolve()):
        try:
            with open(gh, "a", encoding="utf-8") as fh:
                fh.write(md + "\n")
        except OSError as e:
            raise UserError(f"cannot append to ${GITHUB_SUMMARY_ENV} ({gh}): {e.strerror}")
        written.append(Path(gh))
    if junit is not None:
        write_text(Path(junit), junit_xml(report))
        written.append(Path(junit))
    return written
