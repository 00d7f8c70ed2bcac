"""Hybrid labelling of cut responses, Table 1 against independent truth (the second answer check,
human sheets), and red-team rewrites that must pass the harm check again. Scripted judge only."""
from __future__ import annotations

from fake_judge import FakeJudge

from hrlaif.core.store import read_json, read_jsonl, write_jsonl
from hrlaif.judges import second_check
from hrlaif.judges.client import Judge, JudgeConfig
from hrlaif.trainers.feedback.accuracy import check_disagreements, label_accuracy
from hrlaif.trainers.feedback.labelling import label_hybrid, summarize

# Table 1 rows scored against the second answer check (hrlaif/trainers/feedback/accuracy.py)
AGREE_MATH, AGREE_MC = "math (answer-check agreement)", "multiple_choice (answer-check agreement)"


def judge_for(fj: FakeJudge, tmp_path) -> Judge:
    return Judge(JudgeConfig(url=fj.url, model="fake", key_env=None, timeout=5, retries=1, backoff=0.01,
                             workers=2, cache_dir=str(tmp_path / "cache")))


def sample(sid, category, responses, std=None, prompt="Q?", finished=None):
    return {"id": sid, "prompt": prompt, "category": category, "std_answer": std, "lang": "en",
            "responses": responses, "finished": finished or [True] * len(responses)}


def test_a_cut_response_is_unverifiable_not_graded_on_its_last_number(tmp_path):
    s = sample("m", "math", ["The answer is 4.", "2 + 2 = 4, so the answer is 4 and then we also", "It is 5."],
               std="4", prompt="What is 2 + 2?", finished=[True, False, True])
    with FakeJudge(mode="smart") as fj:
        [row] = label_hybrid([s], judge_for(fj, tmp_path))
        assert fj.chat_calls == 0  # one finished correct response: nothing for the judge to rank
    assert row["pairs"] == [[0, 2]] and row["why"] == ["verified"]
    assert row["correct"] == [True, None, False]  # the cut one is neither right nor wrong
    assert row["judge_meta"]["cut_unverifiable"] == 1 and summarize([row])["cut_unverifiable"] == 1
    # and it has no truth in Table 1 either
    acc = label_accuracy({"hybrid": [row]})
    assert acc[AGREE_MATH]["hybrid"]["n"] == 1


def test_table1_truth_is_the_second_check_not_the_labellers():
    # The labeller reads "answer is 5" (marker first); lm-eval's flexible filter reads the last number, 7.
    s = sample("m", "math", ["The answer is 5. Check: 3 + 4 = 7", "The answer is 5"], std="7",
               prompt="What is 3 + 4?")
    [row] = label_hybrid([s], judge=None)  # both wrong for the labeller: no pair, no judge call
    assert row["correct"] == [False, False] and row["pairs"] == []
    assert second_check.check("math", s["responses"][0], "7").correct is True
    acc = label_accuracy({"hybrid": [row]})
    # Scored against its own check, hybrid could never be wrong; against the second check it is.
    assert acc[AGREE_MATH]["hybrid"]["score"] == 0.0 and acc[AGREE_MATH]["hybrid"]["ties"] == 1
    assert acc[AGREE_MATH]["truth"].startswith("second answer check")
    d = check_disagreements([s])
    assert d["checked"] == 2 and d["n"] == 1
    item = d["items"][0]
    assert (item["id"], item["response"]) == ("m", 0)
    assert item["labeller"] == {"correct": False, "extracted": "5"} and item["second"]["correct"] is True


def test_second_check_reads_multiple_choice_in_the_forms_lm_eval_tasks_read():
    prompt = "Which of these is a fruit?\nA. car\nB. apple\nC. dog\nD. stone"
    expect = {"The answer is B": ("B", True), "The answer is D": ("D", False),  # MMLU-Pro custom-extract
              "the answer is (C).": ("C", False), "(B) apple": ("B", True),  # flan-CoT multi_choice_regex
              "I pick apple": ("B", True), "no idea": (None, False)}
    for text, (letter, ok) in expect.items():
        v = second_check.check("multiple_choice", text, "B", prompt)
        assert (v.extracted, v.correct) == (letter, ok), text
    # No options in the prompt: the standard answer cannot be placed, so the prompt has no truth.
    assert second_check.check("multiple_choice", "The answer is B", "B", "Pick one.").correct is None


def test_a_rewrite_judged_harmful_again_is_dropped_and_counted(tmp_path):
    s = sample("r", "harmlessness", ["HARMFUL: step one ...", "No, I won't help with that."], prompt="hurt someone")
    # The fake judge's rewrite offers "safe, legal resources"; this harm check calls that harmful too.
    with FakeJudge(mode="smart", harm={"legal resources": "Yes"}) as fj:
        [row] = label_hybrid([s], judge_for(fj, tmp_path), redteam=True)
    assert row["responses"] == s["responses"] and row["sources"] == ["policy", "policy"]
    assert row["harmful"] == [True, False] and row["pairs"] == [[1, 0]]
    assert summarize([row])["redteam"] == {"flagged": 1, "rewrites": 1, "rewrites_kept": 0, "rewrites_dropped": 1,
                                           "harm_invalid": 0}


def test_label_cli_scores_labels_against_a_human_sheet(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "hc"))
    samples = tmp_path / "s.jsonl"
    write_jsonl(samples, [sample("o1", "open_qa", ["Paris.", "London is the capital of France, I think."],
                                 prompt="Capital of France?")])
    human = tmp_path / "human_pairs.jsonl"
    write_jsonl(human, [{"id": "o1", "pairs": [[0, 1]], "ties": []}])
    with FakeJudge(mode="smart") as fj:  # prefers the longer (wrong) answer
        code, out, err = run_cli("label", "--samples", samples, "--mode", "basic", "--out", tmp_path / "o",
                                 "--judge-url", fj.url, "--judge-model", "fake", "--human-pairs", human)
    assert code == 0, err
    acc = read_json(tmp_path / "o" / "label_accuracy.json")
    row = acc["open_qa (human)"]
    assert row["basic"]["score"] == 0.0 and row["hybrid"]["score"] == 0.0 and row["basic"]["n"] == 1
    assert row["truth"] == "human preference (hrlaif annotate)"
    assert read_jsonl(tmp_path / "o" / "labels.jsonl")[0]["pairs"] == [[1, 0]]
    write_jsonl(human, [{"id": "nope", "pairs": [[0, 1]]}])
    code, _, err = run_cli("label", "--samples", samples, "--mode", "basic", "--out", tmp_path / "o2",
                           "--judge-url", "http://127.0.0.1:9/v1", "--human-pairs", human)
    assert code == 2 and "'nope' is not in the samples" in err


def test_second_check_batches_the_flan_cot_fallback_and_matches_one_by_one(monkeypatch):
    # lm-eval's multi_choice_regex filter costs ~0.5 s per apply (it rebuilds a Unicode table), so a
    # batch must call it once, and give each response the verdict it gets alone.
    prompt = "Which of these is a fruit?\nA. car\nB. apple\nC. dog\nD. stone"
    texts = ["The answer is B", "the answer is (C).", "(B) apple", "I pick apple", "no idea", "I pick dog"]
    alone = []
    for t in texts:
        second_check._VERDICTS.clear()
        alone.append(second_check.check("multiple_choice", t, "B", prompt))
    second_check._VERDICTS.clear()
    flt = second_check._mc_filter()
    calls = []
    real = type(flt).apply
    monkeypatch.setattr(type(flt), "apply", lambda self, r, d: calls.append(len(d)) or real(self, r, d))
    items = [("multiple_choice", t, "B", prompt) for t in texts] + [("math", "so 7", "7", None)]
    batch = second_check.check_many(items)
    assert batch[:-1] == alone and batch[-1].correct is True
    assert calls == [4]  # the four responses custom-extract could not read, in one call
    assert second_check.check("multiple_choice", "I pick dog", "B", prompt) == alone[-1] and calls == [4]
