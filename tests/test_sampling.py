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
