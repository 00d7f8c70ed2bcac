"""Judge client against the scripted fake server: parsing, logprobs, retries, cache, secrets."""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import replace

import pytest
from fake_judge import FakeJudge

from hrlaif.core.errors import UserError
from hrlaif.judges import prompts as P
from hrlaif.judges.client import INVALID, Judge, JudgeConfig, JudgeUnavailable, Response, decide

MSG = P.pairwise_messages("What is 2+2?", "4", "The answer is 4 because 2+2=4.")


def cfg(fj: FakeJudge, tmp_path, **kw) -> JudgeConfig:
    base = dict(url=fj.url, model="fake", key_env=None, timeout=5, retries=3,
                backoff=0.01, backoff_max=0.05, workers=4, cache_dir=str(tmp_path / "cache"))
    return JudgeConfig(**(base | kw))


@pytest.mark.parametrize("text,label", [
    ("A", "A"), (" (B). ", "B"), ("Answer: A", "A"), ("answer：B", "B"), ("b", "B"), ("A.\n", "A"),
    ("A is better", INVALID), ("B because it is longer", INVALID), ("", INVALID), ("AB", INVALID),
    ("Both are good", INVALID), ("The answer is A", INVALID),
])
def test_strict_text_parsing(text, label):
    assert decide(Response(text), ("A", "B"))[0] == label


def test_yes_no_options_parse():
    assert decide(Response("Yes."), ("Yes", "No"))[0] == "Yes"
    assert decide(Response("no"), ("Yes", "No"))[0] == "No"
    assert decide(Response("Yes, definitely"), ("Yes", "No"))[0] == INVALID


def test_always_a_and_garbage_are_counted(tmp_path):
    with FakeJudge(mode="always_a") as fj:
        j = Judge(cfg(fj, tmp_path))
        assert j.choose(MSG)[0] == "A"
    with FakeJudge(mode="garbage") as fj:
        j = Judge(cfg(fj, tmp_path, cache_dir=""))
        label, probs = j.choose(MSG)
        assert label == INVALID and probs == {"A": 0.0, "B": 0.0}
        assert j.stats.invalid == 1 and j.stats.choices == 1 and j.stats.by_text == 0


def test_logprobs_decide_over_text(tmp_path):
    # The text is unparseable, but first-token probabilities say B (0.3 + 0.05 vs 0.2).
    top = {"Well": 0.45, " B": 0.3, "(B": 0.05, "A": 0.2}
    with FakeJudge(mode="garbage", logprobs=True, top=top) as fj:
        j = Judge(cfg(fj, tmp_path))
        label, probs = j.choose(MSG)
        body = fj.calls[-1][2]
    assert body["logprobs"] is True and body["top_logprobs"] == 10 and body["max_tokens"] == 4
    assert label == "B" and probs["B"] == pytest.approx(0.35 / 0.55)
    assert j.stats.by_logprobs == 1 and j.stats.invalid == 0


def test_logprobs_without_options_fall_back_to_text(tmp_path):
    with FakeJudge(mode="always_a", logprobs=True, top={"Hmm": 0.9, "Well": 0.1}) as fj:
        j = Judge(cfg(fj, tmp_path))
        assert j.choose(MSG)[0] == "A"  # no option among top tokens: the text "A" decides
        assert j.stats.by_text == 1


def test_first_token_first_spends_the_reply_budget_only_when_logprobs_do_not_decide(tmp_path):
    top = {"Well": 0.45, " B": 0.3, "(B": 0.05, "A": 0.2}
    with FakeJudge(mode="garbage", logprobs=True, top=top) as fj:
        j = Judge(replace(cfg(fj, tmp_path), first_token_first=True))
        assert j.choose(MSG)[0] == "B"
        budgets = [c[2]["max_tokens"] for c in fj.calls if c[1].endswith("/chat/completions")]
        assert budgets == [1]  # decided by the first token
    with FakeJudge(mode="always_a", logprobs=True, top={"Hmm": 0.9, "Well": 0.1}) as fj:
        j = Judge(replace(cfg(fj, tmp_path / "2"), first_token_first=True))
        assert j.choose(MSG)[0] == "A" and j.stats.by_text == 1
        budgets = [c[2]["max_tokens"] for c in fj.calls if c[1].endswith("/chat/completions")]
        assert budgets == [1, 4]  # then the text decides


def test_retry_500_then_success(tmp_path):
    with FakeJudge(mode="always_a", fail_first=2, fail_status=500) as fj:
        j = Judge(cfg(fj, tmp_path))
        assert j.choose(MSG)[0] == "A"
        assert fj.chat_calls == 3
    assert j.stats.retries == 2 and j.stats.http_calls == 3


def test_429_exhausts_retries_with_exponential_backoff(tmp_path, monkeypatch):
    sleeps = []
    monkeypatch.setattr("hrlaif.judges.client.time.sleep", lambda s: sleeps.append(s))
    with FakeJudge(mode="always_a", fail_first=100, fail_status=429) as fj:
        j = Judge(cfg(fj, tmp_path, retries=3, backoff=1.0, backoff_max=3.0))
        with pytest.raises(JudgeUnavailable, match=r"unavailable after 4 attempts: RateLimitError \(HTTP 429\)") as e:
            j.choose(MSG)
        assert fj.chat_calls == 4
    assert isinstance(e.value, UserError)
    # 1, 2, 4 -> capped at 3, each with +-25% jitter
    assert [round(s / b, 2) for s, b in zip(sleeps, [1, 2, 3])] == pytest.approx([1, 1, 1], abs=0.26)


def test_hang_times_out_and_gives_up(tmp_path):
    # Two 0.3 s attempts take well under a second; the bound is generous (a busy shared runner),
    # and a client that ignored its timeout would wait for the server's 60 s hang twice.
    with FakeJudge(mode="hang", hang_s=60) as fj:
        j = Judge(cfg(fj, tmp_path, timeout=0.3, retries=1))
        t0 = time.perf_counter()
        with pytest.raises(JudgeUnavailable, match="APITimeoutError"):
            j.choose(MSG)
        assert time.perf_counter() - t0 < 30.0
        assert fj.chat_calls == 2


def test_400_is_not_retried(tmp_path):
    with FakeJudge(mode="always_a", fail_first=100, fail_status=400) as fj:
        j = Judge(cfg(fj, tmp_path))
        with pytest.raises(UserError, match=r"rejected the request: BadRequestError \(HTTP 400\)"):
            j.choose(MSG)
        assert fj.chat_calls == 1


def test_cache_second_run_makes_no_http_calls(tmp_path):
    batch = [P.pairwise_messages(f"q{i}", "short", "a much longer answer") for i in range(6)]
    with FakeJudge(mode="smart") as fj:
        first = Judge(cfg(fj, tmp_path)).choose_many(batch)
        n = fj.chat_calls
        assert n == 6
        j2 = Judge(cfg(fj, tmp_path))
        assert j2.choose_many(batch) == first
        assert fj.chat_calls == n and j2.stats.cache_hits == 6 and j2.stats.http_calls == 0
        # Different sampling parameters are a different request.
        j2.chat(batch[0], temperature=0.7)
        assert fj.chat_calls == n + 1
    assert [f[0] for f in first] == ["B"] * 6


def test_cache_safe_under_concurrent_writers(tmp_path):
    batch = [P.pairwise_messages(f"q{i % 5}", "x", "yy") for i in range(40)]
    with FakeJudge(mode="smart") as fj:
        judges = [Judge(cfg(fj, tmp_path, workers=8)) for _ in range(4)]
        results = [None] * 4
        threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, judges[k].choose_many(batch)))
                   for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(r == results[0] for r in results)
    files = list((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 5 and all(json.loads(f.read_text())["text"] == "B" for f in files)
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_choose_many_keeps_order_and_limits_concurrency(tmp_path):
    batch = [P.pairwise_messages(f"q{i}", "a" * (i % 2 + 1), "bb") for i in range(10)]
    with FakeJudge(mode="smart") as fj:
        j = Judge(cfg(fj, tmp_path, workers=3, cache_dir=""))
        active, peak = [0], [0]
        orig = j._client.chat.completions.create
        lock = threading.Lock()

        def tracked(**kw):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            try:
                time.sleep(0.02)
                return orig(**kw)
            finally:
                with lock:
                    active[0] -= 1

        j._client.chat.completions.create = tracked
        out = j.choose_many(batch)
    assert [o[0] for o in out] == ["A" if i % 2 else "B" for i in range(10)]
    assert 1 < peak[0] <= 3


def test_check_unreachable_and_bad_key(tmp_path, monkeypatch):
    with FakeJudge() as fj:
        url = fj.url
    with pytest.raises(UserError, match=f"judge unreachable at {url}"):
        Judge(JudgeConfig(url=url, model="x", key_env=None, timeout=2)).check()
    monkeypatch.setenv("HRLAIF_T_KEY", "sk-test-wrong")
    with FakeJudge(models_status=401) as fj:
        with pytest.raises(UserError, match=r"rejected the API key from \$HRLAIF_T_KEY"):
            Judge(JudgeConfig(url=fj.url, model="x", key_env="HRLAIF_T_KEY")).check()


def test_official_endpoint_without_key_is_a_user_error(monkeypatch):
    monkeypatch.delenv("HRLAIF_NO_SUCH_KEY", raising=False)
    with pytest.raises(UserError, match=r"export HRLAIF_NO_SUCH_KEY="):
        Judge(JudgeConfig(url=None, model="gpt-4o-mini", key_env="HRLAIF_NO_SUCH_KEY"))


def test_api_key_never_leaks(tmp_path, monkeypatch, run_cli, caplog, capfd):
    secret = "sk-SECRET-7f3a9c1e55d0"
    monkeypatch.setenv("HRLAIF_T_SECRET", secret)
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "hcache"))
    caplog.set_level(logging.DEBUG)
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"id": f"p{i}", "prompt": "Say hi", "category": "open_qa",
                                           "std_answer": None, "lang": "en", "responses": ["hi", "hello there"],
                                           "finished": [True, True]}) + "\n" for i in range(3)))
    outputs = []
    # 1) a judge that echoes request headers (Authorization included) in its error bodies
    with FakeJudge(mode="smart", fail_first=1000, fail_status=500, echo_headers=True) as fj:
        code, out, err = run_cli("label", "--samples", samples, "--mode", "basic", "--out", tmp_path / "o1",
                                 "--judge-url", fj.url, "--judge-model", "fake", "--judge-key-env", "HRLAIF_T_SECRET",
                                 "--judge-retries", "1", "--no-accuracy")
        sent = [{k.lower(): v for k, v in c[3].items()}.get("authorization") for c in fj.calls if c[0] == "POST"]
    assert code == 2 and "unavailable after" in err
    assert sent and all(s == f"Bearer {secret}" for s in sent)  # the key was really used
    outputs += [out, err]
    # 2) a good judge: summary, labels and cache are written
    with FakeJudge(mode="smart") as fj:
        code, out, err = run_cli("label", "--samples", samples, "--mode", "basic", "--out", tmp_path / "o2",
                                 "--judge-url", fj.url, "--judge-model", "fake", "--judge-key-env", "HRLAIF_T_SECRET")
        assert code == 0, err
        outputs += [out, err]
        j = Judge(JudgeConfig(url=fj.url, model="fake", key_env="HRLAIF_T_SECRET"))
        outputs += [repr(j), repr(j.config), str(j.stats)]
    # 3) an unreachable judge
    code, out, err = run_cli("label", "--samples", samples, "--mode", "basic", "--out", tmp_path / "o3",
                             "--judge-url", fj.url, "--judge-key-env", "HRLAIF_T_SECRET")
    assert code == 2 and "judge unreachable at" in err
    outputs += [out, err, caplog.text, *capfd.readouterr()]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "samples.jsonl"]
    assert any(p.parent.parent.name == "judge" for p in written)  # the cache is among them
    assert len(written) > 5
    for p in written:
        assert secret not in p.read_text(errors="replace"), p
    for text in outputs:
        assert secret not in text and "7f3a9c1e55d0" not in text
