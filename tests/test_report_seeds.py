"""The run report's training-seeds section on synthetic runs (tests/synthetic_run.py): per-seed
cells, the seeds' mean and sd, Δs whose CI resamples seeds then items; one seed says so."""
from __future__ import annotations

import csv
import statistics

import pytest
from synthetic_run import RATES, SEED_SHIFT, SIZES, add_seeds, write_synthetic_run

from hrlaif.reports.build import build_report
from hrlaif.reports.seeds import ONE_SEED, seed_dirs


def _exact(p: float, n: int) -> float:
    return round(p * n) / n  # make_samples lays out exactly round(p * n) ones


def _section(md: str) -> str:
    return md.split("## Training seeds", 1)[1].split("\n## ", 1)[0]


def test_three_seed_report_has_per_seed_cells_mean_sd_and_seed_level_deltas(tmp_path):
    root = add_seeds(write_synthetic_run(tmp_path / "run"), seeds=(1, 2, 3))
    assert [s for s, _ in seed_dirs(root)["rlaif"]] == [1, 2, 3]
    rep = build_report(root)
    sec = _section((rep / "report.md").read_text(encoding="utf-8"))
    assert "3 training seeds per variant" in sec
    rows = {line.split("|")[1].strip(): line for line in sec.splitlines() if line.startswith("|")}
    mmlu = [_exact(RATES["rlaif"]["mmlu"] + SEED_SHIFT.get(s, 0.0), SIZES["mmlu"]) for s in (1, 2, 3)]
    for s, p in zip((1, 2, 3), mmlu):
        assert f"{100 * p:.1f}% [" in rows[f"RLAIF seed {s}"], s
    mean, sd = statistics.mean(mmlu), statistics.stdev(mmlu)
    assert f"{100 * mean:.1f}% (sd {100 * sd:.1f}, k=3)" in rows["RLAIF mean (sd), 3 seeds"]
    assert "SFT (shared)" in rows
    for contrast in ("RLAIF − SFT", "HRLAIF − SFT", "HRLAIF − RLAIF"):
        assert "3 seeds each" in rows[contrast] or "3 vs 1 seeds" in rows[contrast], contrast
    assert ONE_SEED not in sec
    # the numbers: Δ = difference of the seeds' means over common items; its CI brackets it
    long = list(csv.DictReader(open(rep / "seeds_long.csv", encoding="utf-8")))
    r = next(x for x in long if x["contrast"] == "hrlaif - rlaif" and x["bench"] == "mmlu")
    hmmlu = [_exact(RATES["hrlaif"]["mmlu"] + SEED_SHIFT.get(s, 0.0), SIZES["mmlu"]) for s in (1, 2, 3)]
    assert float(r["diff"]) == pytest.approx(statistics.mean(hmmlu) - mean, abs=1e-9)
    assert float(r["lo"]) < float(r["diff"]) < float(r["hi"]) and r["seeds"] == "(3, 3)" and float(r["n"]) == 150
    # the seed-level interval is wider than the checkpoint-level one of the same contrast would be
    assert float(r["hi"]) - float(r["lo"]) > 0.05
    assert "hierarchical bootstrap" in (rep / "report.md").read_text(encoding="utf-8").split("## Definitions")[1]


def test_one_seed_report_says_checkpoint_level_only(tmp_path):
    from hrlaif.reports.render import render_markdown
    from hrlaif.reports.seeds import seed_blocks

    sec = _section(render_markdown(seed_blocks(write_synthetic_run(tmp_path / "run"))[0]))
    rows = {line.split("|")[1].strip(): line for line in sec.splitlines() if line.startswith("|")}
    assert rows["HRLAIF − RLAIF"].count(ONE_SEED) >= 5 and "RLAIF seed" in sec
    assert "mean (sd)" not in sec
