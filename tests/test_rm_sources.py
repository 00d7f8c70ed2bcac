"""Reward models from the ecosystem: an HF sequence classifier as PPO's reward model, with the
actor's tokenizer (ids pass through) or another one (texts re-tokenised), and `hrlaif eval-rm`
on hh-rlhf pairs and on a run's held-out pairs."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch


def _seqcls(tok, out: Path, seed: int) -> Path:
    from transformers import LlamaConfig, LlamaForSequenceClassification
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, num_labels=1,
                      pad_token_id=tok.pad_token_id, architectures=["LlamaForSequenceClassification"])
    model = LlamaForSequenceClassification(cfg)
    with torch.no_grad():
        model.score.weight.normal_(0, 1.0)  # scores that differ between responses
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def same_tok_rm(tiny_model_dir, tmp_path_factory) -> Path:
    """A 1-label Llama classifier with the actor's (SmolLM2) tokenizer."""
    from transformers import AutoTokenizer
    return _seqcls(AutoTokenizer.from_pretrained(tiny_model_dir), tmp_path_factory.mktemp("seqcls") / "same", 1)


@pytest.fixture(scope="module")
def char_tok_rm(tmp_path_factory, char_tokenizer) -> Path:
    """A 1-label classifier with its own character-level tokenizer and chat template."""
    return _seqcls(char_tokenizer, tmp_path_factory.mktemp("seqcls") / "chars", 2)


def _prompts(path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Say something about {i} apples."}) + "\n"
                            for i in range(6)))
    return path


def _trainer(model, rm, tmp_path, **kw):
    from hrlaif.trainers.configs import PPOConfig
    from hrlaif.trainers.ppo import PPOTrainer
    cfg = PPOConfig(model=str(model), reward_model=str(rm), out=str(tmp_path / "out"),
                    prompts=str(_prompts(tmp_path / "p.jsonl")), steps=1, batch_size=4, mini_batch_size=2,
                    ppo_epochs=1, max_new_tokens=6, drift_every=0, precision="fp32", seed=3, **kw)
    return PPOTrainer(cfg)


def test_hf_classifier_with_the_actors_tokenizer_reads_the_rollout_ids(tiny_model_dir, same_tok_rm, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from hrlaif.trainers.experience import reward_inputs
    from hrlaif.trainers.models import SequenceClassifierRM
    t = _trainer(tiny_model_dir, same_tok_rm, tmp_path)
    assert isinstance(t.reward_model, SequenceClassifierRM) and t.bridge is None
    ro = t.rollout(0, lambda name: contextlib.nullcontext())
    # the same numbers as the classifier run by hand on the rollout's own token ids
    clf = AutoModelForSequenceClassification.from_pretrained(same_tok_rm).eval()
    from hrlaif.trainers.generation import Generation
    gen = Generation(ro.sequences, ro.attention_mask, ro.prompt_width, ro.response_mask,
                     torch.zeros_like(ro.response_mask), ro.finished)
    ids, mask = reward_inputs(gen, t.eos_ids, t.pad_id)
    with torch.no_grad():
        expect = clf(input_ids=ids, attention_mask=mask).logits[:, 0]
    assert torch.allclose(ro.reward_raw, expect, atol=1e-5)
    assert len(set(ro.reward_raw.tolist())) > 1


def test_hf_classifier_with_another_tokenizer_reads_retokenised_texts(tiny_model_dir, char_tok_rm, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    t = _trainer(tiny_model_dir, char_tok_rm, tmp_path)
    assert t.bridge is not None  # vocabularies differ: ids cannot pass through
    ro = t.rollout(0, lambda name: contextlib.nullcontext())
    clf = AutoModelForSequenceClassification.from_pretrained(char_tok_rm).eval()
    ctok = AutoTokenizer.from_pretrained(char_tok_rm)
    expect = []
    for row, keep, prompt_ids in zip(ro.sequences[:, ro.prompt_width:].tolist(), ro.response_mask.tolist(),
                                     ro.sequences[:, :ro.prompt_width].tolist()):
        toks = [x for x, k in zip(row, keep) if k]
        toks = toks[:-1] if toks and toks[-1] in t.eos_ids else toks
        response = t.tok.decode(toks, skip_special_tokens=True)
        # the prompt's text, not the actor's chat markup, goes through the RM's own template
        prompt = next(p["prompt"] for p in t.prompts if p["prompt"] in t.tok.decode(prompt_ids))
        text = f"user: {prompt}\nassistant: {response}\n"
        ids = ctok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            expect.append(clf(input_ids=ids).logits[0, 0].item())
    assert ro.reward_raw.tolist() == pytest.approx(expect, abs=1e-5)
    # a whole step runs (scores, KL, update) and the drift log's held-out scoring takes the same path
    t.cfg.drift_every, t.heldout = 1, t.prompts[:2]
    t.heldout_ids = t.prompt_ids[:2]
    rows = t.run()
    assert len(rows) == 1 and all(torch.isfinite(torch.tensor(rows[0][k])) for k in ("reward_raw", "policy_loss"))
    held = [json.loads(x) for x in (tmp_path / "out" / "drift" / "step_1" / "heldout.jsonl").read_text().splitlines()]
    assert [h["id"] for h in held] == ["p0", "p1"]


def test_a_causal_lm_is_not_taken_for_a_reward_model(tiny_model_dir):
    from hrlaif.core.errors import UserError
    from hrlaif.trainers.models import load_reward_model
    with pytest.raises(UserError, match="neither a harness reward-model directory nor a sequence classifier"):
        load_reward_model(tiny_model_dir)


# ------------------------------------------------------------------------- eval-rm

def _outcomes(rm_dir, pairs) -> list[float]:
    """1.0 where the chosen response scores higher, each sequence scored alone (no padding)."""
    from hrlaif.trainers.models import load_reward_model, rm_inputs
    rm, tok = load_reward_model(rm_dir)
    right = []
    with torch.no_grad():
        for p in pairs:
            ids = [torch.tensor([rm_inputs(rm, tok, p["prompt"], r, 1024)]) for r in (p["chosen"], p["rejected"])]
            s = [rm(input_ids=x, attention_mask=torch.ones_like(x)).item() for x in ids]
            right.append(float(s[0] > s[1]))
    return right


@pytest.mark.parametrize("which", ["harness", "hf"])
def test_eval_rm_on_hh_rlhf_pairs(run_cli, shared_data, tiny_rm_dir, same_tok_rm, tmp_path, which):
    from hrlaif.trainers.feedback.redteam import load_hh_pairs
    rm = tiny_rm_dir if which == "harness" else same_tok_rm
    hh = shared_data / "redteam" / "hh_harmless_test.jsonl"
    out = tmp_path / "r.json"
    code, stdout, err = run_cli("eval-rm", "--reward-model", rm, "--pairs", hh, "--limit", "12", "--out", out,
                                "--precision", "fp32", "--batch-size", "5")
    assert code == 0, err
    r = json.loads(out.read_text())
    acc = r["accuracy"]
    assert acc["n"] == 12 and acc["n_clusters"] == 12 and acc["ci_method"] == "cluster_bootstrap"
    right = _outcomes(rm, load_hh_pairs(hh, limit=12))
    assert acc["score"] == pytest.approx(sum(right) / len(right))
    assert acc["ci95"][0] <= acc["score"] <= acc["ci95"][1]
    assert f"accuracy {acc['score']:.3f}" in stdout and r["placement"]["precision"] == "fp32"


def test_eval_rm_on_labelled_groups_clusters_by_prompt(run_cli, tiny_rm_dir, tmp_path):
    from hrlaif.core.stats import cluster_bootstrap_mean
    groups = tmp_path / "heldout_pairs.jsonl"
    rows = [{"id": f"g{n}", "prompt": f"Question {n}?", "category": "math",
             "responses": [f"answer {n}", f"reply {n}!", f"no {n}"], "pairs": [[0, 1], [0, 2], [1, 2]]}
            for n in range(5)]
    groups.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.json"
    code, _, err = run_cli("eval-rm", "--reward-model", tiny_rm_dir, "--pairs", groups, "--out", out,
                           "--precision", "fp32")
    assert code == 0, err
    acc = json.loads(out.read_text())["accuracy"]
    assert acc["n"] == 15 and acc["n_clusters"] == 5  # three pairs per prompt, resampled together
    pairs = [{"prompt": r["prompt"], "chosen": r["responses"][i], "rejected": r["responses"][j]}
             for r in rows for i, j in r["pairs"]]
    right = _outcomes(tiny_rm_dir, pairs)
    assert acc["score"] == pytest.approx(sum(right) / len(right))
    assert acc["ci95"] == cluster_bootstrap_mean(right, [r["id"] for r in rows for _ in r["pairs"]])["ci95"]


def test_eval_rm_bad_input_is_one_line_exit_2(run_cli, tiny_rm_dir, tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    cases = [(["--reward-model", tiny_rm_dir, "--pairs", tmp_path / "missing.jsonl"], "--pairs: file not found"),
             (["--reward-model", tiny_rm_dir, "--pairs", bad], "neither chosen/rejected nor responses/pairs"),
             (["--reward-model", tmp_path / "none", "--pairs", good], "reward model directory not found"),
             (["--reward-model", tiny_model_dir, "--pairs", good], "nor a sequence classifier")]
    for argv, msg in cases:
        code, _, err = run_cli("eval-rm", *argv)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
