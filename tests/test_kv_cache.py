"""The in-place KV cache (hrlaif.core.decoding.GrowingKVCache) computes what DynamicCache computes."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from hrlaif.core.decoding import GrowingKVCache, GrowingLayer, growing_cache


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def _greedy(model, cache, ids, mask, steps: int):
    """Prompt pass then `steps` greedy decode steps; returns every step's logits and the cache."""
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True, cache=cache)
        logits = [out.logits[:, -1]]
        for _ in range(steps):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            out = model(input_ids=logits[-1].argmax(-1, keepdim=True), attention_mask=mask, cache=out["cache"],
                        use_cache=True)
            logits.append(out.logits[:, -1])
    return torch.stack(logits), out["cache"]


def test_growing_cache_gives_dynamic_cache_logits_bit_for_bit_across_regrowth(model):
    ids = torch.randint(5, 60, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding, as batched generation has
    want, _ = _greedy(model, DynamicCache(config=model.config), ids, mask, 20)
    got, cache = _greedy(model, GrowingKVCache(config=model.config, reserve=3), ids, mask, 20)  # regrows 3 times
    assert torch.equal(want, got)
    layer = cache.layers[0]
    assert isinstance(layer, GrowingLayer) and layer.get_seq_length() == 11 + 20
    assert layer.keys.data_ptr() == layer._kbuf.data_ptr() and layer._kbuf.shape[-2] >= 31  # views, not copies


def test_a_step_writes_in_place_instead_of_copying_the_cache(model):
    ids = torch.randint(5, 60, (2, 9))
    _, cache = _greedy(model, GrowingKVCache(config=model.config, reserve=16), ids, torch.ones_like(ids), 1)
    buf, before = cache.layers[0]._kbuf, cache.layers[0].keys.clone()
    with torch.inference_mode():
        model(input_ids=ids[:, :1], attention_mask=torch.ones(2, 11, dtype=torch.long), cache=cache, use_cache=True)
    layer = cache.layers[0]
    assert layer._kbuf is buf and layer.get_seq_length() == 11
    assert torch.equal(layer.keys[..., :10, :], before)  # earlier positions untouched


def test_crop_and_batch_selection_keep_values_exact(model):
    ids = torch.randint(5, 60, (3, 8))
    mask = torch.ones_like(ids)
    ref, grow = DynamicCache(config=model.config), GrowingKVCache(config=model.config, reserve=4)
    for cache in (ref, grow):
        _greedy(model, cache, ids, mask, 5)
        cache.crop(-2)  # keeps a prefix view of the buffer
        cache.batch_select_indices(torch.tensor([2, 0]))  # new tensors: the next update re-adopts them
    want, _ = _greedy(model, ref, ids[[2, 0], :1], torch.ones(2, 12, dtype=torch.long), 6)
    got, _ = _greedy(model, grow, ids[[2, 0], :1], torch.ones(2, 12, dtype=torch.long), 6)
    assert torch.equal(want, got)


def test_with_autograd_it_concatenates_like_dynamic_cache(model):
    """In-place writes into a buffer autograd saved would break backward, so training passes fall back."""
    ids = torch.randint(5, 60, (2, 6))
    cache = GrowingKVCache(config=model.config)
    out = model(input_ids=ids, use_cache=True, cache=cache)
    out2 = model(input_ids=ids[:, :2], use_cache=True, cache=out["cache"])
    (out.logits.sum() + out2.logits.sum()).backward()
    assert cache.layers[0]._kbuf is None and cache.layers[0].get_seq_length() == 8
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)


def test_generate_takes_the_growing_cache_and_keeps_greedy_text(model):
    ids = torch.randint(5, 60, (2, 7))
    with torch.inference_mode():
        plain = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                               do_sample=False, pad_token_id=0)
        grown = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                               do_sample=False, pad_token_id=0, **growing_cache(model, 4))
    assert torch.equal(plain, grown)


def test_the_fp32_decode_product_is_chosen_by_timing_once_per_host_and_kept(model, tmp_path, monkeypatch):
    """Which fp32 product decodes faster depends on the CPU and the libraries' dispatch, so each candidate
    is timed on the host; the decision is written to the cache and read back (not re-timed), so later runs
    decode the same way, and decoding takes the recorded product."""
    import json

    from hrlaif.core import decoding

    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path))
    monkeypatch.setattr(decoding, "_FP32_PRODUCT", {})
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    first = decoding.fp32_product(linears, 4)
    path = tmp_path / "host-calibration.json"
    (key, rec), = json.loads(path.read_text()).items()
    cands = decoding.fp32_candidates(4)
    assert rec["product"] == first and rec["rows"] == 4 and list(rec["ms"]) == cands
    assert first == "plain" or rec["ms"][first] < 0.9 * rec["ms"]["plain"]
    for forced in cands:  # as if an earlier run had decided so
        path.write_text(json.dumps({key: {**rec, "product": forced}}))
        monkeypatch.setattr(decoding, "_FP32_PRODUCT", {})
        assert decoding.fp32_product(linears, 4) == forced
        with decoding.decoding_linears(model, 4):
            patched = {m.forward.__func__ for m in linears if "forward" in vars(m)}
        assert patched == (set() if forced == "plain" else {decoding.FORWARDS[forced]})
        assert not any("forward" in vars(m) or {"_mkl_weight", "_packed_weight", "_fewrows_weight"} & set(vars(m))
                       for m in linears)  # restored on exit


def test_the_calibration_leaves_the_global_rng_alone(model, tmp_path, monkeypatch):
    """A sampler seeds the global RNG and then opens `decoding()`: the first run on a host calibrates there,
    and random inputs drawn from the global RNG made its samples differ from every later run's."""
    from hrlaif.core import decoding

    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path))
    monkeypatch.setattr(decoding, "_FP32_PRODUCT", {})
    torch.manual_seed(5)
    state = torch.get_rng_state()
    decoding.fp32_product([m for m in model.modules() if isinstance(m, torch.nn.Linear)], 5)
    assert (tmp_path / "host-calibration.json").exists()  # it did calibrate
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("q,padded", [(1, True), (4, True), (1, False), (3, False)])
def test_shared_prefix_attention_is_attention_over_the_whole_row(q, padded):
    """The prefix's keys and values kept once for the batch, every row's own part beside them: the same
    output as SDPA over each row's full keys and values (decode q=1 and a multi-token pass; a padding
    mask, or none = causal), grouped-query heads included."""
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from hrlaif.core.prefix_attention import SharedPrefixLayer, shared_prefix_attention

    torch.manual_seed(0)
    B, H, kvh, d, P, S = 3, 6, 2, 8, 11, 7
    query = torch.randn(B, H, q, d)
    kp, vp = torch.randn(1, kvh, P, d), torch.randn(1, kvh, P, d)
    key, value = torch.randn(B, kvh, S, d), torch.randn(B, kvh, S, d)
    full_k, full_v = torch.cat([kp.expand(B, -1, -1, -1), key], 2), torch.cat([vp.expand(B, -1, -1, -1), value], 2)
    pos = torch.arange(P + S)
    mask = (pos[None, :] <= pos[P + S - q:, None])[None, None].expand(B, 1, q, P + S).clone()
    if padded:  # row i has i padding positions right after the prefix
        for i in range(B):
            mask[i, :, :, P:P + i] = False
    plain = SimpleNamespace(num_key_value_groups=H // kvh, training=False, is_causal=True)
    shared = SimpleNamespace(**vars(plain), _shared_prefix_layer=SharedPrefixLayer(kp, vp))
    want, _ = sdpa_attention_forward(plain, query, full_k, full_v, mask, scaling=0.3)
    got, _ = shared_prefix_attention(shared, query, key, value, mask if padded else None, scaling=0.3)
    assert got.shape == want.shape == (B, q, H, d)
    assert torch.allclose(got, want, atol=1e-5)


def test_shared_prefix_cache_counts_the_prefix_and_restores_the_model(model):
    from hrlaif.core.prefix_attention import ATTENTION_NAME, SharedPrefixLayer, shared_prefix_cache

    n = model.config.num_hidden_layers
    kvh = model.config.num_key_value_heads
    d = getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads
    prefix = [(torch.randn(1, kvh, 5, d), torch.randn(1, kvh, 5, d)) for _ in range(n)]
    before = model.config._attn_implementation
    with shared_prefix_cache(model, prefix, reserve=4) as kwarg:
        cache = next(iter(kwarg.values()))
        assert model.config._attn_implementation.startswith(ATTENTION_NAME)
        assert all(isinstance(layer, SharedPrefixLayer) for layer in cache.layers)
        assert cache.get_seq_length() == 5
        cache.update(torch.randn(2, kvh, 3, d), torch.randn(2, kvh, 3, d), 0)
        assert cache.layers[0].get_seq_length() == 8 and cache.layers[0].keys.shape[-2] == 3
        assert cache.layers[0].get_mask_sizes(1) == (9, 0)
    assert model.config._attn_implementation == before
    assert not any("_shared_prefix_layer" in vars(m) for m in model.modules())


@pytest.mark.parametrize("mask_kind", ["bool", "additive", None])
def test_a_decode_step_of_an_eager_model_runs_sdpa_as_eager_attention_would(mask_kind):
    """Without a shared prefix, one query per row, no grad, fp32: SDPA's fused kernel gives what the
    model's eager attention gives, under eager's additive mask, a bool mask or none."""
    from types import SimpleNamespace

    from transformers.models.llama.modeling_llama import eager_attention_forward

    from hrlaif.core.prefix_attention import shared_prefix_attention

    torch.manual_seed(1)
    B, H, kvh, d, S = 3, 6, 2, 8, 9
    query, key, value = torch.randn(B, H, 1, d), torch.randn(B, kvh, S, d), torch.randn(B, kvh, S, d)
    keep = torch.ones(B, 1, 1, S, dtype=torch.bool)
    for i in range(B):
        keep[i, ..., :i] = False  # left padding
    additive = torch.where(keep, 0.0, torch.finfo(torch.float32).min)
    mask = {"bool": keep, "additive": additive, None: None}[mask_kind]
    module = SimpleNamespace(num_key_value_groups=H // kvh, training=False, is_causal=True,
                             _attention_before="eager")
    want, _ = eager_attention_forward(module, query, key, value, additive if mask_kind else None, scaling=0.4)
    with torch.no_grad():
        got, _ = shared_prefix_attention(module, query, key, value, mask, scaling=0.4)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_generation_under_decoding_attention_is_generation_under_the_models_own(tiny_model_dir, implementation,
                                                                                  monkeypatch):
    """PPO's sampler with left-padded prompts: an eager model's decode steps go through the switch (counted),
    its prompt pass back to eager with eager's own additive causal mask; an SDPA model is not switched.
    The same tokens and log-probs as without the switch; the model is restored afterwards."""
    import contextlib

    from hrlaif.core import decode_step, prefix_attention
    from hrlaif.trainers import generation

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=implementation).eval()
    prompts = [[5, 9, 14, 3, 22, 7], [11, 4], [8, 8, 30, 2]]
    kw = dict(max_new_tokens=6, eos_ids=[-1], pad_id=0, greedy=True)
    monkeypatch.setattr(decode_step, "decoding_attention", lambda m: contextlib.nullcontext())
    want = generation.generate(model, prompts, **kw)
    monkeypatch.undo()
    calls = []
    real = prefix_attention.shared_prefix_attention

    def spy(m, query, *a, **k):
        calls.append((query.shape[2], getattr(m, "_attention_before", None)))
        return real(m, query, *a, **k)
    monkeypatch.setattr(prefix_attention, "shared_prefix_attention", spy)
    got = generation.generate(model, prompts, **kw)
    n_layers = model.config.num_hidden_layers
    if implementation == "eager":
        assert calls.count((1, "eager")) == 5 * n_layers  # every decode step, every layer
        assert calls.count((6, "eager")) == n_layers and len(calls) == 6 * n_layers  # the prompt pass, handed back
    else:
        assert calls == []
    assert torch.equal(got.sequences, want.sequences)
    assert torch.allclose(got.logprobs, want.logprobs, atol=1e-5)
    assert model.config._attn_implementation == implementation
    assert not any("_attention_before" in vars(m) for m in model.modules())


def test_under_autocast_a_decode_step_keeps_the_models_own_attention():
    """bf16 autocast: the sampler must attend as the update's forward does (bf16 products), or PPO samples
    off-policy; so the per-kv-head fp32 path is not taken and the model's implementation runs."""
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from hrlaif.core.prefix_attention import shared_prefix_attention

    torch.manual_seed(2)
    query, key, value = torch.randn(2, 4, 1, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[0, ..., 0] = False
    module = SimpleNamespace(num_key_value_groups=2, training=False, is_causal=True, _attention_before="sdpa")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = shared_prefix_attention(module, query, key, value, mask, scaling=0.4)
        want, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.4)
    assert torch.equal(got, want)
