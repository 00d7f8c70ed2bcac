"""Padding-free forwards (hrlaif/core/packed_attention.py): the same numbers as the padded batch at every
real token, fewer tokens through the linear layers, and the padded path where a model cannot pack."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def tiny64_dir(tmp_path_factory):
    from hrlaif.core.models import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("tiny64") / "model", hidden=64, layers=3)


def _batch():
    """Left-padded prompts of three lengths + right-padded responses (one row with no padding at all)."""
    from hrlaif.core.tensors import left_pad
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 900, (n,), generator=g).tolist() for n in (5, 8, 3, 8)]
    ids, mask = left_pad(prompts, 0)
    resp = torch.randint(5, 900, (4, 4), generator=g)
    rmask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
    return torch.cat([ids, resp * rmask], 1), torch.cat([mask, rmask], 1), ids.shape[1]


def _model(path, impl):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=impl, dtype=torch.float32)


def _grads(model):
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_packing_round_trip_and_slots():
    from hrlaif.core.packed_attention import Packing
    seq, mask, _ = _batch()
    pk = Packing(mask)
    assert pk.tokens == int(mask.sum()) and pk.lengths == mask.sum(1).tolist()
    packed = pk.pack(seq)
    assert packed.shape == (1, pk.tokens) and torch.equal(packed[0], seq[mask.bool()])
    assert torch.equal(pk.unpack(packed), seq * mask)  # padding comes back as 0
    # each row's positions restart at 0, as position_ids(mask) gives them padded
    starts = torch.tensor([0] + pk.lengths).cumsum(0)[:-1]
    assert pk.position_ids[0, starts].tolist() == [0] * len(pk.lengths)
    W, n = mask.shape[1], pk.lengths
    real, slots = pk.slots(torch.tensor([0, W - 1, W + 7, 3 * W - 1]))  # pad, pad, row 1's 8th, row 2's last
    assert real.tolist() == [False, False, True, True] and slots.tolist() == [n[0] + 7, n[0] + n[1] + n[2] - 1]


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_packed_policy_logits_and_grads_equal_the_padded_batch(tiny64_dir, impl):
    """fp32 on any host: the packed forward adds the same products in another order at most, so the
    logits agree to a few fp32 ulps of their scale, and the gradients likewise."""
    from hrlaif.trainers.models import policy_logits
    model = _model(tiny64_dir, impl)
    seq, mask, P = _batch()
    wanted = torch.cat([torch.ones(4, 1, dtype=torch.long), mask[:, P:-1]], 1).bool()  # predicts a real token
    out = {}
    for packed in (False, True):
        model.zero_grad(set_to_none=True)
        logits = policy_logits(model, seq, mask, P, 0.7, packed=packed)
        (logits.log_softmax(-1)[..., :50] * wanted[..., None]).sum().backward()
        out[packed] = logits.detach(), _grads(model)
    assert model.config._attn_implementation == impl  # switched back
    (a, ga), (b, gb) = out[False], out[True]
    eps = torch.finfo(torch.float32).eps
    assert (a - b)[wanted].abs().max() <= 64 * eps * a[wanted].abs().max()
    assert b[~wanted].abs().max() == 0  # padding positions: zeros, masked downstream
    for x, y in zip(ga, gb):
        assert (x - y).abs().max() <= 1e-4 * x.abs().max() + 1e-12


def test_packed_critic_values_from_ids_and_from_a_shared_trunk(tiny64_dir):
    from hrlaif.trainers.models import ValueModel, run_model
    from hrlaif.trainers.trunk import SharedTrunk
    model = _model(tiny64_dir, "eager")
    critic = ValueModel(model.model).requires_grad_(False)  # a trunk shares frozen blocks only
    torch.nn.init.normal_(critic.v_head.weight, generator=torch.Generator().manual_seed(1))
    seq, mask, _ = _batch()
    real = mask.bool()
    with torch.no_grad():
        padded = run_model(critic, seq, mask)
        packed = run_model(critic, seq, mask, packed=True)
        assert (padded - packed)[real].abs().max() <= 1e-5 * padded[real].abs().max()
        assert packed[~real].abs().max() == 0
        lm = lambda m, ids, msk, h: m(input_ids=ids, inputs_embeds=h, attention_mask=msk)  # noqa: E731
        trunk = SharedTrunk.build(critic, 2, {"critic": (critic, lm)}, vocab_size=model.config.vocab_size)
        assert trunk is not None and trunk.shares(critic)
        hidden = trunk(seq, mask)
        from_trunk = run_model(critic, None, mask, trunk, hidden, packed=True)
    assert (padded - from_trunk)[real].abs().max() <= 1e-5 * padded[real].abs().max()


def test_models_that_cannot_pack_run_padded(tiny64_dir):
    """A sliding window, another attention kernel, or a batch without padding: no packing, and the same
    result as the padded forward, bit for bit."""
    from hrlaif.core.packed_attention import packable
    from hrlaif.trainers.models import packing_for, policy_logits
    model = _model(tiny64_dir, "eager")
    seq, mask, P = _batch()
    assert packable(model) and packing_for(model, mask) is not None
    assert packing_for(model, torch.ones_like(mask)) is None
    model.config.sliding_window, model.config.use_sliding_window = 4, True
    assert not packable(model) and packing_for(model, mask) is None
    with torch.no_grad():
        padded = policy_logits(model, seq, mask, P, 1.0)
        assert torch.equal(policy_logits(model, seq, mask, P, 1.0, packed=True), padded)
    model.config.sliding_window = None
    model.config._attn_implementation = "flex_attention"
    assert not packable(model)


def test_ppo_padding_free_matches_the_padded_run(tiny64_dir, tmp_path, random_rm):
    """The same PPO run with and without padding: the rollouts have left-padded prompts of several
    lengths and responses that stop at EOS, and the logged numbers agree."""
    from hrlaif.trainers.configs import PPOConfig
    from hrlaif.trainers.ppo import PPOTrainer
    rm_dir = random_rm(tiny64_dir, tmp_path / "rm", seed=3)
    prompts = tmp_path / "p.jsonl"
    with open(prompts, "w", encoding="utf-8") as f:  # prompts of several lengths: left padding
        for i in range(8):
            f.write(json.dumps({"id": f"q{i}", "prompt": "What is " + " plus ".join([str(i)] * (1 + 3 * (i % 4))) + "?",
                                "category": "math", "std_answer": str(i), "lang": "en"}) + "\n")
    rows, tokens = {}, {}
    for free in (True, False):
        cfg = PPOConfig(model=str(tiny64_dir), reward_model=str(rm_dir), out=str(tmp_path / f"f{free}"),
                        prompts=str(prompts), steps=3, batch_size=4, mini_batch_size=2, ppo_epochs=2,
                        max_new_tokens=6, lr=1e-3, critic_lr=1e-3, seed=2, padding_free=free, precision="fp32")
        t = PPOTrainer(cfg)
        seen = tokens[free] = []
        for m in (t.actor.module, t.critic.module, t.ref):
            layer = m.get_decoder().layers[0] if hasattr(m, "get_decoder") else m.backbone.layers[0]
            layer.register_forward_pre_hook(
                lambda _m, a, k: seen.append((k["hidden_states"] if "hidden_states" in k else a[0]).shape[:2]),
                with_kwargs=True)
        rows[free] = t.run()
    assert any(s[0] == 1 for s in tokens[True]) and not any(s[0] == 1 for s in tokens[False])
    for a, b in zip(rows[True], rows[False]):
        for k in ("reward_raw", "kl", "policy_loss", "value_loss", "approx_kl", "entropy", "response_len"):
            assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-5), k


def test_packed_reward_model_scores_equal_the_padded_batch(tiny64_dir):
    """The RM reads each row's last real token; packed, that is the end of the row's span."""
    from hrlaif.trainers.models import RewardModel
    rm, _, _ = RewardModel.from_backbone(str(tiny64_dir))
    seq, mask, _ = _batch()
    with torch.no_grad():
        padded = rm(seq, mask, return_raw=True)[1]
        packed = rm(seq, mask, return_raw=True, packed=True)[1]
        hidden = rm.backbone.embed_tokens(seq)
        from_embeds = rm(inputs_embeds=hidden, attention_mask=mask, return_raw=True, packed=True)[1]
    assert (padded - packed).abs().max() <= 1e-5 * padded.abs().max()
    assert (padded - from_embeds).abs().max() <= 1e-5 * padded.abs().max()
