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
                  "RLAIF-failure alarm", "gate PASS though 1 pt worse"):
        assert title in printed
    assert re.search(r"\| drop 40% of correct items \(Δ ≈ -1[78]\.\d pt\) \| ", printed)  # 40% of ~45%
    rates = json.loads(out.read_text())
    for name in ("gate: significant drop (alpha 0.05)", "over-optimisation alarm (alpha 0.01)",
                 "RLAIF-failure alarm (alpha 0.05)"):
        rows = rates[name]
        planted = next(v for k, v in rows.items() if k.startswith("drop 40%"))
        assert planted["n=400"] == 1.0  # an ~18-point drop on 400 items
        assert rows["null: identical outputs"] == {"n=12": 0.0, "n=400": 0.0}
    assert rates["gate FAIL (margin 1 pt)"]["null: identical outputs"] == {"n=12": 0.0, "n=400": 0.0}
    assert set(rates["gate PASS though 1 pt worse (its error; <= 0.05)"]) == {"n=12", "n=400"}


def test_real_outputs_from_an_eval_dir(bench, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tests"))
    from synthetic_run import make_samples, write_eval_dir
    import numpy as np

    d = write_eval_dir(tmp_path / "ev", {"mmlu": make_samples("mmlu", 0.3, np.random.default_rng(0), n=200)})
    assert bench["main"](["--eval-dir", str(d), "--trials", "4", "--null-trials", "4", "--sizes", "50",
                          "--drops", "20"]) == 0
    assert f"real per-item outputs: {d}/samples/mmlu.jsonl (200 items, acc 0.300)" in capsys.readouterr().out
