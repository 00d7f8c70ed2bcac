"""SFT: data loading, response-only loss mask, truncation, training loop, NaN guard, CLI."""
from __future__ import annotations

import json
import math

import pytest

from hrlaif.core.errors import UserError
from hrlaif.trainers.data_formats import encode_chat, load_instruction_data, normalise_example

ALPACA = [
    {"instruction": "Name a primary colour.", "input": "", "output": "Red is a primary colour."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "2 + 3 = 5."},
    {"instruction": "Say hello in French.", "input": "", "output": "Bonjour !"},
    {"instruction": "What is the opposite of hot?", "input": "", "output": "Cold."},
]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return p


# ------------------------------------------------------------------ data formats

def test_three_formats_normalise_to_the_same_messages(tmp_path):
    alpaca = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
    share = {"conversations": [{"from": "human", "value": "Add the numbers.\n\n2 and 3"},
                               {"from": "gpt", "value": "5"}]}
    msgs = {"messages": [{"role": "user", "content": "Add the numbers.\n\n2 and 3"},
                         {"role": "assistant", "content": "5"}]}
    want = [{"role": "user", "content": "Add the numbers.\n\n2 and 3"}, {"role": "assistant", "content": "5"}]
    assert normalise_example(alpaca, "x") == normalise_example(share, "x") == normalise_example(msgs, "x") == want
    # JSONL works too, and the loader keeps an optional category.
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({**alpaca, "category": "math"}) for _ in range(3)) + "\n", encoding="utf-8")
    rows = load_instruction_data(p)
    assert len(rows) == 3 and rows[0]["messages"] == want and rows[0]["category"] == "math"


def test_real_alpaca_demo_files_load(shared_data):
    for lang in ("en", "zh"):
        rows = load_instruction_data(shared_data / "instruct" / f"alpaca_{lang}_demo.json")
        assert len(rows) > 100
        assert all(r["messages"][-1]["role"] == "assistant" for r in rows)


@pytest.mark.parametrize("content,msg", [
    (b"[]", "contains no examples"),
    (b"", "is empty"),
    (b'[{"instruction": "x", "output": "y"},', "not valid JSON"),
    (b'[{"prompt": "x", "answer": "y"}]', "neither alpaca fields"),
    (b'[{"instruction": "x"}]', "need both `instruction` and `output`"),
    (b'[{"messages": [{"role": "robot", "content": "x"}]}]', "unknown role"),
    (b'[{"conversations": [{"from": "human", "value": "hi"}]}]', "no assistant turn"),
    (b'{"instruction": "x", "output": "y"}\n{"instruction": ', "not valid JSONL"),
    ('[{"instruction": "caf\u00e9", "output": "y"}]'.encode("latin-1"), "not UTF-8"),
])
def test_bad_instruction_data_is_a_user_error(tmp_path, content, msg):
    p = tmp_path / "bad.json"
    p.write_bytes(content)
    with pytest.raises(UserError, match=msg):
        load_instruction_data(p)


def test_missing_data_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_instruction_data(tmp_path / "nope.json")


# ------------------------------------------------------------------ masking

def test_loss_mask_covers_only_the_response(tok):
    messages = normalise_example(ALPACA[1], "x")
    ids, labels, cut = encode_chat(tok, messages, max_len=4096)
    assert not cut and len(ids) == len(labels)
    # The token stream is exactly the chat template's rendering.
    assert tok.decode(ids) == tok.apply_chat_template(messages, tokenize=False)
    trained = [t for t, l in zip(ids, labels) if l != -100]
    assert all(l in (-100, t) for t, l in zip(ids, labels))
    # Trained tokens are the reply plus the end-of-turn marker (so the model learns to stop) ...
    assert tok.decode(trained).startswith("2 + 3 = 5.")
    assert tok.eos_token_id in trained
    # ... and every token before the reply (system, user turn, assistant header) is masked.
    first = next(i for i, l in enumerate(labels) if l != -100)
    prompt_text = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert tok.decode(ids[:first]) == prompt_text
    assert all(l == -100 for l in labels[:first])
    assert all(l != -100 for l in labels[first:])


def test_multi_turn_masks_every_user_turn(tok):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"},
                {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye friend"}]
    ids, labels, _ = encode_chat(tok, messages, max_len=4096)
    trained_text = tok.decode([t for t, l in zip(ids, labels) if l != -100])
    assert "Hello there" in trained_text and "Goodbye friend" in trained_text
    assert "Hi" not in trained_text and "Bye" not in trained_text


def test_truncation_is_counted_not_fatal(tok):
    from hrlaif.trainers.sft import tokenize_examples

    examples = [{"messages": normalise_example(a, "x")} for a in ALPACA]
    enc = [encode_chat(tok, e["messages"], 4096) for e in examples]
    prompt_lens = [next(i for i, l in enumerate(labels) if l != -100) for _, labels, _ in enc]
    # Keep exactly the first reply token of the longest prompt: long ones are cut, none dropped.
    limit = max(prompt_lens) + 1
    rows, stats = tokenize_examples(examples, tok, max_len=limit)
    n_long = sum(len(ids) > limit for ids, _, _ in enc)
    assert n_long >= 2 and stats == {"n_examples": 4, "n_used": 4, "truncated": n_long, "dropped": 0}
    assert all(len(r["input_ids"]) == min(limit, len(ids)) for r, (ids, _, _) in zip(rows, enc))
    # A limit inside every prompt leaves no reply token: examples are dropped (and counted), no crash.
    rows, stats = tokenize_examples(examples, tok, max_len=min(prompt_lens) - 1)
    assert stats["dropped"] == 4 and rows == []


# ------------------------------------------------------------------ training

def _metrics(out):
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


def test_sft_loss_decreases_and_checkpoint_reloads(tiny_model_dir, tmp_path):
    import torch

    from hrlaif.core.models import load_causal_lm
    from hrlaif.trainers.sft import SFTConfig, train_sft

    data = _write(tmp_path, "d.json", ALPACA)
    out = train_sft(SFTConfig(model=str(tiny_model_dir), data=str(data), out=str(tmp_path / "sft"),
                              epochs=12, lr=2e-2, batch_size=2, max_len=128, seed=0, min_lr_ratio=1.0))
    m = _metrics(out)
    assert [r["step"] for r in m] == list(range(1, 25))  # 12 epochs x 2 batches
    first = sum(r["loss"] for r in m[:2]) / 2
    last = sum(r["loss"] for r in m[-2:]) / 2
    assert all(math.isfinite(r["loss"]) for r in m)
    assert last < first * 0.8, (first, last)
    # The saved checkpoint loads through the harness and differs from the base weights.
    model, tok, ident = load_causal_lm(str(out))
    base, _, base_ident = load_causal_lm(str(tiny_model_dir))
    assert ident["weights_sha"] != base_ident["weights_sha"]
    assert tok.chat_template
    # ... and really is the trained model: its loss on the data is the trained loss, not the base one.
    from hrlaif.trainers.data_formats import load_instruction_data
    from hrlaif.trainers.sft import collate, response_loss, tokenize_examples
    rows, _ = tokenize_examples(load_instruction_data(data), tok, 128)
    ids, mask, labels = collate(rows, tok.pad_token_id)
    with torch.no_grad():
        l_trained = response_loss(model(input_ids=ids, attention_mask=mask).logits, labels).item()
        l_base = response_loss(base(input_ids=ids, attention_mask=mask).logits, labels).item()
    assert l_trained < l_base * 0.8
    summary = json.loads((out / "sft_config.json").read_text())
    assert summary["data"] == {"n_examples": 4, "n_used": 4, "truncated": 0, "dropped": 0}
    assert summary["summary"]["steps"] == 24


def test_sft_is_seeded(tiny_model_dir, tmp_path):
    from hrlaif.trainers.sft import SFTConfig, train_sft

    data = _write(tmp_path, "d.json", ALPACA)
    runs = [_metrics(train_sft(SFTConfig(model=str(tiny_model_dir), data=str(data), out=str(tmp_path / f"r{i}"),
                                         max_steps=3, lr=1e-2, batch_size=2, seed=7, zero_stage=2)))
            for i in range(2)]
    assert [r["loss"] for r in runs[0]] == [r["loss"] for r in runs[1]]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    import hrlaif.trainers.sft as sft
    from hrlaif.core.models import load_causal_lm

    real, calls = sft.response_loss, {"n": 0}

    def flaky(logits, labels):  # the 4th micro-batch diverges
        calls["n"] += 1
        loss = real(logits, labels)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(sft, "response_loss", flaky)
    data = _write(tmp_path, "d.json", ALPACA)
    out = tmp_path / "sft"
    with pytest.raises(UserError, match=r"loss became nan at step 4.*last good checkpoint \(step 2\)"):
        sft.train_sft(sft.SFTConfig(model=str(tiny_model_dir), data=str(data), out=str(out), epochs=5,
                                    lr=1e-2, batch_size=2, save_every=2))
    assert len(_metrics(out)) == 3
    model, _, _ = load_causal_lm(str(out))  # the step-2 checkpoint
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not (out / "sft_config.json").exists()  # the run did not finish


def test_cli_sft(tiny_model_dir, tmp_path, run_cli):
    data = _write(tmp_path, "d.json", ALPACA)
    code, out, err = run_cli("sft", "--model", tiny_model_dir, "--data", data, "--out", tmp_path / "o",
                             "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3", "--zero-stage", "3")
    assert code == 0, err
    assert (tmp_path / "o" / "config.json").exists() and len(_metrics(tmp_path / "o")) == 2
    # ZeRO-3 partitions parameters; the saved checkpoint must hold the gathered, full tensors.
    from hrlaif.core.models import load_causal_lm
    model, _, _ = load_causal_lm(str(tmp_path / "o"))
    base, _, _ = load_causal_lm(str(tiny_model_dir))
    for (name, p), (_, q) in zip(model.named_parameters(), base.named_parameters()):
        assert p.shape == q.shape and p.abs().sum() > 0, name
    bad = tmp_path / "bad.json"
    bad.write_text("[]", encoding="utf-8")
    code, out, err = run_cli("sft", "--model", tiny_model_dir, "--data", bad, "--out", tmp_path / "o2")
    assert code == 2 and "contains no examples" in err and "Traceback" not in err
