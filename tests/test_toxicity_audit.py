"""The ToxiGen classifier audit: held-apart labelled sentences from the same prompt files, accuracy
and AUROC, and an `unreliable` entry when the classifier is at chance (judge and hf: alike)."""
from __future__ import annotations

import pytest
from fake_judge import FakeJudge

from hrlaif.evalsets import registry
from hrlaif.evalsets.kinds import classify
from hrlaif.evalsets.loaders import load
from hrlaif.evalsets.toxicity import (
    AUDIT_PER_CLASS,
    HFClassifier,
    JudgeClassifier,
    audit,
    audit_set,
    sentences,
    unreliable_reason,
)
from hrlaif.judges.client import Judge, JudgeConfig


@pytest.fixture(scope="module")
def toxigen():
    sp = registry.spec("toxigen")
    return sp, load(sp).limited(12).docs


def judge_for(fj, tmp_path) -> Judge:
    return Judge(JudgeConfig(url=fj.url, model="fake", key_env=None, timeout=5, retries=1, workers=4,
                             cache_dir=str(tmp_path / "cache")))


def test_audit_set_is_balanced_and_never_uses_a_continued_prompt(toxigen, shared_data):
    sp, docs = toxigen
    texts, truth, source = audit_set(sp, docs)
    assert source == "embedded" and 0 < sum(truth) == len(truth) - sum(truth) <= AUDIT_PER_CLASS
    continued = {s for d in docs for s in sentences(d["prompt"])}
    assert not continued & set(texts)
    full = load(sp).docs
    hate = {s for d in full for s in sentences(d["prompt"])}
    assert all((t in hate) == bool(y) for t, y in zip(texts, truth))  # hate_* lines are the hateful class
    # the same files under --data-dir (31 groups in the real slice)
    real = load(sp, shared_data).limited(40).docs
    texts, truth, source = audit_set(sp, real, str(shared_data))
    assert source.startswith("local:") and len(texts) == 2 * AUDIT_PER_CLASS
    assert not {s for d in real for s in sentences(d["prompt"])} & set(texts)


def test_a_yes_sayer_is_flagged_unreliable_and_a_good_classifier_is_not(toxigen, tmp_path):
    sp, docs = toxigen
    texts, truth, _ = audit_set(sp, docs)
    with FakeJudge(answers=[("Is the text toxic?", "Yes")]) as fj:  # the 135M judge's habit
        bad = audit(JudgeClassifier(judge_for(fj, tmp_path / "a")), sp, docs)
    assert bad["accuracy"]["score"] == 0.5 and bad["auroc"] == 0.5 and bad["reliable"] is False
    assert "at chance" in unreliable_reason(bad)
    hateful = [t for t, y in zip(texts, truth) if y]
    with FakeJudge(answers=[(t, "Yes") for t in hateful] + [("Is the text toxic?", "No")]) as fj:
        good = audit(JudgeClassifier(judge_for(fj, tmp_path / "b")), sp, docs)
    assert good["accuracy"]["score"] == 1.0 and good["auroc"] == 1.0 and good["reliable"] is True
    assert unreliable_reason(good) is None
    # the entry a report reads: computed from the rows, which carry the audit
    rows = [{"doc_id": d["doc_id"], "group": d["group"], "score": 1, "classifier": "judge", "classifier_audit": bad}
            for d in docs]
    entry = classify.summarize(sp, rows)
    assert entry["unreliable"].startswith("the toxicity classifier is at chance")
    assert entry["extra"]["classifier_audit"]["n_hateful"] == len(hateful)
    rows = [r | {"classifier_audit": good} for r in rows]
    assert classify.summarize(sp, rows)["unreliable"] is None


def test_too_few_valid_answers_is_no_verdict(toxigen, tmp_path):
    sp, docs = toxigen
    with FakeJudge(mode="garbage") as fj:
        a = audit(JudgeClassifier(judge_for(fj, tmp_path)), sp, docs)
    assert a["accuracy"]["n"] == 0 and a["invalid"] == a["n_hateful"] + a["n_benign"]
    assert "accuracy is unknown" in unreliable_reason(a)


def test_hf_classifiers_go_through_the_same_audit(toxigen, tiny_classifier_dir):
    sp, docs = toxigen
    a = audit(HFClassifier(str(tiny_classifier_dir)), sp, docs)
    assert a["accuracy"]["n"] == a["n_hateful"] + a["n_benign"] > 0 and a["invalid"] == 0
    assert 0.0 <= a["auroc"] <= 1.0 and a["classifier"].startswith("hf:")
    assert isinstance(a["reliable"], bool)
