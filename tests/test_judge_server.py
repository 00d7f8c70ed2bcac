"""The embedded judge under faults: a backend that crashes on its first request, a server that
dies mid-run, and llama.cpp's repacking into extra buffer types (the AMX crash) turned off."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from hrlaif.core.errors import UserError
from hrlaif.core.store import read_json, read_jsonl
from hrlaif.judges import server as judge_server
from hrlaif.judges.server import ServerConfig, judge_session
from tests.test_labelling import sample, write_samples

FAKE = (sys.executable, str(Path(__file__).with_name("fake_llama_server.py")))


@pytest.fixture()
def fake_server(monkeypatch, tmp_path):
    """Every embedded judge started in this test is the scripted server of fake_llama_server.py."""
    monkeypatch.setattr(judge_server, "DEFAULT_COMMAND", FAKE)
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "hcache"))

    def configure(crash_on: int = 0, answered: Path | None = None):
        monkeypatch.setenv("FAKE_LLAMA_CRASH_ON", str(crash_on))
        if answered is None:
            monkeypatch.delenv("FAKE_LLAMA_ANSWERED", raising=False)
        else:
            monkeypatch.setenv("FAKE_LLAMA_ANSWERED", str(answered))
    return configure


def test_extra_buffer_types_are_disabled_in_the_launcher():
    import llama_cpp.llama_cpp as lib

    from hrlaif.judges.llama_launcher import disable_extra_buffer_types

    original = lib.llama_model_default_params
    assert original().use_extra_bufts  # llama.cpp's default: repack (AMX on hosts that have it)
    try:
        disable_extra_buffer_types()
        assert lib.llama_model_default_params().use_extra_bufts is False
    finally:
        lib.llama_model_default_params = original


def test_backend_that_crashes_on_first_request_fails_startup_with_cause(fake_server, tmp_path):
    # GET /models answers, the first chat request kills the process: the AMX failure's shape.
    fake_server(crash_on=1)
    log = tmp_path / "stage" / "judge-server.log"
    with pytest.raises(UserError) as e:
        with judge_session(None, ServerConfig(log_path=str(log), startup_timeout_s=60)):
            pass
    msg = str(e.value)
    assert "failed its first chat request" in msg and "killed by signal SIGSEGV" in msg
    assert str(log) in msg and "crashing on chat request 1" in msg  # the log's last lines
    assert "\n" not in msg
    assert "crashing on chat request 1" in log.read_text()  # the log is kept for the user


def test_startup_crash_is_exit_2_from_the_cli(fake_server, tmp_path, run_cli):
    fake_server(crash_on=1)
    s = write_samples(tmp_path / "s.jsonl", [sample("o1", "open_qa", ["a", "bb"])])
    code, _, err = run_cli("label", "--samples", s, "--mode", "basic", "--out", tmp_path / "out", "--no-accuracy")
    assert code == 2 and "killed by signal SIGSEGV" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert (tmp_path / "out" / "judge-server.log").exists()


def test_server_dying_mid_run_is_noticed_at_once_and_rerun_repeats_nothing(fake_server, tmp_path, run_cli,
                                                                           caplog):
    caplog.set_level(logging.INFO, logger="hrlaif.judges.client")
    rows = [sample(f"o{i}", "open_qa", ["a" * (i + 1), f"b{i}", f"cc{i}"]) for i in range(5)]  # 3 pairs x 2 orders
    s = write_samples(tmp_path / "s.jsonl", rows)
    out = tmp_path / "out"
    first, second = tmp_path / "answered1.txt", tmp_path / "answered2.txt"
    # Request 1 is the start-up probe; 6 judgements per prompt, so the crash lands in prompt 3.
    fake_server(crash_on=1 + 6 * 2 + 3, answered=first)
    # --audit-repeat 0: the judge audit's repeatability requests bypass the cache on purpose
    code, _, err = run_cli("label", "--samples", s, "--mode", "basic", "--out", out, "--workers", "1",
                           "--no-accuracy", "--audit-repeat", "0")
    assert code == 2 and "died mid-run" in err and "killed by signal SIGSEGV" in err
    assert str(out / "judge-server.log") in err and "Traceback" not in err
    assert "judge retry" not in caplog.text  # noticed on the failed request, not after retries
    assert [r["id"] for r in read_jsonl(out / "labels.jsonl")] == ["o0", "o1"]

    fake_server(crash_on=0, answered=second)
    code, _, err = run_cli("label", "--samples", s, "--mode", "basic", "--out", out, "--no-accuracy",
                           "--audit-repeat", "0")
    assert code == 0, err
    done = set(first.read_text().split())
    again = set(second.read_text().split())
    assert len(done) == 1 + 6 * 2 + 2  # probe, two prompts, two judgements of the third
    # Only the start-up probe may repeat: every finished judgement came from the cache.
    assert len(again & done) == 1
    assert sorted(r["id"] for r in read_jsonl(out / "labels.jsonl")) == [f"o{i}" for i in range(5)]
    assert read_json(out / "summary.json")["labelling"]["cache_hits"] >= 2


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_embedded_server_killed_mid_run(tmp_path, run_cli, monkeypatch):
    """kill -9 the real llama.cpp server while `hrlaif label` runs: exit 2 at once, log kept,
    and the rerun completes from the cache."""
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "hcache"))
    rows = [sample(f"o{i}", "open_qa", [f"Answer {i}: yes.", "No idea.", f"It depends on {i}."],
                   prompt=f"Is {i} a small number?") for i in range(6)]
    s = write_samples(tmp_path / "s.jsonl", rows)
    out = tmp_path / "out"
    labels = out / "labels.jsonl"

    def killer():
        deadline = time.time() + 300
        while time.time() < deadline:
            if labels.exists() and labels.read_text().strip():
                os.killpg(judge_server.last_pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    code, _, err = run_cli("label", "--samples", s, "--mode", "basic", "--out", out, "--workers", "1",
                           "--no-accuracy")
    t.join(5)
    assert code == 2 and "died mid-run" in err and "killed by signal SIGKILL" in err, err
    log = (out / "judge-server.log").read_text()
    assert "use_extra_bufts=False" in log and "CPU_REPACK" not in log  # no repacking, on any CPU
    finished = len(read_jsonl(labels))
    assert 1 <= finished < 6
    code, _, err = run_cli("label", "--samples", s, "--mode", "basic", "--out", out, "--workers", "1",
                           "--no-accuracy")
    assert code == 0, err
    summ = read_json(out / "summary.json")
    assert summ["skipped_already_labelled"] == finished and summ["prompts"] == 6
    assert summ["labelling"]["cache_hits"] >= 0 and summ["judge"]["server_log"] == str(out / "judge-server.log")


def test_embedded_weights_are_chosen_from_the_cpu_flags(monkeypatch):
    from hrlaif.core import hardware

    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert judge_server.resolve_weights("auto") == "bf16"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "amx_tile", "amx_bf16", "avx512_bf16"}))
    assert judge_server.resolve_weights("auto") == "bf16"  # AMX hosts too: no repacking, plain avx512-bf16 dots
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert judge_server.resolve_weights("auto") == "q8_0"  # AVX2-only: int8 dots, faster than Q4_1's
    assert judge_server.resolve_weights("q4_1") == "q4_1"
    assert judge_server.resolve_weights("f16") == "f16"
    with pytest.raises(UserError, match="embedded judge weights"):
        judge_server.resolve_weights("int3")


# Questions whose answer the embedded judge's Q4_1 file picks with a clear margin (P > 0.6 on every
# host type measured), so that the same choice is an invariant and not a coin toss.
CLEAR_CHOICES = ["Which is a fruit? Reply with one letter.\nA. apple\nB. rock",
                 "Which number is larger? Reply with one letter.\nA. 1000\nB. 2"]
# Significant bits of each float format: round-to-nearest puts every weight within 2**-p of its
# value (relative), plus half the smallest subnormal step for f16's small values. This bound follows
# from the formats alone, so it holds on every CPU.
def _served_logprobs(patched: bool) -> list[tuple[str, list]]:
    """Three judge-like chat completions with top logprobs (the second shares the first's prefix, the
    third repeats the first) on one in-process Llama, as the launcher's server would answer them."""
    import llama_cpp.llama_cpp as lib
    from llama_cpp import llama as L

    from hrlaif.core.models import embedded_gguf_path
    from hrlaif.judges import llama_launcher

    saved = (lib.llama_model_default_params, L.Llama.eval, L.Llama.__dict__["logits_to_logprobs"],
             L.Llama._create_completion)
    saved_sorted = L.__dict__.get("sorted")
    try:
        llama_launcher.disable_extra_buffer_types()
        if patched:
            llama_launcher.keep_only_needed_logits()
        llm = L.Llama(model_path=str(embedded_gguf_path()), logits_all=True, n_ctx=1024, n_threads=2, verbose=False)
        asks = [CLEAR_CHOICES[0], CLEAR_CHOICES[0] + " Think about it.", CLEAR_CHOICES[0]]
        out = []
        for q in asks:
            r = llm.create_chat_completion([{"role": "user", "content": q}], max_tokens=4, temperature=0.0,
                                           logprobs=True, top_logprobs=5)
            ch = r["choices"][0]
            out.append((ch["message"]["content"], [[(t["token"], t["logprob"]) for t in tok["top_logprobs"]]
                                                   for tok in ch["logprobs"]["content"]]))
        if patched:  # an echoed prompt's logprobs would read rows never computed: refused, not made up
            with pytest.raises(ValueError, match="echoed prompt"):
                llm.create_completion(asks[0], max_tokens=1, echo=True, logprobs=2)
        return out
    finally:
        lib.llama_model_default_params, L.Llama.eval = saved[:2]
        L.Llama.logits_to_logprobs, L.Llama._create_completion = saved[2:]
        if saved_sorted is None:
            L.__dict__.pop("sorted", None)
        else:
            L.sorted = saved_sorted


def test_skipping_prompt_logits_serves_the_same_logprobs():
    """The launcher asks llama.cpp for the logits a completion reads (after the last prompt token and each
    generated one), not every prompt token's: the served text, top tokens and their logprobs are the same,
    with a shared prefix reused from the KV cache and with the whole prompt cached."""
    plain, lean = _served_logprobs(False), _served_logprobs(True)
    for (text_a, tops_a), (text_b, tops_b) in zip(plain, lean):
        assert text_a == text_b
        for top_a, top_b in zip(tops_a, tops_b, strict=True):
            assert [t for t, _ in top_a] == [t for t, _ in top_b]
            assert max(abs(a - b) for (_, a), (_, b) in zip(top_a, top_b)) < 1e-3


def test_numpy_sort_of_logprob_pairs_is_pythons_sort():
    """The launcher's `sorted` for llama-cpp-python's top-logprob pick: the same list as Python's sorted,
    ties (equal logprobs, ordered by token id), -inf and short or other inputs included."""
    import numpy as np

    from hrlaif.judges.llama_launcher import sorted_pairs

    rng = np.random.default_rng(0)
    row = np.round(rng.normal(size=49152), 2).astype(np.float32)  # rounding makes many ties
    row[:7] = -np.inf
    for reverse in (True, False):
        pairs = list(zip(row, range(len(row))))
        assert sorted_pairs(zip(row, range(len(row))), reverse=reverse) == sorted(pairs, reverse=reverse)
    for other in ([3, 1, 2], [(1.0, 2), (1.0, 1)], ["b", "a"] * 600, [(0.5, "x")] * 2000):
        assert sorted_pairs(iter(other), reverse=True) == sorted(other, reverse=True)
    pairs = [(2, 1), (1, 2)] * 600
    assert sorted_pairs(pairs, key=lambda t: t[1]) == sorted(pairs, key=lambda t: t[1])


FLOAT_BITS = {"bf16": (8, 0.0), "f16": (11, 2.0 ** -25)}


def _rounding_bound(fmt: str, ref):
    """Per weight, how far `fmt`'s copy of the Q4_1 values `ref` may be, from the format alone. Q8_0 (a
    requantisation, not a float copy) stores each block of 32 as round(x / d) * d16, d = the block's
    largest |x| / 127 and d16 its f16 rounding: within d / 2 + 127 d 2^-11."""
    import numpy as np

    if fmt == "q8_0":
        amax = np.abs(ref).reshape(-1, 32).max(axis=1, keepdims=True)
        return np.broadcast_to(amax / 127 * (0.5 + 127 * 2.0 ** -11), (amax.shape[0], 32)).reshape(ref.shape)
    bits, tiny = FLOAT_BITS[fmt]
    return 2.0 ** -bits * np.abs(ref) + tiny


def _choices(weights: str, log: Path) -> list[tuple[str, float]]:
    from hrlaif.judges.config import JudgeConfig
    from hrlaif.judges.server import session_for

    with session_for(JudgeConfig(cache_dir="", embedded_weights=weights), str(log)) as judge:
        return [(c, p["A"]) for c, p in (judge.choose([{"role": "user", "content": q}], ("A", "B"))
                                         for q in CLEAR_CHOICES)]


@pytest.fixture(scope="module")
def q4_1_choices(tmp_path_factory):
    """What the shipped Q4_1 file answers (one server start for both float formats)."""
    return _choices("q4_1", tmp_path_factory.mktemp("q4") / "q4_1.log")


@pytest.mark.host
@pytest.mark.parametrize("fmt,ggml_type", [("bf16", 30), ("f16", 1), ("q8_0", 8)])
def test_a_float_copy_of_the_embedded_judge_serves_the_same_choice(tmp_path, monkeypatch, fmt, ggml_type,
                                                                    q4_1_choices, host_proof):
    """The dequantised (q8_0: requantised) copy is written once into the cache and holds exactly the Q4_1
    weights up to the format's rounding (checked tensor by tensor against gguf's own dequantiser); the real
    server on it picks what the shipped file picks. Its probabilities are not compared with a fixed
    tolerance: llama.cpp is compiled for each host, and Q4_1 serving rounds the activations to 8 bits
    with host-specific kernels (P(A) moved by 0.045 here and 0.075 on an AVX2-only host)."""
    import gguf as gguf_reader  # transformers' GGUF dependency
    import numpy as np
    from gguf.quants import dequantize

    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "hcache"))
    path = judge_server.embedded_weights(fmt)
    assert path.is_file() and path.parent == tmp_path / "hcache" / "judge-gguf" and fmt in path.name
    assert judge_server.embedded_weights(fmt) == path  # made once
    copy = gguf_reader.GGUFReader(str(path)).tensors
    shipped = {t.name: t for t in gguf_reader.GGUFReader(str(judge_server.embedded_weights("q4_1"))).tensors}
    types = {int(t.tensor_type) for t in copy}
    assert ggml_type in types and 3 not in types  # float matrices, no Q4_1 left
    assert {t.name for t in copy} == set(shipped)
    for t in copy:
        ref = dequantize(shipped[t.name].data, shipped[t.name].tensor_type).astype(np.float64)
        got = dequantize(t.data, t.tensor_type).astype(np.float64)
        excess = np.abs(got - ref) - _rounding_bound(fmt, ref)
        assert excess.max() <= 1e-12, (t.name, float(excess.max()))
    got = _choices(fmt, tmp_path / f"{fmt}.log")
    assert [c for c, _ in got] == [c for c, _ in q4_1_choices]
    assert str(path) in (tmp_path / f"{fmt}.log").read_text()
    bound = "d/2 + 127 d 2^-11 (d: its block's largest weight / 127)" if fmt == "q8_0" else f"2^-{FLOAT_BITS[fmt][0]}"
    host_proof(f"{fmt} copy: every weight within {bound} of Q4_1's; same choices; P(A) "
               + ", ".join(f"{a:.3f} vs Q4_1 {b:.3f}" for (_, a), (_, b) in zip(got, q4_1_choices)))
