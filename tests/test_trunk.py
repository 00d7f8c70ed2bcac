"""Shared frozen trunk (hrlaif/trainers/trunk.py): same PPO numbers, fewer block evaluations."""
from __future__ import annotations

import pytest
import torch

from tests.test_ppo import write_prompts


@pytest.fixture(scope="module")
def deep_tiny_dir(tmp_path_factory):
    from hrlaif.core.models import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("tiny4") / "model", layers=4)


def _count_block_calls(model):
    """Count forward calls of every decoder block (hooks survive the layer-list swap)."""
    from hrlaif.trainers.trunk import decoder_of
    counts = {"n": 0}
    for layer in decoder_of(model).layers:
        layer.register_forward_hook(lambda *a: counts.__setitem__("n", counts["n"] + 1))
    return counts


def test_split_forward_equals_full_forward(deep_tiny_dir):
    from transformers import AutoModelForCausalLM

    from hrlaif.core.tensors import position_ids
    from hrlaif.trainers.trunk import SharedTrunk
    ref = AutoModelForCausalLM.from_pretrained(deep_tiny_dir).eval().requires_grad_(False)
    other = AutoModelForCausalLM.from_pretrained(deep_tiny_dir).eval().requires_grad_(False)
    with torch.no_grad():
        other.model.layers[0].mlp.up_proj.weight.add_(0.01)  # a different bottom: must not join
    lm = lambda m, ids, mask, h: m(input_ids=ids, inputs_embeds=h, attention_mask=mask,  # noqa: E731
                                   position_ids=position_ids(mask), use_cache=False).logits
    trunk = SharedTrunk.build(ref, 3, {"ref": (ref, lm), "other": (other, lm)}, vocab_size=ref.config.vocab_size)
    assert trunk is not None and trunk.shares(ref) and not trunk.shares(other)
    ids = torch.randint(0, 1000, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    with torch.no_grad():
        full = lm(ref, ids, mask, None)
        with trunk.top(ref):
            split = lm(ref, None, mask, trunk(ids, mask))
    assert len(ref.model.layers) == 4  # the swap is undone
    assert torch.allclose(full[mask.bool()], split[mask.bool()], atol=1e-5)


def test_ppo_with_shared_trunk_matches_full_forwards(deep_tiny_dir, tmp_path, random_rm, monkeypatch):
    """train_layers=1 on a 4-block model: the 3 frozen blocks run once per rollout for all four
    models, and the run logs the same metrics as one that recomputes them everywhere."""
    from hrlaif.trainers import drift
    from hrlaif.trainers.configs import PPOConfig
    from hrlaif.trainers.ppo import PPOTrainer
    # both runs decode step 0's held-out prompts (not the second from the first's cache): blocks are counted
    monkeypatch.setattr(drift, "_generations_file", lambda *a: None)
    rm_dir = random_rm(deep_tiny_dir, tmp_path / "rm", seed=3)
    prompts = write_prompts(tmp_path / "p.jsonl", 8)
    rows, calls = {}, {}
    for share in (True, False):
        cfg = PPOConfig(model=str(deep_tiny_dir), reward_model=str(rm_dir), out=str(tmp_path / f"s{share}"),
                        prompts=str(prompts), steps=3, batch_size=4, mini_batch_size=2, ppo_epochs=2,
                        max_new_tokens=6, lr=1e-3, critic_lr=1e-3, seed=2, train_layers=1, share_trunk=share,
                        precision="fp32")  # equality: fp32 (bf16 rounds the two paths differently)
        t = PPOTrainer(cfg)
        assert (t.trunk is not None) == share
        if share:
            for m in (t.ref, t.actor, t.critic, t.reward_model):
                assert t.trunk.shares(m)
        c = _count_block_calls(t.actor.module)
        rows[share] = t.run()
        calls[share] = c["n"]
    for a, b in zip(rows[True], rows[False]):
        for k in ("reward_raw", "kl", "policy_loss", "value_loss", "approx_kl", "entropy"):
            assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-5), k
    # per step the shared run skips 3 frozen blocks in each of 4 minibatch forwards, and runs
    # them once more in generation, for the last sampled token's trunk state
    assert calls[False] - calls[True] == 3 * (3 * 4 - 3)


def test_trunk_states_collected_while_decoding_match_a_full_pass(deep_tiny_dir):
    from transformers import AutoModelForCausalLM

    from hrlaif.trainers.generation import generate
    from hrlaif.trainers.trunk import SharedTrunk
    model = AutoModelForCausalLM.from_pretrained(deep_tiny_dir).eval()
    prompts = [[5, 6, 7, 8, 9], [11, 12, 13]]
    gen = generate(model, prompts, max_new_tokens=6, eos_ids=[0], pad_id=1, seeds=[1, 2], trunk_depth=2)
    plain = generate(model, prompts, max_new_tokens=6, eos_ids=[0], pad_id=1, seeds=[1, 2])
    assert torch.equal(gen.sequences, plain.sequences) and plain.hidden is None
    full = SharedTrunk(model, 2)(gen.sequences, gen.attention_mask)
    assert gen.hidden.shape == full.shape
    keep = gen.attention_mask.bool()
    assert torch.allclose(gen.hidden[keep], full[keep], atol=1e-5)


def test_critic_from_a_reward_model_with_its_own_bottom_runs_in_full(deep_tiny_dir, tmp_path):
    """critic_init=reward with an RM whose bottom blocks were trained: RM and critic stay out of
    the trunk, actor and reference join it, and the metrics equal a run without a trunk."""
    from hrlaif.trainers.configs import PPOConfig
    from hrlaif.trainers.models import RewardModel
    from hrlaif.trainers.ppo import PPOTrainer
    torch.manual_seed(4)
    rm, tok, _ = RewardModel.from_backbone(str(deep_tiny_dir), clip=5.0)
    with torch.no_grad():
        for p in rm.parameters():
            if p.ndim == 2 and p.shape[0] > 1:
                p.add_(0.01 * torch.randn_like(p))  # as if fully fine-tuned
    rm_dir = tmp_path / "rm"
    rm.save_pretrained(rm_dir)
    tok.save_pretrained(rm_dir)
    prompts = write_prompts(tmp_path / "p.jsonl", 8)
    rows = {}
    for share in (True, False):
        cfg = PPOConfig(model=str(deep_tiny_dir), reward_model=str(rm_dir), out=str(tmp_path / f"s{share}"),
                        prompts=str(prompts), steps=2, batch_size=4, mini_batch_size=2, ppo_epochs=2,
                        max_new_tokens=6, lr=1e-3, critic_lr=1e-3, seed=2, train_layers=1, share_trunk=share,
                        critic_init="reward", precision="fp32")
        t = PPOTrainer(cfg)
        if share:
            assert t.trunk.shares(t.ref) and t.trunk.shares(t.actor.module)
            assert not t.trunk.shares(t.critic.module) and not t.trunk.shares(t.reward_model)
        rows[share] = t.run()
    for a, b in zip(rows[True], rows[False]):
        for k in ("reward_raw", "kl", "policy_loss", "value_loss", "approx_kl"):
            assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-5), k
