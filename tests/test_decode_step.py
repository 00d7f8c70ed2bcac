"""The direct Llama decode step (hrlaif/core/decode_step.py) computes exactly what transformers computes.

Every comparison is torch.equal: the step runs the same ops in the same order on the same modules, so
there is no tolerance to choose and nothing that depends on the host."""
from __future__ import annotations

import contextlib

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import hrlaif.core.decode_step as D
from hrlaif.core.decoding import growing_cache
from hrlaif.core.prefix_attention import decoding_attention, shared_prefix_cache
from hrlaif.core.tensors import left_pad, position_ids
from hrlaif.trainers.generation import generate


def tiny(attn: str = "sdpa", seed: int = 0, saved=None) -> LlamaForCausalLM:
    """A random Llama; loaded back with from_pretrained when `saved` is a directory, as the harness loads
    models (transformers 5 kernelizes those when `kernels` is installed: `use_kernels`)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                      eos_token_id=2, attn_implementation=attn)
    model = LlamaForCausalLM(cfg)
    if saved is not None:
        model.save_pretrained(saved)
        model = LlamaForCausalLM.from_pretrained(saved, attn_implementation=attn)
    return model.eval()


PROMPTS = [[5, 9, 14, 3], [7, 8, 30, 31, 32, 33, 40], [11, 12]]  # left padding of 3, 0 and 5


@pytest.fixture(autouse=True)
def op_for_op(monkeypatch):
    """These tests are about the op-for-op step: the fused C layers (equal to the last bits, not bit for
    bit; tests/test_fused_layers.py) stay off, whichever product the host's calibration picks."""
    monkeypatch.setattr(D.FusedLayers, "build", classmethod(lambda cls, model: None))


@pytest.fixture
def counted(monkeypatch):
    """The number of calls that took the direct step."""
    calls = []
    real = D.decode_step
    monkeypatch.setattr(D, "decode_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _cache_tensors(cache):
    return [t for layer in cache.layers for t in (layer.keys, layer.values)]


@pytest.mark.parametrize("attn,autocast,positions,loaded", [
    ("sdpa", False, True, False), ("eager", False, True, False), ("sdpa", False, False, False),
    ("sdpa", True, True, False), ("sdpa", False, True, True)])
def test_each_step_gives_transformers_logits_and_cache_bit_for_bit(attn, autocast, positions, loaded, tmp_path):
    model = tiny(attn, saved=tmp_path if loaded else None)
    assert D.eligible(model)
    ids, mask = left_pad(PROMPTS, 0)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.no_grad(), ctx, decoding_attention(model):
        caches = []
        for _ in range(2):  # two identical caches, one per path
            kw = growing_cache(model, 8)
            model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=True, **kw)
            caches.append(next(iter(kw.values())))
        tok = torch.tensor([[4], [6], [8]])
        for step in range(5):
            mask = torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype)], 1)
            pos = position_ids(mask)[:, -1:] if positions else None
            ref = model.forward(input_ids=tok, attention_mask=mask, position_ids=pos, use_cache=True,
                                **{next(iter(growing_cache(model, 1))): caches[0]})
            out = D.decode_step(model, tok, caches[1], mask, pos)
            assert torch.equal(ref.logits, out.logits), f"step {step}"
            assert all(torch.equal(a, b) for a, b in zip(_cache_tensors(caches[0]), _cache_tensors(caches[1])))
            tok = ref.logits[:, -1].argmax(-1, keepdim=True)


@pytest.mark.parametrize("greedy", [True, False])
def test_ppo_generation_with_its_hooks_is_unchanged(greedy, counted, monkeypatch, tmp_path):
    """PPO's actor: the LM head's contiguous-input pre-hook, and the shared trunk's collector on a layer."""
    from hrlaif.trainers.models import contiguous_args

    model = tiny(saved=tmp_path)
    model.lm_head.register_forward_pre_hook(contiguous_args)
    assert D.eligible(model)
    args = dict(max_new_tokens=6, eos_ids=[2], pad_id=0, greedy=greedy, seeds=[3, 4, 5], trunk_depth=2)
    direct = generate(model, PROMPTS, **args)
    assert len(counted) == 5  # every step after the first token (the last token is never fed back)
    monkeypatch.setattr(D, "eligible", lambda m: False)
    plain = generate(model, PROMPTS, **args)
    assert len(counted) == 5
    for name in ("sequences", "logprobs", "response_mask", "hidden"):
        assert torch.equal(getattr(direct, name), getattr(plain, name)), name
    assert "forward" not in vars(model)


def test_transformers_generate_with_a_shared_prefix_is_unchanged(counted, monkeypatch):
    """Evaluation's path: HF generate over a cache holding a prefix every row shares (eager model, so
    decoding_attention switches it too)."""
    model = tiny("eager")
    prefix = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        kv = model.model(input_ids=prefix, use_cache=True).cache
    prefix_kv = [(layer.keys, layer.values) for layer in kv.layers]
    own, mask = left_pad([[11, 12], [13], [14, 15, 16]], 0)
    ids = torch.cat([prefix.expand(3, -1), own], 1)
    mask = torch.cat([torch.ones(3, 6, dtype=mask.dtype), mask], 1)

    def run():
        with torch.no_grad(), D.decoding(model, 3), shared_prefix_cache(model, prefix_kv, 12) as kw:
            assert kw is not None
            return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=7, do_sample=False,
                                  pad_token_id=0, eos_token_id=None, **kw)

    direct = run()
    assert len(counted) == 6
    monkeypatch.setattr(D, "eligible", lambda m: False)
    assert torch.equal(direct, run()) and len(counted) == 6


def test_hooks_on_the_modules_it_calls_run_as_under_transformers(counted, monkeypatch):
    """A forward hook that changes a projection's output and a pre-hook that changes the norm's input:
    both paths run them, once per call, with the same results."""
    model = tiny()
    seen = []
    model.model.layers[1].self_attn.v_proj.register_forward_hook(lambda m, i, o: seen.append(1) or o * 1.5)
    model.model.norm.register_forward_pre_hook(lambda m, args: (args[0] + 0.25,))
    top = []  # the model's own hooks (a DeepSpeed engine puts some there) run around any forward
    model.register_forward_pre_hook(lambda m, args, kwargs: top.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    assert D.eligible(model)
    args = dict(max_new_tokens=5, eos_ids=[2], pad_id=0, greedy=True)
    direct = generate(model, PROMPTS, **args)
    calls = len(seen)
    monkeypatch.setattr(D, "eligible", lambda m: False)
    plain = generate(model, PROMPTS, **args)
    assert len(counted) == 4 and calls == len(seen) - calls == 5  # the prompt pass and 4 steps, each way
    assert top == [7, 1, 1, 1, 1] * 2
    assert torch.equal(direct.sequences, plain.sequences) and torch.equal(direct.logprobs, plain.logprobs)


def test_calls_it_does_not_cover_run_transformers_forward(counted):
    model = tiny()
    ids, mask = left_pad(PROMPTS, 0)
    with torch.no_grad(), D.decoding(model, 3):
        kw = growing_cache(model, 8)
        model(input_ids=ids, attention_mask=mask, use_cache=True, **kw)  # a prompt pass: many tokens
        step = dict(input_ids=ids[:, -1:], attention_mask=torch.cat([mask, mask[:, -1:]], 1), **kw)
        out = model(**step, output_hidden_states=True)  # asks for something the direct step does not give
        assert out.hidden_states is not None
        with torch.enable_grad():
            model(**step)
        model.train()
        model(**step)
        model.eval()
        model(**step)
    assert len(counted) == 1
    assert "forward" not in vars(model)


def test_models_it_was_not_checked_on_are_left_alone():
    model = tiny()
    assert D.eligible(model)
    handle = model.model.layers[0].mlp.register_forward_hook(lambda *a: None)
    assert not D.eligible(model)  # a hook on a module whose call it inlines
    handle.remove()
    handle = model.model.layers[0].self_attn.register_forward_pre_hook(lambda *a: None)
    assert not D.eligible(model)
    handle.remove()
    handle = model.lm_head.register_full_backward_hook(lambda *a: None)
    assert not D.eligible(model)
    handle.remove()
    handle = model.model.layers[0].register_forward_pre_hook(lambda *a: None)
    assert not D.eligible(model)
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:
        assert not D.eligible(model)
    finally:
        handle.remove()

    class Subclass(LlamaForCausalLM):  # may override forward: its own code, not transformers'
        pass

    real = D._written_for_this_transformers
    D._written_for_this_transformers = lambda: False  # an older transformers: its Llama is not what it restates
    try:
        assert not D.eligible(model)
    finally:
        D._written_for_this_transformers = real
    sub = Subclass(model.config).eval()
    assert not D.eligible(sub)
    with D.direct_decode_steps(sub):
        assert "forward" not in vars(sub)
    assert D.eligible(model)


def test_ppo_rollouts_and_drift_points_take_the_direct_step(tiny_model_dir, tmp_path, random_rm, counted):
    """The real trainer (DeepSpeed engine, the LM head's pre-hook, the shared trunk's collector): its
    rollouts and its held-out generation decode through the direct step."""
    from hrlaif.trainers.configs import PPOConfig
    from hrlaif.trainers.ppo import PPOTrainer
    from tests.test_ppo import write_prompts

    rm_dir = random_rm(tiny_model_dir, tmp_path / "rm", seed=3)
    cfg = PPOConfig(model=str(tiny_model_dir), reward_model=str(rm_dir), out=str(tmp_path / "ppo"),
                    prompts=str(write_prompts(tmp_path / "p.jsonl", 4)), steps=1, batch_size=4, mini_batch_size=4,
                    max_new_tokens=5, seed=2, train_layers=1, share_trunk=True, precision="fp32")
    trainer = PPOTrainer(cfg)
    assert D.eligible(trainer.actor.module)
    trainer.run()
    assert len(counted) >= 4  # one rollout's 4 decode steps at least (drift points add theirs)
