"""A drift benchmark with headroom (MMLU cloze) and the over-optimisation bench's early-warning rule."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pandas as pd

from hrlaif.evalsets import registry
from hrlaif.evalsets.kinds.multiple_choice import _choice

ROOT = Path(__file__).resolve().parents[1]


def test_acc_norm_picks_the_option_per_character():
    """lm-eval's acc_norm divides each option's log-likelihood by its text's length: a long right
    answer beats a short wrong one it loses to in total log-likelihood."""
    sample = {"arguments": [("Q", " yes"), ("Q", " the capital of France is Paris")]}
    lls = [-4.0, -12.0]
    assert _choice(lls, sample, "acc") == 0
    assert _choice(lls, sample, "acc_norm") == 1  # -12/29 > -4/3 (the joining space is not counted)


def test_mmlu_cloze_is_a_spec_on_mmlu_data(tiny_model_dir, tmp_path, run_cli):
    """The cloze form is one YAML spec over MMLU's official layout and embedded slice: `hrlaif eval`
    scores it, and each answer is the option with the best log-likelihood per character of its text."""
    assert "mmlu_cloze" in registry.names() and registry.info("mmlu_cloze")["higher_is_better"]
    code, _, err = run_cli("eval", "--model", tiny_model_dir, "--benchmarks", "mmlu_cloze", "--limit", "6",
                           "--out", tmp_path / "e", "--no-use-cache")
    assert code == 0, err
    res = json.loads((tmp_path / "e" / "results.json").read_text())["benchmarks"]["mmlu_cloze"]
    rows = [json.loads(x) for x in (tmp_path / "e" / "samples" / "mmlu_cloze.jsonl").read_text().splitlines()]
    assert res["n"] == len(rows) == 6 and res["metric"] == "acc_norm"
    data = ROOT / "hrlaif" / "evalsets" / "data" / "mmlu" / "test"  # the embedded slice, official layout
    for r in rows:
        subject, idx = r["doc_id"].rsplit("/", 1)
        row = list(csv.reader((data / f"{subject}_test.csv").open(encoding="utf-8")))[int(idx)]
        per_char = [ll / len(opt) for ll, opt in zip(r["loglikelihoods"], row[1:5])]
        best = max(range(4), key=per_char.__getitem__)
        assert r["output"] == "ABCD"[best] and r["score"] == float(r["output"] == r["target"])


def _bench():
    spec = importlib.util.spec_from_file_location("overoptimise", ROOT / "bench" / "overoptimise.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_an_early_warning_departs_when_it_leaves_the_controls_band_for_three_steps():
    dep = _bench().departure_step
    control = pd.Series([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.0], index=range(1, 9))
    over = pd.Series([1.0, 1.2, 3.0, 1.0, 2.0, 2.5, 3.0, 3.5], index=range(1, 9))  # a lone spike at 3
    assert dep(over, control) == 5
    assert dep(control, control) is None
    assert dep(over, control.iloc[:2]) is None  # too little control to form a band
