"""The judge audit (hrlaif/core/judge_audit.py, hrlaif/judges/audit.py) with scripted judges: one that always answers
A (degenerate: the report's notice, the gate and the alarms skip its verdicts), one that prefers the
longer response (length bias detected), one that follows a hidden truth (agreement near 100%, no
notice); `hrlaif audit-judge` (unreachable endpoint, --dry-run, a real audit) and the label stage's
judge_audit.json."""
from __future__ import annotations

import random
import re

import pytest
from fake_judge import FakeJudge

from hrlaif.core.judge_audit import AUDIT_FILE, audit, degenerate, harm_audit, pair_record
from hrlaif.core.store import read_json, write_json, write_jsonl
from hrlaif.judges.audit import judge_both_orders, repeatability
from hrlaif.judges.client import Judge
from hrlaif.judges.config import JudgeConfig
from hrlaif.judges.prompts import pairwise_messages

N = 40


def items(n: int = N, seed: int = 0) -> list[dict]:
    """Chosen carries the hidden truth (marker GOOD); lengths are independent of it (half the chosen
    responses are the longer one, never equal)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        short, long_ = "x" * rng.randint(5, 20), "y" * rng.randint(40, 80)
        good_long = i % 2 == 0
        out.append({"id": f"p{i}", "prompt": f"question {i}",
                    "chosen": ("GOOD " + (long_ if good_long else short)),
                    "rejected": ("bad " + (short if good_long else long_))})
    return out


def run_audit(fj: FakeJudge, tmp_path, n: int = N) -> dict:
    judge = Judge(JudgeConfig(url=fj.url, model="fake", key_env=None, cache_dir=str(tmp_path / "cache"),
                              workers=1))
    recs, msgs = judge_both_orders(judge, items(n), pairwise_messages)
    return audit(recs, "labelling", judge.identity, repeatability(judge, msgs, n=4), ["hidden truth"])


def test_always_a_judge_is_degenerate(tmp_path):
    with FakeJudge(mode="always_a") as fj:
        a = run_audit(fj, tmp_path)
    assert a["order_consistency"]["score"] == 0.0 and a["order_consistency"]["ci95"][1] < 0.1
    assert a["first_slot_rate"]["score"] == 1.0 and a["first_slot_rate"]["n"] == 2 * N
    assert a["agreement"]["score"] == 0.5  # every pair splits: a tie, half right
    assert a["length_bias"]["score"] == 0.0  # half its decisions land on the longer response
    assert a["repeatability"]["score"] == 1.0 and a["repeatability"]["n"] == 4
    assert "order consistency" in a["degenerate"] and "first-slot rate" in a["degenerate"]


def test_length_preferring_judge_shows_length_bias(tmp_path):
    with FakeJudge(mode="smart") as fj:  # smart: the longer response wins
        a = run_audit(fj, tmp_path)
    lb = a["length_bias"]
    assert lb["share_longer"] == 1.0 and lb["ci95"][0] > 0.4  # +50 pt, CI far from 0
    assert a["order_consistency"]["score"] == 1.0 and a["first_slot_rate"]["score"] == 0.5
    assert a["agreement"]["score"] == 0.5 and a["agreement"]["truth_longer"] == 0.5  # truth is not length
    assert a["degenerate"] is None


def test_truth_following_judge_agrees_and_is_not_degenerate(tmp_path):
    with FakeJudge(mode="smart", rank=["GOOD"]) as fj:
        a = run_audit(fj, tmp_path)
    ag = a["agreement"]
    assert ag["score"] == 1.0 and ag["n"] == N and ag["ci95"][0] > 0.9
    assert a["order_consistency"]["score"] == 1.0 and a["degenerate"] is None
    lo, hi = a["length_bias"]["ci95"]
    assert lo < 0 < hi  # no length preference
    # repeatability bypassed the cache: the fake judge saw each repeated request twice
    assert a["repeatability"]["score"] == 1.0 and fj.chat_calls == 2 * N + 4


def test_high_agreement_overrides_position_bias():
    """Always "A", but its probabilities follow the truth: the order-averaged labels carry signal."""
    recs = [pair_record(i, "a", "bb", "A", "A", p_x=0.7, truth=1) for i in range(30)]
    a = audit(recs, "labelling")
    assert a["first_slot_rate"]["score"] == 1.0 and a["agreement"]["ci95"][0] > 0.5
    assert a["degenerate"] is None
    assert degenerate(audit([pair_record(i, "a", "bb", "A", "A") for i in range(4)], "x")) is None  # n < 5


def _degenerate_run(tmp_path, grader: bool = False):
    from synthetic_run import write_synthetic_run

    root = write_synthetic_run(tmp_path / "run", grader=grader)  # grader False: not self-graded
    bad = audit([pair_record(i, "a" * (i + 1), "b", "A", "A") for i in range(20)], "labelling")
    write_json(root / "label_basic" / AUDIT_FILE, bad)
    write_json(root / "eval_rlaif" / AUDIT_FILE, bad | {"role": "evaluation"})
    return root


def test_degenerate_judge_notice_gate_and_alarms(tmp_path):
    from hrlaif.harness.gate import compare
    from hrlaif.reports.alarms import compute_alarms
    from hrlaif.reports.build import build_report
    from hrlaif.reports.collect import collect
    from hrlaif.reports.verdict_trust import DEGENERATE, run_untrusted

    root = _degenerate_run(tmp_path)
    # the synthetic run's RLAIF carries the failure signature: it fires with a sound judge (test_alarms.py)
    assert not [a for a in compute_alarms(collect(root)) if a["type"] == "rlaif_failure" and a["variant"] == "rlaif"]
    bad = run_untrusted(root)
    assert bad[("rlaif", "satisfaction")].startswith(DEGENERATE) and ("rlaif", "win_ratio") in bad
    assert ("rlaif", "mmlu") not in bad and ("sft", "satisfaction") not in bad  # not judge-graded; sound grader
    g = compare(root / "eval_sft", root / "eval_rlaif")
    assert DEGENERATE in g["not_evaluable"]["satisfaction"] and "satisfaction" not in g["benchmarks"]
    assert "mmlu" in g["benchmarks"]
    md = (build_report(root) / "report.md").read_text()
    head = md[:md.index("## Alarms")]
    assert "Degenerate judge" in head and "rm_basic" in head and "carry no signal" in head
    assert "## Judge audit" in md and "DEGENERATE" in md and "not tested" in md
    assert "order consistency's 95% CI lies entirely below 50%" in md  # the rule, in Definitions


def test_a_degenerate_labeller_taints_the_cells_it_grades(tmp_path):
    """The grader is the labeller: its degenerate labelling audit counts even where self-grading is allowed."""
    from hrlaif.reports.verdict_trust import DEGENERATE, SELF_GRADED, untrusted

    root = _degenerate_run(tmp_path, grader=True)
    why = untrusted(root / "eval_sft", allow=(SELF_GRADED,))["satisfaction"]
    assert why.startswith(DEGENERATE) and "the grader is the labelling judge" in why


def test_sound_judge_gives_no_notice(tmp_path):
    from synthetic_run import write_synthetic_run

    from hrlaif.reports.build import build_report

    root = write_synthetic_run(tmp_path / "run")
    good = audit([pair_record(i, "GOOD", "b", "A" if i % 2 else "B", "B" if i % 2 else "A", truth=int(i % 2))
                  for i in range(20)], "labelling")
    write_json(root / "label_basic" / AUDIT_FILE, good)
    write_json(root / "label_hybrid" / "harm_judge_audit.json", harm_audit([(False, True)] * 10, truth_sources=["hh"]))
    md = (build_report(root) / "report.md").read_text()
    assert "Degenerate judge" not in md and "## Judge audit" in md and "100.0% [83.9, 100.0] n=20" in md
    assert "label_hybrid (harm checks) · harmlessness" in md and "50.0% [29.9, 70.1] n=20" in md  # its flag rate


@pytest.fixture
def pairs_file(tmp_path):
    p = tmp_path / "pairs.jsonl"
    write_jsonl(p, items(12))
    return p


def test_audit_judge_unreachable_is_one_line_exit_2(run_cli, pairs_file, monkeypatch, tmp_path):
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "c"))
    code, out, err = run_cli("audit-judge", "--pairs", pairs_file, "--judge-url", "http://127.0.0.1:9/v1",
                             "--judge-key-env", "none", "--judge-retries", "0")
    assert code == 2 and "Traceback" not in err
    assert err.strip().count("\n") == 0 and "judge unreachable at http://127.0.0.1:9/v1" in err


def test_audit_judge_dry_run_sends_nothing(run_cli, pairs_file, monkeypatch, tmp_path):
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "c"))
    with FakeJudge(mode="always_a") as fj:
        code, out, err = run_cli("audit-judge", "--pairs", pairs_file, "--limit", "10", "--repeat", "3",
                                 "--judge-url", fj.url, "--judge-key-env", "none", "--dry-run",
                                 "--judge-price-per-1k-prompt-tokens", "1",
                                 "--judge-price-per-1k-completion-tokens", "2")
        assert code == 0, err
        assert fj.chat_calls == 0
    assert "10 pairs x 2 orders + 3 repeated (cache bypassed) = 23 requests" in out
    assert "completion tokens 92" in out  # 23 x choice_max_tokens 4
    ptoks = int(re.search(r"prompt tokens ([\d,]+)", out).group(1).replace(",", ""))
    assert ptoks > 0 and f"cost {ptoks / 1000 + 92 * 2 / 1000:,.4f}" in out


def test_audit_judge_prints_the_figures(run_cli, pairs_file, monkeypatch, tmp_path):
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "c"))
    with FakeJudge(mode="always_a") as fj:
        code, out, err = run_cli("audit-judge", "--pairs", pairs_file, "--judge-url", fj.url, "--judge-key-env",
                                 "none", "--out", tmp_path / "a.json", "--repeat", "2")
    assert code == 0, err
    for name in ("order consistency   0.0% [0.0, 24.2] n=12", "first-slot rate     100.0% [86.2, 100.0] n=24",
                 "length bias", "agreement           50.0%", "repeatability       100.0%", "DEGENERATE"):
        assert name in out
    assert read_json(tmp_path / "a.json")["degenerate"]


def test_label_stage_writes_the_labelling_judge_audit(run_cli, tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "c"))
    rows = [{"id": f"o{i}", "prompt": f"q{i}", "category": "open_qa", "responses": ["a" * (i + 1), "bb", "c"]}
            for i in range(6)]
    write_jsonl(tmp_path / "s.jsonl", rows)
    with FakeJudge(mode="always_a") as fj:
        code, out, err = run_cli("label", "--samples", tmp_path / "s.jsonl", "--mode", "basic", "--out",
                                 tmp_path / "o", "--judge-url", fj.url, "--data-dir", shared_data, "--hh-limit", "6")
    assert code == 0, err
    a = read_json(tmp_path / "o" / AUDIT_FILE)
    assert a["pairs"] == 6 * 3 + 6 and a["first_slot_rate"]["score"] == 1.0  # 3 pairs per prompt + hh pairs
    assert a["agreement"]["n"] == 6 and "hh-rlhf" in a["agreement"]["truth"][0]
    assert a["repeatability"]["n"] == 8 and a["degenerate"]
    assert "labelling judge audit" in out and "DEGENERATE" in out


def test_hybrid_label_stage_audits_the_harmlessness_judge(run_cli, tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "c"))
    rows = [{"id": f"o{i}", "prompt": f"q{i}", "category": "open_qa", "responses": ["a" * (i + 1), "bb"]}
            for i in range(3)]
    write_jsonl(tmp_path / "s.jsonl", rows)
    with FakeJudge(mode="smart") as fj:  # harm check: "Yes" only for a response saying HARMFUL (none here)
        code, out, err = run_cli("label", "--samples", tmp_path / "s.jsonl", "--mode", "hybrid", "--redteam", "--out",
                                 tmp_path / "o", "--judge-url", fj.url, "--data-dir", shared_data, "--hh-limit", "6")
    assert code == 0, err
    h = read_json(tmp_path / "o" / "harm_judge_audit.json")
    assert h["role"] == "harmlessness" and h["pairs"] == 6 and h["order_consistency"] is None
    assert h["flag_rate"]["score"] == 0.0 and h["flag_rate"]["n"] == 12  # it never flags: no signal
    assert h["agreement"]["score"] == 0.5 and h["agreement"]["n"] == 6 and h["repeatability"]["n"] == 8
    assert h["degenerate"] is None  # the pairwise rule does not apply to one verdict per response


def test_eval_audit_from_the_win_ratio_rows(tmp_path):
    """The evaluation judge's audit from an evaluation's pairwise rows, truth from both sides' verified
    answers (eval_sft's for the win ratio vs SFT), repeatability through an open judge."""
    from types import SimpleNamespace

    from hrlaif.harness.run_judges import eval_audit

    run = tmp_path / "run"
    sft = [{"doc_id": f"d{i}", "verified": i % 2 == 1} for i in range(10)]
    ours = [{"doc_id": f"d{i}", "prompt": f"q{i}", "output": "GOOD " + "y" * (i + 1), "baseline_output": "bad",
             "verified": i % 2 == 0, "pairwise": ["A", "B"], "p_ours": 0.9} for i in range(10)]
    write_jsonl(run / "eval_sft" / "samples" / "satisfaction.jsonl", sft)
    write_jsonl(run / "eval_rlaif" / "samples" / "satisfaction.jsonl", ours)
    with FakeJudge(mode="smart", rank=["GOOD"]) as fj:
        jc = JudgeConfig(url=fj.url, model="fake", key_env=None, cache_dir="", workers=1)
        a = eval_audit(SimpleNamespace(eval_judge=jc), run / "eval_rlaif", Judge(jc))
    assert read_json(run / "eval_rlaif" / AUDIT_FILE) == a and a["role"] == "evaluation"
    assert a["pairs"] == 10 and a["order_consistency"]["score"] == 1.0 and a["first_slot_rate"]["score"] == 0.5
    # ours verified correct where SFT's is wrong (even i) -> truth 1; the reverse (odd i) -> truth 0
    ag = a["agreement"]
    assert ag["n"] == 10 and ag["score"] == 0.5 and "second answer check" in ag["truth"][0]
    assert a["repeatability"]["n"] == 8 and a["repeatability"]["score"] == 1.0 and a["degenerate"] is None
    assert eval_audit(SimpleNamespace(eval_judge=jc), run / "eval_sft") is None  # no pairwise rows: no audit
