"""Sampling: format, determinism for a fixed seed, finished[] flags, K >= 2."""
from __future__ import annotations

import json

import pytest

from hrlaif.core.errors import UserError
from hrlaif.core.store import read_jsonl
from hrlaif.trainers.sampling import SampleConfig, generate_k, sample_responses

PROMPTS = [
    {"id": "p1", "prompt": "What is 2 + 2?", "category": "math", "std_answer": "4", "lang": "en"},
    {"id": "p2", "prompt": "Name a fruit.", "category": "open_qa", "std_answer": None, "lang": "en"},
    {"id": "p3", "prompt": "用一句话介绍北京。", "category": "open_qa", "std_answer": None, "lang": "zh"},
]


@pytest.fixture()
def prompts_file(tmp_path):
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in PROMPTS), encoding="utf-8")
    return p


def _cfg(model, prompts, out, **kw):
    base = dict(model=str(model), prompts=str(prompts), out=str(out), k=3, max_new_tokens=6, batch_size=2, seed=11)
    return SampleConfig(**{**base, **kw})


def test_samples_format_and_determinism(tiny_model_dir, prompts_file, tmp_path):
    a = read_jsonl(sample_responses(_cfg(tiny_model_dir, prompts_file, tmp_path / "a.jsonl")))
    b = read_jsonl(sample_responses(_cfg(tiny_model_dir, prompts_file, tmp_path / "b.jsonl")))
    c = read_jsonl(sample_responses(_cfg(tiny_model_dir, prompts_file, tmp_path / "c.jsonl", seed=12)))
    assert a == b  # same seed -> byte-identical samples
    assert [r["responses"] for r in a] != [r["responses"] for r in c]
    assert [r["id"] for r in a] == ["p1", "p2", "p3"]
    for row, src in zip(a, PROMPTS):
        assert {k: row[k] for k in src} == src  # prompt fields carried through
        assert len(row["responses"]) == 3 and len(row["finished"]) == 3
        assert all(isinstance(x, str) and x for x in row["responses"])
        # A random 49k-vocab model essentially never emits EOS within 6 tokens.
        assert row["finished"] == [False, False, False]
    # The K responses of one prompt are different samples, not copies.
    assert len(set(a[0]["responses"])) == 3
    meta = json.loads((tmp_path / "a.meta.json").read_text())
    assert meta["n_prompts"] == 3 and meta["n_responses"] == 9


def test_finished_flags_eos(tiny_model_dir):
    import torch

    from hrlaif.core.models import load_causal_lm

    model, tok, _ = load_causal_lm(str(tiny_model_dir))
    # Declare every token an end-of-sequence token: each response stops at its first token.
    model.generation_config.eos_token_id = list(range(model.config.vocab_size))
    torch.manual_seed(0)
    out = generate_k(model, tok, ["Hi", "Tell me a story about a dragon"], SampleConfig(k=2, max_new_tokens=5))
    assert out == [(["", ""], [True, True]), (["", ""], [True, True])]


def test_k_below_two_is_a_user_error(tiny_model_dir, prompts_file, tmp_path, run_cli):
    with pytest.raises(UserError, match="k: must be >= 2"):
        sample_responses(_cfg(tiny_model_dir, prompts_file, tmp_path / "x.jsonl", k=1))
    code, out, err = run_cli("sample", "--model", tiny_model_dir, "--prompts", prompts_file, "--k", "1",
                             "--out", tmp_path / "x.jsonl")
    assert code == 2 and "--k: must be >= 2" in err
    assert not (tmp_path / "x.jsonl").exists()


def test_bad_prompts_file(tiny_model_dir, tmp_path, run_cli):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "a", "text": "no prompt field"}\n', encoding="utf-8")
    code, _, err = run_cli("sample", "--model", tiny_model_dir, "--prompts", p, "--k", "2",
                           "--out", tmp_path / "s.jsonl")
    assert code == 2 and "no `prompt` field" in err
    p.write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', encoding="utf-8")
    code, _, err = run_cli("sample", "--model", tiny_model_dir, "--prompts", p, "--k", "2",
                           "--out", tmp_path / "s.jsonl")
    assert code == 2 and "duplicate prompt id" in err


def test_cli_sample(tiny_model_dir, prompts_file, tmp_path, run_cli):
    code, out, err = run_cli("sample", "--model", tiny_model_dir, "--prompts", prompts_file, "--k", "2",
                             "--max-new-tokens", "4", "--out", tmp_path / "s.jsonl", "--limit", "2")
    assert code == 0, err
    rows = read_jsonl(tmp_path / "s.jsonl")
    assert len(rows) == 2 and all(len(r["responses"]) == 2 for r in rows)


def test_each_prompt_is_computed_once_for_its_k_samples(tiny_model_dir):
    """`prefill_once`: the decoder runs each left-padded prompt once (n rows, not n*K), and the K rows' first
    decode step then sees what a prompt pass over the K copies gives: the same logits and the same cached
    keys and values, up to fp32 rounding (a prompt pass and a decode step are different kernels). Then
    generate continuing that cache picks the greedy tokens of a generate call over the K copies."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hrlaif.core.decoding import growing_cache
    from hrlaif.core.tensors import position_ids
    from hrlaif.trainers.sampling import prefill_once

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.padding_side = "left"
    enc = tok(["a much longer prompt than the others", "short", "middling prompt"], return_tensors="pt",
              padding=True)
    ids, mask, k = enc["input_ids"], enc["attention_mask"], 3
    rows = []
    hook = model.get_decoder().embed_tokens.register_forward_hook(lambda m, i, o: rows.append(tuple(i[0].shape)))
    eps = torch.finfo(torch.float32).eps
    with torch.no_grad():
        want_kw = growing_cache(model, 4)
        kmask = mask.repeat_interleave(k, 0)
        want = model(input_ids=ids.repeat_interleave(k, 0), attention_mask=kmask, position_ids=position_ids(kmask),
                     use_cache=True, **want_kw).logits[:, -1]
        got_kw = growing_cache(model, 4)
        cache = next(iter(got_kw.values()))
        prefill_once(model, ids, mask, k, cache)
        got = model(input_ids=ids[:, -1:].repeat_interleave(k, 0), attention_mask=kmask,
                    position_ids=position_ids(kmask)[:, -1:], use_cache=True, **got_kw).logits[:, -1]
    hook.remove()
    n, width = ids.shape
    assert rows == [(n * k, width), (n, width - 1), (n * k, 1)]  # K copies in full; each prompt once, then a row
    assert torch.allclose(got, want, rtol=0, atol=float(64 * eps * want.abs().max()))
    real = kmask.bool()  # padding positions hold whatever: nothing reads them
    for a, b in zip(next(iter(want_kw.values())).layers, cache.layers):
        for x, y in ((a.keys, b.keys), (a.values, b.values)):
            x, y = x.transpose(1, 2)[:, :width][real], y.transpose(1, 2)[:, :width][real]
            assert torch.allclose(x, y, rtol=0, atol=float(64 * eps * x.abs().max()))
    with torch.no_grad():  # the sample stage's call, greedy: the tokens of a call over the K copies
        plain = model.generate(input_ids=ids.repeat_interleave(k, 0), attention_mask=kmask, do_sample=False,
                               max_new_tokens=6, pad_token_id=tok.pad_token_id, eos_token_id=None,
                               **growing_cache(model, 6))
        cache_kw = growing_cache(model, 7)
        prefill_once(model, ids, mask, k, next(iter(cache_kw.values())))
        once = model.generate(input_ids=ids.repeat_interleave(k, 0), attention_mask=kmask, do_sample=False,
                              max_new_tokens=6, pad_token_id=tok.pad_token_id, eos_token_id=None, **cache_kw)
    assert torch.equal(once, plain)
