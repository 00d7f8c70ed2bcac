"""PPO on the reward it was given, in the precision it was given (issues 12 and 13):
k1 in the reward, no missing-EOS penalty by default, the fused first forward, a bf16 run that
learns, and the drift log's gold verdicts."""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import pytest
import torch

from hrlaif.trainers.configs import PPOConfig


def _prompts(path: Path, n: int = 12, text: str = "Q{i}: tell me about {i} cats.") -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": text.format(i=i)}) + "\n" for i in range(n)))
    return path


class VowelRM(torch.nn.Module):
    """Reward = 10 x the share of vowels among the last `n` characters (the response's length cap)."""

    def __init__(self, tok, n: int):
        super().__init__()
        good = torch.zeros(len(tok))
        good[[tok.convert_tokens_to_ids(c) for c in "aeiou"]] = 1.0
        self.w = torch.nn.Parameter(good)
        self.n = n

    def forward(self, input_ids, attention_mask):
        last = attention_mask.sum(1, keepdim=True) - 1 - torch.arange(self.n)[None]  # last n real positions
        return 10 * (self.w[input_ids.gather(1, last.clamp(min=0))] * (last >= 0)).sum(1) / self.n


def test_the_reward_kl_is_k1_and_truncation_keeps_the_rm_score(tiny_model_dir, tiny_rm_dir, tmp_path):
    from hrlaif.trainers.ppo import PPOTrainer
    assert PPOConfig().missing_eos_reward is None
    t = PPOTrainer(PPOConfig(model=str(tiny_model_dir), reward_model=str(tiny_rm_dir), out=str(tmp_path / "o"),
                             prompts=str(_prompts(tmp_path / "p.jsonl")), steps=1, batch_size=4, mini_batch_size=2,
                             max_new_tokens=4, drift_every=0, precision="fp32", kl_coef=0.3))
    ro = t.rollout(0, lambda name: contextlib.nullcontext())
    assert not ro.finished.any()  # 4 tokens of a random model: every response is cut
    assert torch.equal(ro.reward, ro.reward_raw.clamp(-5, 5))  # no penalty replaced the RM's score
    mask = ro.response_mask
    assert torch.equal(ro.kl, (ro.logprobs - ro.ref_logprobs) * mask)  # k1, which may be negative per token
    row = t.step_metrics(0, ro, {k: 0.0 for k in ("policy_loss", "value_loss", "policy_clipfrac", "value_clipfrac",
                                                  "approx_kl", "entropy")}, {})
    lr = ro.ref_logprobs - ro.logprobs
    k3 = ((lr.exp() - 1 - lr) * mask).sum().item() / len(ro)
    assert row["kl"] == row["kl_k1"] == pytest.approx(ro.kl.sum().item() / len(ro))
    assert row["kl_k3"] == pytest.approx(k3) and row["kl_k3"] >= 0


def test_fused_first_forward_equals_separate_experience_passes(tiny_model_dir, tiny_rm_dir, tmp_path, monkeypatch):
    """One minibatch per step: old log-probs and values come from the update's own forward
    (two forwards fewer per step) and the step computes what the separate passes compute."""
    from hrlaif.trainers.ppo import PPOTrainer
    rows = {}
    for fused in (True, False):
        monkeypatch.setattr(PPOTrainer, "fused", property(lambda self, f=fused: f))
        cfg = PPOConfig(model=str(tiny_model_dir), reward_model=str(tiny_rm_dir), out=str(tmp_path / f"f{fused}"),
                        prompts=str(_prompts(tmp_path / "p.jsonl")), steps=2, batch_size=4, mini_batch_size=4,
                        ppo_epochs=2, max_new_tokens=6, lr=1e-3, critic_lr=1e-3, drift_every=0, precision="fp32",
                        seed=4)
        calls = {"n": 0}
        t = PPOTrainer(cfg)
        t.critic.module.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
        rows[fused] = t.run()
        rows[fused, "critic_calls"] = calls["n"]
    for a, b in zip(rows[True], rows[False]):
        for k in ("reward_raw", "kl", "kl_k3", "policy_loss", "value_loss", "approx_kl", "entropy"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k
    assert rows[False, "critic_calls"] - rows[True, "critic_calls"] == 2  # one values pass saved per step


@pytest.mark.host
def test_short_bf16_ppo_run_stays_finite_and_raises_reward(char_lm_dir, char_tokenizer, tmp_path):
    """A tiny character-level policy learns to say more vowels in bf16 (autocast over fp32 master
    weights; log-probs, KL, advantages and losses in fp32), as it does in fp32."""
    precision = "bf16"
    from hrlaif.trainers.ppo import train
    rows = train(PPOConfig(model=str(char_lm_dir), reward_model="in-memory", out=str(tmp_path / precision),
                           prompts=str(_prompts(tmp_path / "p.jsonl", 16, "Q{i}")), steps=10, batch_size=8,
                           mini_batch_size=8, ppo_epochs=4, max_new_tokens=12, lr=2e-2, critic_lr=2e-2, drift_every=0,
                           save_every=0, seed=1, precision=precision), reward_model=VowelRM(char_tokenizer, 12))
    assert all(math.isfinite(r[k]) for r in rows for k in ("reward_raw", "kl", "kl_k3", "policy_loss", "value_loss"))
    first, last = [sum(r["reward_raw"] for r in rows[i:j]) / 3 for i, j in ((0, 3), (-3, None))]
    # about 0.7 -> 3 to 5 in either precision over seeds 1-3; the response's 12 characters are 7-50% vowels
    assert last > first + 1.0, [round(r["reward_raw"], 2) for r in rows]
    session = json.loads((tmp_path / precision / "sessions.jsonl").read_text().splitlines()[0])
    assert session["precision"] == precision and session["device"] == "cpu"


def test_drift_heldout_file_carries_gold_verdicts(tiny_model_dir, tiny_rm_dir, tmp_path):
    from hrlaif.trainers.ppo import train
    held = _prompts(tmp_path / "held.jsonl", 3)
    seen = []

    def gold_fn(prompts, responses):
        seen.append((list(prompts), list(responses)))
        return [None if i == 2 else int(len(r) % 2 == 0) for i, r in enumerate(responses)]

    train(PPOConfig(model=str(tiny_model_dir), reward_model=str(tiny_rm_dir), out=str(tmp_path / "o"),
                    prompts=str(_prompts(tmp_path / "p.jsonl", 20)), heldout_prompts=str(held), steps=1, batch_size=2,
                    mini_batch_size=2, max_new_tokens=4, drift_every=1, drift_benchmarks=[], save_every=0),
          gold_fn=gold_fn)
    drift = [json.loads(x) for x in (tmp_path / "o" / "drift.jsonl").read_text().splitlines()]
    assert [d["step"] for d in drift] == [0, 1] and len(seen) == 2
    for d, (prompts, responses) in zip(drift, seen):
        assert prompts == [f"Q{i}: tell me about {i} cats." for i in range(3)]
        rows = [json.loads(x) for x in (tmp_path / "o" / "drift" / f"step_{d['step']}" / "heldout.jsonl")
                .read_text().splitlines()]
        assert [r["response"] for r in rows] == responses
        gold = [int(len(r) % 2 == 0) for r in responses[:2]]
        assert [r["gold"] for r in rows] == gold + [None]
        assert d["gold_heldout"] == pytest.approx(sum(gold) / 2) and d["gold_invalid"] == 1


@pytest.mark.host
@pytest.mark.parametrize("precision,product", [("bf16", "onednn_packed"), ("fp32", "few_rows"),
                                               ("fp32", "onednn_packed"), ("fp32", "mkl_packed"),
                                               ("fp32", "fewrows")])
def test_decoding_on_packed_weights_matches_the_plain_forward(tiny_model_dir, precision, product):
    """Decoding packs each Linear's weight once per generate call; in bf16 that is bit for bit
    what autocast computes (on CPUs with native bf16), in fp32 each product equal to the last bits."""
    from transformers import AutoModelForCausalLM

    from hrlaif.core import decoding
    from hrlaif.trainers import generation
    if product not in decoding.fp32_candidates(2):
        pytest.skip(f"{product} is not offered by this torch build")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    runs, used = {}, {}
    for special in (True, False):
        saved = decoding.packing_dtype, decoding.fp32_product
        if not special:
            decoding.packing_dtype, decoding.fp32_product = (lambda: None), (lambda *_: "plain")
        elif precision == "fp32":
            decoding.fp32_product = lambda *_: product
        try:
            with ctx():
                with decoding.decoding_linears(model, 2):
                    used[special] = {type(m).__name__ for m in model.modules() if "forward" in vars(m)}
                runs[special] = generation.generate(model, prompts, max_new_tokens=8, eos_ids=[0], pad_id=1,
                                                    seeds=[3, 4])
        finally:
            decoding.packing_dtype, decoding.fp32_product = saved
    a, b = runs[True], runs[False]
    assert used[False] == set()
    assert torch.equal(a.sequences, b.sequences)
    if precision == "bf16":
        assert used[True] == ({"Linear"} if _native_bf16() else set())
        assert torch.equal(a.logprobs, b.logprobs)
    else:
        assert used[True] == {"Linear"}
        assert torch.allclose(a.logprobs, b.logprobs, atol=1e-5)


def _native_bf16() -> bool:
    from hrlaif.core.hardware import cpu_has_native_bf16
    return cpu_has_native_bf16()


def test_trainer_device_and_precision_selection(monkeypatch):
    """Every trainer resolves `device` / `precision` through hrlaif.core.hardware; the resolved device
    picks DeepSpeed's accelerator and, for cuda:N in a single process, the rank's device."""
    from hrlaif.core import hardware
    from hrlaif.core.errors import UserError
    from hrlaif.trainers import distributed
    from hrlaif.trainers.configs import RMConfig, SampleConfig, SFTConfig
    from hrlaif.trainers.precision import Placement, resolve
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA device is visible"):
        resolve(PPOConfig(device="cuda"))
    assert resolve(SFTConfig(precision="fp32")) == Placement("cpu", "fp32")
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert resolve(RMConfig()) == Placement("cpu", "bf16") and resolve(SampleConfig()).bf16
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert resolve(PPOConfig()) == Placement("cpu", "fp32")
    # a GPU host (faked): auto picks cuda and bf16; cuda:1 is what a single process trains on
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    place = resolve(PPOConfig(device="cuda:1"))
    assert place == Placement("cuda:1", "bf16") and place.device_type == "cuda"
    assert place.autocast().device == "cuda" and place.record()["device"] == "cuda:1"
    launcher = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    for k in launcher:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # left by an earlier CPU stage of the same process
    distributed.setup_env("cuda:1")
    assert os.environ["DS_ACCELERATOR"] == "cuda" and os.environ["LOCAL_RANK"] == "1"
    for k in launcher:
        monkeypatch.delenv(k, raising=False)
    distributed.setup_env("cpu")  # the CPU asked for on a GPU host
    assert os.environ["DS_ACCELERATOR"] == "cpu" and os.environ["LOCAL_RANK"] == "0"
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("RANK", "7")  # under torchrun / the deepspeed launcher: its ranks stand
    distributed.setup_env("cuda:1")
    assert os.environ["LOCAL_RANK"] == "3"


def test_scalar_heads_stay_fp32_under_bf16_autocast(tiny_model_dir):
    """Rewards and values are not rounded to bf16's 3 significant digits: their heads run in fp32."""
    from hrlaif.trainers.models import RewardModel, ValueModel
    from hrlaif.trainers.precision import Placement, cast_frozen
    torch.manual_seed(0)
    rm, tok, _ = RewardModel.from_backbone(str(tiny_model_dir))
    rm.requires_grad_(False)
    cast_frozen(rm, Placement("cpu", "bf16"))
    assert rm.head.weight.dtype == torch.float32  # the scalar head is not cast with the matmul weights
    critic = ValueModel.from_checkpoint(str(tiny_model_dir))
    torch.nn.init.normal_(critic.v_head.weight)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    mask = torch.ones_like(ids)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, raw = rm(ids, mask, return_raw=True)
        h = rm.backbone(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1]
        values = critic(input_ids=ids, attention_mask=mask)
    expect = h.float() @ rm.head.weight.float().T + rm.head.bias.float()
    assert raw.dtype == values.dtype == torch.float32
    assert raw.item() == pytest.approx(expect.item(), rel=1e-6)
    assert raw.item() != torch.tensor(raw.item()).to(torch.bfloat16).float().item()  # not a bf16 value


def test_step0_heldout_responses_are_decoded_once_per_starting_weights(tiny_model_dir, tiny_rm_dir, tmp_path,
                                                                         monkeypatch, random_rm):
    """Two PPO runs from the same checkpoint with different reward models (the quickstart's two stages):
    the second reads step 0's greedy held-out responses from the cache and scores them with its own RM;
    later drift points and other starting weights decode."""
    from hrlaif.trainers import drift
    from hrlaif.trainers.ppo import train
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "cache"))
    calls = []
    real = drift.generate
    monkeypatch.setattr(drift, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    held = _prompts(tmp_path / "held.jsonl", 3)
    other_rm = random_rm(tiny_model_dir, tmp_path / "rm2", seed=11)
    out = {}
    for name, rm in (("a", tiny_rm_dir), ("b", other_rm)):
        n0 = len(calls)
        train(PPOConfig(model=str(tiny_model_dir), reward_model=str(rm), out=str(tmp_path / name),
                        prompts=str(_prompts(tmp_path / "p.jsonl", 20)), heldout_prompts=str(held), steps=1,
                        batch_size=2, mini_batch_size=2, max_new_tokens=4, drift_every=1, drift_benchmarks=[],
                        save_every=0))
        out[name] = [[json.loads(x) for x in (tmp_path / name / "drift" / f"step_{s}" / "heldout.jsonl")
                      .read_text().splitlines()] for s in (0, 1)]
        calls_made = len(calls) - n0
        assert calls_made == (2 if name == "a" else 1)  # b decodes only after its update
    a0, b0 = out["a"][0], out["b"][0]
    assert [r["response"] for r in a0] == [r["response"] for r in b0]
    assert [r["reward"] for r in a0] != [r["reward"] for r in b0]  # each stage's own reward model scored them
    assert len(list((tmp_path / "cache" / "drift_generations").glob("*.pt"))) == 1
