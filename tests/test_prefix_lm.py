"""Shared-prefix KV caching gives lm-eval's log-likelihoods (tiny random model, fp32)."""
from __future__ import annotations

import random

import pytest
import torch

from hrlaif.evalsets.prefix_lm import PrefixCachingHFLM, prefix_groups

pytestmark = pytest.mark.host  # fp32 identities that depend on which kernels the CPU dispatches


def test_prefix_groups_share_only_long_prefixes_and_respect_limits():
    a = tuple(range(100)) + (1, 2)
    b = tuple(range(100)) + (3,)
    c = tuple(range(50)) + (9, 9)
    d = (7, 7, 7)
    groups = prefix_groups([a, b, c, d], limits=[101, 99, 51, 2], min_shared=32)
    by_rows = {tuple(sorted(idx)): p for p, idx in groups}
    assert by_rows[(0, 1, 2)] == 50  # c caps the shared part at its common prefix
    assert by_rows[(3,)] == 0        # nothing shared: runs in full
    groups = prefix_groups([a, b], limits=[101, 40], min_shared=32)
    assert groups == [(40, [0, 1])]  # the prefix stops before b's scored positions


@pytest.fixture(scope="module")
def lms(tiny_model_dir):
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return (HFLM(pretrained=model, tokenizer=tok, batch_size=3, device="cpu"),
            PrefixCachingHFLM(pretrained=model, tokenizer=tok, batch_size=3, device="cpu"))


def test_loglikelihoods_match_hflm(lms):
    from lm_eval.api.instance import Instance

    plain, cached = lms
    rng = random.Random(0)
    shots = "".join(f"Question {i}: what is {i} plus {i}?\nAnswer: {2 * i}\n\n" for i in range(8))
    reqs = []
    for q in range(7):
        ctx = shots + f"Question {q}: which option {'x' * rng.randint(1, 9)}?\nAnswer:"
        for cont in (" A", " B", " C", " D", " the longest answer of them all"):
            reqs.append(Instance("loglikelihood", {}, (ctx, cont), len(reqs)))
    reqs.append(Instance("loglikelihood", {}, ("Short unrelated context.", " yes"), len(reqs)))
    a = plain.loglikelihood(reqs, disable_tqdm=True)
    b = cached.loglikelihood(reqs, disable_tqdm=True)
    assert len(a) == len(b) == len(reqs)
    for (la, ga), (lb, gb) in zip(a, b):
        assert lb == pytest.approx(la, abs=1e-4, rel=1e-5) and ga == gb
    t = cached.token_counts  # the few-shot block ran once, not once per question
    assert t["prefix"] > 0 and t["prefix"] + t["suffix"] < t["requested"] / 3


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_generation_on_the_decoding_path_matches_hflm(tiny_model_dir, amp):
    """Evaluation's generation runs the decoder's linears on PPO's decoding path (hrlaif.core.decoding):
    the same greedy text as lm-eval's HFLM, in fp32 and under bf16 autocast."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    kw = {"pretrained": model, "tokenizer": tok, "batch_size": 3, "device": "cpu", "mixed_precision_dtype": amp}
    gen = {"until": ["\n\n"], "do_sample": False, "max_gen_toks": 12}
    reqs = [Instance("generate_until", {}, (f"Question {q}: what is {q} plus {'one ' * q}?\nAnswer:", gen), q)
            for q in range(4)]
    a = HFLM(**kw).generate_until(reqs, disable_tqdm=True)
    b = PrefixCachingHFLM(**kw).generate_until(reqs, disable_tqdm=True)
    assert a == b and any(a)
    assert all("forward" not in vars(m) for m in model.modules())  # the plain forwards are back


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_few_shot_generation_runs_the_shared_block_once_and_keeps_the_text(tiny_model_dir, amp, monkeypatch):
    """Generation prompts that share a few-shot block, of different lengths (left padding): the block
    runs once, is kept once for every row (hrlaif/core/prefix_attention.py), and the greedy text is
    lm-eval's HFLM's."""
    from hrlaif.core import prefix_attention

    used = []
    real = prefix_attention.shared_prefix_attention

    def spy(m, query, *a, **k):
        used.append((getattr(m, "_shared_prefix_layer", None) is not None, query.shape[0]))
        return real(m, query, *a, **k)
    monkeypatch.setattr(prefix_attention, "shared_prefix_attention", spy)
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    kw = {"pretrained": model, "tokenizer": tok, "batch_size": 4, "device": "cpu", "mixed_precision_dtype": amp}
    gen = {"until": ["\n\n"], "do_sample": False, "max_gen_toks": 10}
    shots = "".join(f"Question: what is {i} times {i + 3}?\nAnswer: {i * (i + 3)}\n\n" for i in range(8))
    reqs = [Instance("generate_until", {}, (shots + f"Question: what is {q} plus {'one ' * q}?\nAnswer:", gen), q)
            for q in range(1, 6)]
    a = HFLM(**kw).generate_until(reqs, disable_tqdm=True)
    lm = PrefixCachingHFLM(**kw)
    b = lm.generate_until(reqs, disable_tqdm=True)
    assert a == b and any(a)
    block = len(tok(shots)["input_ids"])
    # batches of 4 and 1 rows: the 4 share the block (and the next question's first words), run once,
    # not once per row; a single row has nothing to share
    assert block - 2 <= lm.token_counts["prefix"] < 2 * block
    assert all("forward" not in vars(m) for m in model.modules())
    # every pass of the 4-row batch reads the prefix kept once; the single row decodes on the same
    # attention without one; and the model is back on SDPA
    assert all(shared for shared, rows in used if rows > 1) and any(shared for shared, _ in used)
    assert model.config._attn_implementation == "sdpa"
