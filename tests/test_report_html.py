"""report.html renders in headless Chromium: tables present, embedded plots decode.

The browser is Debian's `chromium` (the `chromium` fixture in conftest.py installs it when missing
and the suite runs as root; .ci/run installs it too). The test drives the browser binary directly.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from reports.build import build_report
from synthetic_run import write_synthetic_run

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000"]

# Injected into a copy of the report (the report itself ships no script): on load, write what the
# page actually rendered into the DOM, which --dump-dom then prints.
PROBE = """<script>
window.addEventListener("load", function () {
  var t = document.getElementById("comparison");
  var out = {
    tables: document.querySelectorAll("table").length,
    imgs: Array.prototype.map.call(document.images, function (i) { return i.complete ? i.naturalWidth : -1; }),
    rows: t ? Array.prototype.map.call(t.tBodies[0].rows, function (r) { return r.cells[0].textContent; }) : [],
    head: t ? Array.prototype.map.call(t.tHead.rows[0].cells, function (c) { return c.textContent; }) : [],
    alarms: document.querySelectorAll(".alarm").length
  };
  var d = document.createElement("pre"); d.id = "probe"; d.textContent = JSON.stringify(out);
  document.body.appendChild(d);
});
</script></body>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return build_report(write_synthetic_run(tmp_path_factory.mktemp("run") / "run")) / "report.html"


def test_html_is_self_contained(report):
    html = report.read_text()
    srcs = re.findall(r'src="([^"]*)"', html)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert '<table' in html and 'id="comparison"' in html and "Definitions" in html


def _chromium(browser: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_html_renders_tables_and_plots_in_chromium(report, tmp_path, chromium):
    page = tmp_path / "probe.html"
    page.write_text(report.read_text().replace("</body>", PROBE))
    res = _chromium(chromium, tmp_path, "--dump-dom", page.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout)
    assert m, f"no probe output; stderr tail: {res.stderr[-500:]}"
    probe = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["rows"] == ["SFT", "RLAIF", "HRLAIF"]
    assert probe["head"][1:] == ["C-Eval", "MMLU", "GSM8K", "HumanEval pass@1", "ToxiGen toxicity ‰",
                                 "Satisfaction rate", "Win ratio vs SFT"]
    assert probe["tables"] >= 5 and probe["alarms"] == 2
    assert len(probe["imgs"]) == 2 and all(w > 500 for w in probe["imgs"]), probe["imgs"]


def test_html_screenshot_is_not_blank(report, tmp_path, chromium):
    import matplotlib.image as mpimg

    shot = tmp_path / "shot.png"
    res = _chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,1800", report.as_uri())
    assert shot.exists(), res.stderr[-500:]
    img = mpimg.imread(shot)
    assert img.shape[1] == 1280 and img[..., :3].std() > 0.05  # text, tables and plots, not a white page
