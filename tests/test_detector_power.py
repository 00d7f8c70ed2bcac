"""bench/detector_power.py runs the real detectors on planted effects and prints its tables (tiny sizes)."""
from __future__ import annotations

import json
import re
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return runpy.run_path(str(ROOT / "bench" / "detector_power.py"), run_name="detector_power")


def test_tables_detect_large_effects_and_stay_quiet_on_identical_outputs(bench, tmp_path, capsys):
    out = tmp_path / "rates.json"
    assert bench["main"](["--trials", "12", "--null-trials", "12", "--sizes", "12,400", "--drops", "40",
                          "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for title in ("gate FAIL (margin 1 pt)", "gate: significant drop", "over-optimisation alarm",
                  "RLAIF-failure alarm", "The gate's verdict: errors and power", "false PASS: candidate truly worse",
                  "PASS power, truly equal: identical outputs", "PASS power, truly equal: two seeds"):
        assert title in printed
    assert re.search(r"\| drop 40% of correct items \(Δ ≈ -1[78]\.\d pt\) \| ", printed)  # 40% of ~45%
    rates = json.loads(out.read_text())
    for name in ("gate: significant drop (alpha 0.05)", "over-optimisation alarm (alpha 0.01)",
                 "RLAIF-failure alarm (alpha 0.05)"):
        rows = rates[name]
        planted = next(v for k, v in rows.items() if k.startswith("drop 40%"))
        assert planted["n=400"] == 1.0  # an ~18-point drop on 400 items
        assert rows["null: identical outputs"] == {"n=12": 0.0, "n=400": 0.0}
    # identical outputs: 12 items cannot show a 1-point margin (24 points at most), 400 can (>= 381 needed)
    assert rates["gate FAIL (margin 1 pt)"]["null: identical outputs"] == {"n=12": 1.0, "n=400": 0.0}
    verdict = rates["gate verdict"]
    assert verdict["PASS power, truly equal: identical outputs"] == {"n=12": 0.0, "n=400": 1.0}
    assert verdict["smallest margin identical outputs pass (pt)"] == pytest.approx(
        {"n=12": 100 * 1.959964 ** 2 / (12 + 1.959964 ** 2), "n=400": 100 * 1.959964 ** 2 / (400 + 1.959964 ** 2)})
    false_pass = verdict["false PASS: candidate truly worse by the margin (must be <= alpha)"]
    assert false_pass["n=12"] == 0.0 and set(false_pass) == {"n=12", "n=400"}


def test_gate_only_prints_the_false_pass_rate_against_alpha(bench, capsys):
    assert bench["main"](["--gate-only", "--null-trials", "20", "--sizes", "20,500", "--margin", "2"]) == 0
    printed = capsys.readouterr().out
    assert "over-optimisation alarm" not in printed and "margin 2 pt, alpha 0.05" in printed
    assert re.search(r"false PASS at the margin: at most 0\.\d{3} over n = 20, 500 \(<= alpha 0\.05\)", printed)


def test_real_outputs_from_an_eval_dir(bench, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    from synthetic_run import make_samples, write_eval_dir

    d = write_eval_dir(tmp_path / "ev", {"mmlu": make_samples("mmlu", 0.3, np.random.default_rng(0), n=200)})
    assert bench["main"](["--eval-dir", str(d), "--trials", "4", "--null-trials", "4", "--sizes", "50",
                          "--drops", "20"]) == 0
    assert f"real per-item outputs: {d}/samples/mmlu.jsonl (200 items, acc 0.300)" in capsys.readouterr().out
