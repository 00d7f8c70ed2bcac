"""The evaluation judge: its own prompts and config section, the one invalid rule for the win
ratio, the HRLAIF-vs-RLAIF head-to-head, PPO's gold verdicts, grader-is-labeller records and
the judge's token usage. Scripted judges only (no model)."""
from __future__ import annotations

import json

from fake_judge import FakeJudge

from hrlaif.core.store import read_json, read_jsonl, write_json, write_jsonl
from hrlaif.evalsets import scoring
from hrlaif.evalsets.registry import metric
from hrlaif.evalsets.satisfaction import H2H, gold_verdicts, head_to_head, judge_pairwise
from hrlaif.judges import prompts as P
from hrlaif.judges.client import Judge, JudgeConfig


def judge_for(fj: FakeJudge, tmp_path, **kw) -> Judge:
    return Judge(JudgeConfig(url=fj.url, model="fake", key_env=None, timeout=5, retries=1, backoff=0.01,
                             workers=2, cache_dir=str(tmp_path / "cache"), **kw))


def test_grading_prompts_are_not_the_labelling_prompts():
    label = P.pairwise_messages("Q?", "a", "b")
    grade = P.eval_pairwise_messages("Q?", "a", "b")
    assert grade[0]["content"] == P.EVAL_SYSTEM != label[0]["content"]
    assert grade[1]["content"] != label[1]["content"]
    assert "Which response is better?" in label[1]["content"] and "Which response is better?" not in grade[1]["content"]
    for build in (P.eval_satisfaction_messages, lambda p, r: P.eval_toxicity_messages(r)):
        assert build("Q?", "a")[0]["content"] == P.EVAL_SYSTEM


def test_win_ratio_uses_the_grading_prompt_and_an_invalid_item_is_null_and_counted(tmp_path):
    docs = [{"prompt": "first?"}, {"prompt": "second?"}, {"prompt": "third?"}]
    # the second prompt gets prose in one order: the item is invalid, not a tie
    with FakeJudge(mode="smart", answers=[("second?\n\n[Response A]\nshort", "Hard to say.")]) as fj:
        rows = judge_pairwise(docs, ["a longer answer", "short", "x"], ["b", "a longer answer", "a longer one"],
                              judge_for(fj, tmp_path))
        sent = [c[2]["messages"] for c in fj.calls if c[0] == "POST"]
    assert all(m[0]["content"] == P.EVAL_SYSTEM for m in sent) and len(sent) == 6
    assert [r["win"] for r in rows] == [1.0, None, 0.0] and rows[1]["win_invalid"] == 1
    s = scoring.win_ratio_summary(metric("win_ratio"), rows)
    assert s["n"] == 2 and s["score"] == 0.5 and s["extra"]["invalid"] == 1
    assert "win null" in s["definition"]


def test_head_to_head_pairs_on_doc_id_both_orders(tmp_path):
    ours = [{"doc_id": "a", "group": "g", "prompt": "p1", "output": "a long and careful answer"},
            {"doc_id": "b", "group": "g", "prompt": "p2", "output": "x"},
            {"doc_id": "only-ours", "group": "g", "prompt": "p3", "output": "y"}]
    theirs = [{"doc_id": "b", "prompt": "p2", "output": "a much longer answer"},
              {"doc_id": "a", "prompt": "p1", "output": "short"}]
    with FakeJudge(mode="smart") as fj:  # the longer response wins
        rows = head_to_head(ours, theirs, judge_for(fj, tmp_path))
        assert fj.chat_calls == 4
    assert [(r["doc_id"], r["win"]) for r in rows] == [("a", 1.0), ("b", 0.0)]
    assert rows[0]["baseline_output"] == "short" and rows[0]["first_slot_won"] == [True, False]


def test_pipeline_head_to_head_writes_the_entry_and_its_rows(tmp_path, monkeypatch):
    from hrlaif.harness.config import RunConfig
    from hrlaif.harness.run_judges import head_to_head as stage_h2h

    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "hc"))
    for name, out in (("hr", "a careful, complete answer"), ("rl", "ok")):
        write_jsonl(tmp_path / name / "samples" / "satisfaction.jsonl",
                    [{"doc_id": f"d{i}", "group": "open_qa", "prompt": f"q{i}?", "output": out} for i in range(3)])
        write_json(tmp_path / name / "results.json", {"benchmarks": {}, "judge_usage": None})
    with FakeJudge(mode="smart") as fj:
        cfg = RunConfig(eval_judge=JudgeConfig(url=fj.url, model="grader", key_env=None, cache_dir=""))
        stage_h2h(cfg, tmp_path / "hr", tmp_path / "rl")
    res = read_json(tmp_path / "hr" / "results.json")
    e = res["benchmarks"][H2H]
    assert e["score"] == 1.0 and e["n"] == 3 and e["against_baseline"] and e["extra"]["baseline"] == "rlaif"
    assert e["extra"]["wins"] == 3 and e["extra"]["invalid"] == 0 and e["judge"]["model"] == "grader"
    assert res["judge_usage"]["head_to_head"]["requests"] == 6
    assert [r["win"] for r in read_jsonl(tmp_path / "hr" / "samples" / f"{H2H}.jsonl")] == [1.0] * 3


def test_gold_verdicts_are_satisfaction_calls_with_null_for_invalid(tmp_path):
    with FakeJudge(answers=[("fine answer", "Yes"), ("bad answer", "No"), ("Does the response", "Maybe?")]) as fj:
        got = gold_verdicts(judge_for(fj, tmp_path), ["a", "b", "c"], ["fine answer", "bad answer", "odd"])
        asked = [c[2]["messages"][1]["content"] for c in fj.calls if c[0] == "POST"]
    assert got == [1, 0, None]
    assert all("Does the response satisfy the request?" in a for a in asked)


def test_eval_and_harm_judges_inherit_the_judge_section(tmp_path):
    from hrlaif.harness.config import load_config

    p = tmp_path / "c.yaml"
    p.write_text("judge: {url: 'http://127.0.0.1:1/v1', model: labeller, key_env: null}\n"
                 "eval_judge: {model: grader}\n")
    cfg = load_config(p)
    ej = cfg.eval_judge
    assert (ej.url, ej.model, ej.key_env) == ("http://127.0.0.1:1/v1", "grader", None)
    assert cfg.harm_judge == cfg.judge
    assert not cfg.eval_judge.same_judge(cfg.judge) and cfg.harm_judge.same_judge(cfg.judge)
    assert load_config(None).eval_judge.same_judge(load_config(None).judge)  # the embedded default: one model


def test_results_record_whether_the_grader_is_the_labeller():
    from hrlaif.evalsets.runner import grader_record

    same = grader_record(JudgeConfig(), JudgeConfig(workers=7))
    assert same["grader_is_labeller"] is True
    # the embedded judge is named by the hash of the GGUF it serves, not by strings alone
    from hrlaif.core.models import source_weights_id
    gguf = source_weights_id(None)
    assert same["judges"] == {"evaluation": {"url": "embedded", "model": "embedded", "weights": gguf},
                              "labelling": {"url": "embedded", "model": "embedded", "weights": gguf},
                              "base_model": None} and len(gguf) == 12
    other = grader_record(JudgeConfig(url="https://user:pw@api.example/v1", model="g"), JudgeConfig())
    assert other["grader_is_labeller"] is False and other["judges"]["evaluation"]["url"] == "https://api.example/v1"
    assert grader_record(JudgeConfig(), None)["grader_is_labeller"] is None  # `hrlaif eval`: labeller unknown


def test_results_record_whether_the_grader_is_the_policys_base_model(tmp_path):
    """Issue 19: the quickstart's embedded judge is also the policy's base model (the same GGUF's
    weights); an endpoint serving the base model's hub id is too; another model is not."""
    from hrlaif.evalsets.runner import grader_record
    from hrlaif.reports.verdict_trust import self_graded

    quick = grader_record(JudgeConfig(), JudgeConfig(), base_model=None)  # the embedded base model
    assert quick["grader_is_base_model"] is True
    assert quick["judges"]["base_model"]["weights"] == quick["judges"]["evaluation"]["weights"]
    hub = JudgeConfig(url="http://127.0.0.1:8000/v1", model="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert grader_record(hub, None, base_model="HuggingFaceTB/SmolLM2-135M-Instruct")["grader_is_base_model"] is True
    gguf = tmp_path / "other.gguf"
    gguf.write_bytes(b"GGUF not the judge")
    rec = grader_record(JudgeConfig(), JudgeConfig(url="https://api.example/v1", model="g"), base_model=str(gguf))
    assert rec["grader_is_base_model"] is False and rec["grader_is_labeller"] is False
    assert self_graded(rec) is None and "base model" in self_graded(quick | {"grader_is_labeller": False})
    assert grader_record(JudgeConfig(), None)["grader_is_base_model"] is None  # base model unknown


def test_judge_usage_counts_tokens_of_sent_requests_only(tmp_path):
    with FakeJudge(mode="smart") as fj:  # reports 1 prompt and 1 completion token per request
        j = judge_for(fj, tmp_path)
        j.choose(P.pairwise_messages("q", "a", "bb"))
        j.choose(P.pairwise_messages("q", "a", "bb"))  # a cache hit: free
        u = j.usage()
    assert (u["requests"], u["http_calls"], u["cache_hits"]) == (2, 1, 1)
    assert (u["prompt_tokens"], u["completion_tokens"]) == (1, 1)
    assert u["judge"]["model"] == "fake" and json.dumps(u)


def test_drift_benchmarks_are_graded_by_the_evaluation_judge(tmp_path, tiny_model_dir, monkeypatch):
    from hrlaif.core.models import load_causal_lm
    from hrlaif.evalsets.runner import evaluate_in_process

    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "hc"))
    model, tok, _ = load_causal_lm(str(tiny_model_dir))
    with FakeJudge(answers=[("Does the response satisfy the request?", "Yes")]) as fj:
        res = evaluate_in_process(model, tok, ["satisfaction"], limit=2, max_gen_toks={"satisfaction": 4},
                                  judge=JudgeConfig(url=fj.url, model="grader", key_env=None, cache_dir=""))
        asked = [c[2] for c in fj.calls if c[0] == "POST"]
    assert asked and all(b["model"] == "grader" for b in asked)
    assert res["satisfaction"]["n"] + sum(i["score"] is None for i in res["satisfaction"]["items"]) == 2
