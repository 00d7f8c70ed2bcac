"""Issue 19 item 5: a Table 1 that hybrid does not win by construction."""
from __future__ import annotations

import pandas as pd
import pytest

from hrlaif.core.stats import cluster_bootstrap_mean
from hrlaif.core.store import write_json
from hrlaif.reports.collect import label_accuracy_frame, rm_frames
from hrlaif.reports.table1 import rm_paired
from hrlaif.reports.tables import label_accuracy_table, rm_table
from hrlaif.trainers.feedback.accuracy import label_accuracy

PROMPT = "What is 2 + 2?"


def _row(sid: str, responses: list[str], pairs: list, mode: str, **extra) -> dict:
    return {"id": sid, "category": "math", "prompt": PROMPT, "std_answer": "4", "responses": responses,
            "finished": [True] * len(responses), "pairs": pairs, "mode": mode, **extra}


def test_regex_rows_are_answer_check_agreement_and_human_pairs_of_two_correct_answers_are_scored():
    """Hybrid's verified pairs enforce 'correct beats wrong', so against the second answer check it
    wins by construction: those rows are named answer-check agreement. Pairs of two correct answers
    that humans ranked (the reasoning the AI judge decides within hybrid) get their own row, and
    hybrid − basic is paired on the same pairs with a CI clustered by prompt."""
    good, terse, wrong = "2 + 2 = 4, because two and two make four. The answer is 4.", "4", "The answer is 5."
    basic, hybrid = [], []
    for k in range(8):
        sid = f"m{k}"
        # both labellers order right vs wrong; on the two correct answers humans prefer the explained one
        hyb_ok = k < 6  # hybrid's judge agrees with the humans on 6 of 8 prompts, basic's on 2
        bas_ok = k < 2
        b = _row(sid, [good, terse, wrong], [[0, 2], [1, 2], [0, 1] if bas_ok else [1, 0]], "basic")
        h = _row(sid, [good, terse, wrong], [[0, 2], [1, 2], [0, 1] if hyb_ok else [1, 0]], "hybrid")
        basic.append(b)
        hybrid.append(h)
        human = {"gt_pairs": [[0, 1], [0, 2]], "truth": None, "category": "math (human)"}
        basic.append(b | human)
        hybrid.append(h | human)
    acc = label_accuracy({"basic": basic, "hybrid": hybrid})
    agree = acc["math (answer-check agreement)"]
    assert agree["hybrid"]["score"] == 1.0 and agree["truth"].startswith("second answer check")
    assert "math" not in acc
    both = acc["math (human) · both correct (human)"]
    assert (both["basic"]["score"], both["hybrid"]["score"], both["hybrid"]["n"]) == (0.25, 0.75, 8)
    assert "two answers the second check finds correct" in both["truth"]
    d = both["hybrid_minus_basic"]
    expect = cluster_bootstrap_mean([0, 0, 1, 1, 1, 1, 0, 0], [f"m{k}" for k in range(8)])
    assert d["score"] == pytest.approx(0.5) and d["ci95"] == pytest.approx(expect["ci95"]) and d["n_clusters"] == 8
    # the human pair of a correct and a wrong answer stays in the human row
    assert acc["math (human)"]["hybrid"]["n"] == 8 and acc["math (human)"]["hybrid"]["score"] == 1.0


def test_label_table_shows_the_paired_difference(tmp_path):
    acc = {"open_qa (human)": {"truth": "human preference (hrlaif annotate)",
                               "basic": cluster_bootstrap_mean([1, 0, 0, 1, 0, 1], list("aabbcc")),
                               "hybrid": cluster_bootstrap_mean([1, 1, 0, 1, 1, 1], list("aabbcc")),
                               "hybrid_minus_basic": cluster_bootstrap_mean([0, 1, 0, 0, 1, 0], list("aabbcc"))},
           "math": {"truth": "second answer check (lm-eval filters), not the labeller's",  # an older file
                    "basic": cluster_bootstrap_mean([1, 0], list("ab")),
                    "hybrid": cluster_bootstrap_mean([1, 1], list("ab"))}}
    write_json(tmp_path / "label_hybrid" / "label_accuracy.json", acc)
    t = label_accuracy_table(label_accuracy_frame(tmp_path))
    cell = t.loc["open_qa (human)", "hybrid − basic"]
    assert cell.startswith("Δ +33.3 pt [") and "paired, n=6 (3 prompts)" in cell
    assert t.loc["math (answer-check agreement)", "hybrid − basic"].endswith("(unpaired)")


def test_rm_hybrid_minus_rm_basic_is_paired_on_the_shared_held_out_pairs(tmp_path):
    pairs = [(f"p{k // 3}", 0, 1 + k % 3) for k in range(30)]
    basic_ok = [int(k % 2 == 0) for k in range(30)]
    hybrid_ok = [int(k % 3 != 2) for k in range(30)]
    for mode, oks in (("basic", basic_ok), ("hybrid", hybrid_ok)):
        acc = cluster_bootstrap_mean(oks, [p[0] for p in pairs])
        write_json(tmp_path / f"rm_{mode}" / "rm_metrics.json", {
            "heldout_acc": acc, "per_category": {}, "clipped_share": 0.0, "clip": 10.0,
            "shared_heldout_acc": {**acc, "file": "heldout/pairs.jsonl", "sha256_12": "x",
                                   "pairs": [[i, a, b, ok] for (i, a, b), ok in zip(pairs, oks)]}})
    r = rm_paired(tmp_path)
    expect = cluster_bootstrap_mean([h - b for h, b in zip(hybrid_ok, basic_ok)], [p[0] for p in pairs])
    assert r["score"] == pytest.approx(expect["score"]) and [r["lo"], r["hi"]] == pytest.approx(expect["ci95"])
    assert r["n"] == 30 and r["n_clusters"] == 10
    t = rm_table(*rm_frames(tmp_path), r)
    assert "paired, n=30 (10 prompts)" in t.loc["(shared held-out pairs)", "RM hybrid − RM basic"]
    assert isinstance(t, pd.DataFrame) and rm_paired(tmp_path / "nowhere") is None
