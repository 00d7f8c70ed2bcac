"""PPO: experience maths, an end-to-end tiny run, drift hook, checkpoints and bad inputs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hrlaif.core.errors import UserError

METRIC_FIELDS = {"step", "reward_raw", "reward_clipped", "kl", "kl_k1", "kl_k3", "entropy", "response_len",
                 "policy_loss",
                 "value_loss", "policy_clipfrac", "value_clipfrac", "approx_kl", "kl_coef",
                 "time_gen", "time_score", "time_train"}


# ------------------------------------------------------------------------ fixtures

def write_prompts(path: Path, n: int, start: int = 0) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"id": f"q{i}", "prompt": f"Question {i}: what is {i} plus {i}?",
                                "category": "math", "std_answer": str(2 * i), "lang": "en"}) + "\n")
    return path


@pytest.fixture()
def prompts_file(tmp_path) -> Path:
    return write_prompts(tmp_path / "prompts.jsonl", 10)


# ------------------------------------------------------------------- experience maths

def test_gae_matches_hand_computed_reference():
    from hrlaif.trainers.experience import gae
    rewards = torch.tensor([[0.0, 0.0, 1.0, 9.0], [0.5, -1.0, 0.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 7.0], [0.4, 0.5, 3.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    gamma, lam = 0.9, 0.8
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for b in range(2):
        n = int(mask[b].sum())
        r, v = rewards[b, :n].tolist(), values[b, :n].tolist() + [0.0]  # terminal value 0 after EOS
        expect, last = [0.0] * n, 0.0
        for t in reversed(range(n)):
            last = r[t] + gamma * v[t + 1] - v[t] + gamma * lam * last
            expect[t] = last
        assert adv[b, :n].tolist() == pytest.approx(expect, abs=1e-6)
        assert ret[b, :n].tolist() == pytest.approx([a + x for a, x in zip(expect, v)], abs=1e-6)
        assert adv[b, n:].abs().sum() == 0 and ret[b, n:].abs().sum() == 0  # padding never leaks


def test_kl_estimators_and_token_rewards():
    from hrlaif.trainers.experience import kl_penalty, token_rewards, whiten
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, -0.5]])
    k1 = kl_penalty(logp, ref, "k1")
    k3 = kl_penalty(logp, ref, "k3")
    assert k1[0].tolist() == pytest.approx([0.5, -1.0, 0.0])
    lr = (ref - logp)
    assert k3[0].tolist() == pytest.approx((lr.exp() - 1 - lr)[0].tolist())
    assert (k3 >= 0).all() and k3[0, 2] == 0
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    r = token_rewards(torch.tensor([2.0]), k1, 0.1, mask)
    assert r[0].tolist() == pytest.approx([-0.05, 0.1 + 2.0, 0.0])  # score lands on the last real token
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    w = whiten(x, torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    assert w[0, :3].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert w[0, :3].std().item() == pytest.approx(1.0, abs=1e-3)
    assert w[0, 3].item() == 0.0


def test_generation_is_per_prompt_deterministic_and_left_padded(tiny_model_dir):
    """A prompt's sample depends on its seed only, not on the batch it is in (rank splits rely on it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hrlaif.trainers.generation import generate
    from hrlaif.trainers.models import logprobs_from_logits, policy_logits
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = [tok("a much longer prompt than the other one here")["input_ids"], tok("short")["input_ids"]]
    eos = [tok.eos_token_id]
    both = generate(model, prompts, max_new_tokens=8, eos_ids=eos, pad_id=tok.pad_token_id, seeds=[11, 22])
    alone = generate(model, prompts[1:], max_new_tokens=8, eos_ids=eos, pad_id=tok.pad_token_id, seeds=[22])
    assert both.responses[1].tolist() == alone.responses[0].tolist()
    assert both.prompt_width == len(prompts[0])
    assert both.attention_mask[1, :len(prompts[0]) - len(prompts[1])].sum() == 0  # left padding
    # the sampler's log-probs equal a full forward's: they can serve as PPO's old log-probs
    with torch.no_grad():
        full = logprobs_from_logits(policy_logits(model, both.sequences, both.attention_mask,
                                                  both.prompt_width, 1.0), both.responses)
    assert torch.allclose(full * both.response_mask, both.logprobs, atol=1e-4)
    assert not both.finished.any() or both.response_mask.sum() < both.response_mask.numel()


def test_row_sampler_follows_each_rows_distribution_with_its_own_generator():
    """Inverse-CDF sampling: right frequencies, zero-probability tokens never drawn, rows independent."""
    from hrlaif.trainers.generation import sample_rows
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3], [0.0, 0.0, 0.0, 1.0]])
    gens = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)]
    draws = torch.stack([sample_rows(probs, gens) for _ in range(4000)])
    freq = torch.bincount(draws[:, 0], minlength=4).float() / len(draws)
    assert freq[1] == 0 and torch.allclose(freq, probs[0], atol=0.03)
    assert (draws[:, 1] == 3).all()
    again = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(99)]
    assert torch.equal(torch.stack([sample_rows(probs, again) for _ in range(50)])[:, 0], draws[:50, 0])


# --------------------------------------------------------------------- end to end

def _fake_eval_factory(calls):
    def fake_eval(model, tokenizer, benchmarks, limit, data_dir):
        assert hasattr(model, "generate") and callable(tokenizer)
        calls.append((list(benchmarks), limit))
        items = [{"doc_id": f"d{i}", "score": float(i == 0)} for i in range(limit)]
        return {b: {"score": 0.25, "ci95": [0.1, 0.5], "n": limit, "items": items} for b in benchmarks}
    return fake_eval


def test_ppo_tiny_end_to_end_with_drift(tiny_model_dir, tiny_rm_dir, prompts_file, tmp_path):
    from hrlaif.trainers.configs import PPOConfig
    from hrlaif.trainers.ppo import train
    held = write_prompts(tmp_path / "held.jsonl", 3, start=100)
    calls = []
    out = tmp_path / "run"
    cfg = PPOConfig(model=str(tiny_model_dir), reward_model=str(tiny_rm_dir), out=str(out),
                    prompts=str(prompts_file), steps=5, batch_size=4, mini_batch_size=2, ppo_epochs=2,
                    max_new_tokens=8, lr=1e-3, critic_lr=1e-3, save_every=2,
                    adaptive_kl=True, target_kl=0.01, seed=5, drift_every=2, drift_benchmarks=["gsm8k", "mmlu"],
                    drift_limit=3, heldout_prompts=str(held))
    rows = train(cfg, evaluate_fn=_fake_eval_factory(calls))
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5]
    for r in logged:
        assert METRIC_FIELDS <= set(r)
        assert all(math.isfinite(r[k]) for k in METRIC_FIELDS)
        assert r["kl_k3"] >= 0 and r["kl"] == r["kl_k1"]  # the reward's KL is k1; k3 (never negative) logged
        assert 1 <= r["response_len"] <= 8
        assert 0 <= r["policy_clipfrac"] <= 1 and 0 <= r["value_clipfrac"] <= 1
        assert r["time_gen"] > 0 and r["time_score"] > 0 and r["time_train"] > 0
    assert rows == logged
    assert abs(logged[0]["kl"]) < 1e-3  # actor == reference at step 1
    # adaptive KL moved the coefficient (KL below target -> coefficient shrinks)
    coefs = [r["kl_coef"] for r in logged]
    assert coefs[0] == 0.05 and coefs[-1] != coefs[0]
    assert all((b < a) == (r['kl'] < 0.01) for a, b, r in zip(coefs, coefs[1:], logged))
    # the actor learnt: weights differ from the initial checkpoint
    from transformers import AutoModelForCausalLM
    a0 = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    a1 = AutoModelForCausalLM.from_pretrained(out / "final")
    assert any(not torch.equal(p, q) for p, q in zip(a0.state_dict().values(), a1.state_dict().values()))
    assert (out / "final" / "tokenizer_config.json").exists()
    # drift at step 0 (baseline) and every 2 steps: fake benchmarks, held-out reward in the RM's range
    drift = [json.loads(line) for line in (out / "drift.jsonl").read_text().splitlines()]
    assert [d["step"] for d in drift] == [0, 2, 4]
    assert calls == [(["gsm8k", "mmlu"], 3)] * 3
    # the baseline pairs the untouched weights with the first rollout's reward (same weights)
    assert drift[0]["kl"] == 0.0 and drift[0]["reward_train"] == pytest.approx(logged[0]["reward_raw"])
    for d in drift:
        assert set(d) == {"step", "kl", "kl_k3", "reward_train", "reward_heldout", "gold_heldout", "gold_invalid",
                          "benchmarks", "time_s"}
        assert set(d["time_s"]) == {"heldout", "benchmarks", "gold"} and all(t >= 0 for t in d["time_s"].values())
        assert -5.0 <= d["reward_heldout"] <= 5.0 and d["gold_heldout"] is None  # no gold_fn
        assert d["benchmarks"]["gsm8k"] == {"score": 0.25, "ci95": [0.1, 0.5], "n": 3}
        # per-item files pair checkpoints: benchmark items and held-out responses with their rewards
        items = out / "drift" / f"step_{d['step']}"
        assert [json.loads(x) for x in (items / "mmlu.jsonl").read_text().splitlines()] == \
            [{"doc_id": f"d{i}", "score": float(i == 0)} for i in range(3)]
        held_rows = [json.loads(x) for x in (items / "heldout.jsonl").read_text().splitlines()]
        assert [h["id"] for h in held_rows] == ["q100", "q101", "q102"]
        assert all(isinstance(h["response"], str) and h["gold"] is None for h in held_rows)
        assert sum(h["reward"] for h in held_rows) / 3 == pytest.approx(d["reward_heldout"])
    assert d["kl"] == logged[3]["kl"] and d["kl_k3"] == logged[3]["kl_k3"]
    assert d["reward_train"] == logged[3]["reward_raw"]
    # checkpoints 2 and 4 (keep 2), `latest` names step_4, TensorBoard events written
    ck = out / "checkpoints"
    assert (ck / "latest").read_text().strip() == "step_4"
    assert sorted(p.name for p in ck.glob("step_*")) == ["step_2", "step_4"]
    for sub in ("actor_hf/config.json", "ds_actor", "ds_critic", "rng_rank0.pt", "state.json"):
        assert (ck / "step_4" / sub).exists(), sub
    state = json.loads((ck / "step_4" / "state.json").read_text())
    assert state["step"] == 4 and state["data_position"] == 16
    assert state["kl_coef"] == logged[4]["kl_coef"]  # coefficient for step 5
    assert list((out / "tb").glob("events.out.tfevents.*"))


def test_heldout_prompts_are_never_trained_on(tiny_model_dir, tiny_rm_dir, tmp_path):
    """Prompts shared with the held-out set (by id or text) are removed from training."""
    from hrlaif.trainers.configs import PPOConfig
    from hrlaif.trainers.ppo import PPOTrainer
    train_file = write_prompts(tmp_path / "train.jsonl", 6)
    held = write_prompts(tmp_path / "held.jsonl", 2, start=4)  # q4, q5 overlap
    cfg = PPOConfig(model=str(tiny_model_dir), reward_model=str(tiny_rm_dir), out=str(tmp_path / "o"),
                    prompts=str(train_file), steps=1, batch_size=2, mini_batch_size=2, max_new_tokens=4,
                    drift_every=1, drift_benchmarks=[], heldout_prompts=str(held))
    t = PPOTrainer(cfg)
    assert sorted(p["id"] for p in t.prompts) == ["q0", "q1", "q2", "q3"]
    assert len(t.heldout_ids) == 2
    t.run()
    d0, d = [json.loads(x) for x in (tmp_path / "o" / "drift.jsonl").read_text().splitlines()]
    assert d0["step"] == 0 and d0["kl"] == 0.0 and d["step"] == 1
    assert d["benchmarks"] == {} and isinstance(d["reward_heldout"], float)


class NaNReward(torch.nn.Module):
    """Stand-in RM that turns NaN after `ok_calls` calls."""

    def __init__(self, ok_calls: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.calls, self.ok_calls = 0, ok_calls

    def forward(self, input_ids, attention_mask):
        self.calls += 1
        r = attention_mask.sum(1).float() * 0.01
        return r if self.calls <= self.ok_calls else r * float("nan")


def test_nan_loss_stops_with_user_error_and_keeps_last_checkpoint(tiny_model_dir, tiny_rm_dir, prompts_file,
                                                                   tmp_path):
    from hrlaif.trainers.configs import PPOConfig
    from hrlaif.trainers.ppo import train
    out = tmp_path / "nan"
    cfg = PPOConfig(model=str(tiny_model_dir), reward_model=str(tiny_rm_dir), out=str(out),
                    prompts=str(prompts_file), steps=4, batch_size=2, mini_batch_size=2, max_new_tokens=4,
                    save_every=1, ppo_epochs=1, drift_every=0,  # the drift log would call the RM too
                    missing_eos_reward=None)  # let the NaN reach the loss
    with pytest.raises(UserError, match="non-finite PPO loss at step 3.*step_2"):
        train(cfg, reward_model=NaNReward(ok_calls=2))
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_2"
    assert (out / "checkpoints" / "step_2" / "state.json").exists()
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# ----------------------------------------------------------------------- bad input

def test_bad_inputs_exit_2(run_cli, tiny_model_dir, tiny_rm_dir, prompts_file, tmp_path):
    base = ["ppo", "--model", tiny_model_dir, "--reward-model", tiny_rm_dir, "--prompts", prompts_file,
            "--steps", "1", "--batch-size", "2", "--mini-batch-size", "2", "--max-new-tokens", "4"]
    code, _, err = run_cli(*base, "--out", tmp_path / "a", "--zero-stage", "5")
    assert code == 2 and "--zero-stage: must be one of 0, 1, 2, 3 (got 5)" in err
    code, _, err = run_cli(*base, "--out", tmp_path / "b", "--resume")
    assert code == 2 and "no checkpoint" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = run_cli(*[a if a != prompts_file else empty for a in base], "--out", tmp_path / "c")
    assert code == 2 and "empty" in err
    code, _, err = run_cli(*base, "--out", tmp_path / "d", "--mini-batch-size", "3")
    assert code == 2 and "must divide" in err
    code, _, err = run_cli(*[a if a != tiny_rm_dir else tmp_path / "nope" for a in base], "--out", tmp_path / "e")
    assert code == 2 and "reward model directory not found" in err
    not_rm = tmp_path / "not_rm"
    not_rm.mkdir()
    code, _, err = run_cli(*[a if a != tiny_rm_dir else not_rm for a in base], "--out", tmp_path / "f")
    assert code == 2 and "not a reward-model directory" in err
    assert "Traceback" not in err
