"""report.html, the `hrlaif compare` page and the runs index render in headless Chromium: tables
present, embedded plots decode, small-n cells greyed and folded, links resolve.

The browser is Debian's `chromium` (the `chromium` fixture in conftest.py installs it when missing
and the suite runs as root; .ci/run installs it too). The test drives the browser binary directly.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from synthetic_run import rare_category, write_synthetic_run

from hrlaif.reports.build import build_report
from hrlaif.reports.compare import build_compare
from hrlaif.reports.index import build_index

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000"]

# Injected into a copy of a page (the pages ship no script): on load, write what the page actually
# rendered into the DOM, which --dump-dom then prints.
PROBE = """<script>
window.addEventListener("load", function () {
  var map = Array.prototype.map, out = {tables: {}};
  document.querySelectorAll("table").forEach(function (t) {
    out.tables[t.id] = {
      rows: map.call(t.tBodies[0].rows, function (r) { return r.cells[0].textContent; }),
      head: map.call(t.tHead.rows[0].cells, function (c) { return c.textContent; }),
      folded: !!t.closest("details")
    };
  });
  out.imgs = map.call(document.images, function (i) { return i.complete ? i.naturalWidth : -1; });
  out.alarms = document.querySelectorAll(".alarm").length;
  out.warn = map.call(document.querySelectorAll(".warn"), function (w) { return w.textContent; });
  out.few = map.call(document.querySelectorAll("td.few"), function (c) { return getComputedStyle(c).color; });
  out.details = map.call(document.querySelectorAll("details"), function (d) {
    return {open: d.open, summary: d.querySelector("summary").textContent}; });
  out.links = map.call(document.links, function (a) { return a.getAttribute("href"); });
  var d = document.createElement("pre"); d.id = "probe"; d.textContent = JSON.stringify(out);
  document.body.appendChild(d);
});
</script></body>"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return rare_category(write_synthetic_run(tmp_path_factory.mktemp("runs") / "run"))


@pytest.fixture(scope="module")
def report(run) -> Path:
    return build_report(run) / "report.html"


def _chromium(browser: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def _probe(browser: str, page: Path, tmp_path: Path) -> dict:
    # next to the original, so that relative links resolve as they would for the real page
    probe = page.with_name(page.stem + "_probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE))
    res = _chromium(browser, tmp_path, "--dump-dom", probe.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout)
    assert m, f"no probe output; stderr tail: {res.stderr[-500:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&amp;", "&"))


def test_html_is_self_contained(report):
    html = report.read_text()
    srcs = re.findall(r'src="([^"]*)"', html)
    # drift and gold-vs-proxy plots of both PPO runs
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert '<table' in html and 'id="comparison"' in html and "Definitions" in html


def test_html_renders_tables_and_plots_in_chromium(report, tmp_path, chromium):
    probe = _probe(chromium, report, tmp_path)
    t = probe["tables"]
    assert t["comparison"]["rows"] == ["SFT", "RLAIF", "HRLAIF"]
    assert t["comparison"]["head"][1:] == ["C-Eval", "MMLU", "GSM8K", "HumanEval pass@1", "ToxiGen toxicity ‰",
                                           "Satisfaction rate", "Win ratio vs SFT"]
    vs = t["hrlaif_vs_rlaif"]
    assert vs["rows"] == ["RLAIF", "HRLAIF"] and vs["head"][-1] == "Win ratio vs RLAIF"
    assert t["alarm_power"]["rows"][0].startswith("Over-optimisation · RLAIF")
    assert t["gold_proxy_rlaif"]["rows"][0] == "step 0"
    assert probe["alarms"] == 1  # self-graded (the quickstart's default judge): no RLAIF-failure alarm
    assert len(probe["warn"]) == 1 and probe["warn"][0].startswith("Self-grading")
    assert len(probe["imgs"]) == 4 and all(w > 500 for w in probe["imgs"]), probe["imgs"]


def test_small_n_cells_are_greyed_and_folded(report, tmp_path, chromium):
    probe = _probe(chromium, report, tmp_path)
    sat = probe["tables"]["satisfaction_by_category"]
    assert "rare" not in sat["rows"] and "math" in sat["rows"] and not sat["folded"]
    folded = probe["tables"]["satisfaction_by_category_few"]
    assert folded["rows"] == ["rare"] and folded["folded"]
    assert any("fewer than 5 items" in d["summary"] and "rare" in d["summary"] and not d["open"]
               for d in probe["details"])
    assert len(probe["few"]) >= 3 and set(probe["few"]) == {"rgb(153, 153, 153)"}  # greyed


def test_html_screenshot_is_not_blank(report, tmp_path, chromium):
    import matplotlib.image as mpimg

    shot = tmp_path / "shot.png"
    res = _chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,1800", report.as_uri())
    assert shot.exists(), res.stderr[-500:]
    img = mpimg.imread(shot)
    assert img.shape[1] == 1280 and img[..., :3].std() > 0.05  # text, tables and plots, not a white page


def test_compare_html_in_chromium(run, tmp_path, chromium):
    out = build_compare([run / "eval_sft", run / "eval_rlaif", run / "eval_hrlaif"], tmp_path / "cmp")
    html = (out / "comparison.html").read_text()
    assert "<script" not in html and all(s.startswith("data:image/png") for s in re.findall(r'src="([^"]*)"', html))
    probe = _probe(chromium, out / "comparison.html", tmp_path)
    assert probe["tables"]["comparison"]["rows"] == ["eval_sft", "eval_rlaif", "eval_hrlaif"]
    assert probe["tables"]["breakdown_satisfaction"]["head"] == ["Category", "eval_sft", "eval_rlaif", "eval_hrlaif"]
    # one bar chart per benchmark present: six benchmarks, the win ratio vs SFT and eval_hrlaif's head-to-head
    assert len(probe["imgs"]) == 8 and all(w > 300 for w in probe["imgs"])
    assert probe["tables"]["breakdown_satisfaction_few"]["rows"] == ["rare"]


def test_index_page_links_resolve_in_chromium(run, report, tmp_path, chromium):
    out = build_index(run.parent)
    probe = _probe(chromium, out / "index.html", tmp_path)
    assert probe["tables"]["runs"]["rows"] == ["run"]
    assert probe["links"] == ["run/report/report.html"]
    assert (out / probe["links"][0]).resolve() == report.resolve()
