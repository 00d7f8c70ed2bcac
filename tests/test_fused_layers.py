"""The fused C decoder layers (hrlaif/core/fused_layers.py): a decode step equal to transformers' to
fp32's own error, where they apply, and out of the way where they do not."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import hrlaif.core.decode_step as D
from hrlaif.core import decoding, fewrows
from hrlaif.core.decoding import growing_cache
from hrlaif.core.tensors import left_pad, position_ids

PROMPTS = [[5, 9, 14, 3], [7, 8, 30, 31, 32, 33, 40], [11, 12]]


@pytest.fixture(autouse=True)
def few_rows(monkeypatch):
    if not fewrows.available():
        pytest.skip("no few-rows kernel on this host (not x86 AVX2+FMA, or no C compiler): decode steps "
                    "keep transformers' ops, which tests/test_decode_step.py covers")
    monkeypatch.setattr(decoding, "fp32_product", lambda *a: "fewrows")  # what the fused layers need


def tiny(attn: str = "eager", seed: int = 0, act: str = "silu") -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                      eos_token_id=2, attn_implementation=attn, hidden_act=act)
    return LlamaForCausalLM(cfg).eval()


def _steps(model, fused: bool, n: int = 4, feed=None):
    """Logits of n decode steps after PROMPTS' prompt pass (fused layers on or off) and the tokens fed:
    each step's greedy token, or `feed`'s."""
    ids, mask = left_pad(PROMPTS, 0)
    out, fed = [], []
    with torch.no_grad(), D.decoding(model, 3):
        built = D.FusedLayers.build(model) if fused else None
        assert (built is not None) == fused
        kw = growing_cache(model, 8)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=True,
                       **kw).logits
        cache = next(iter(kw.values()))
        for i in range(n):
            tok = feed[i] if feed is not None else logits[:, -1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype)], 1)
            logits = D.decode_step(model, tok, cache, mask, position_ids(mask)[:, -1:], 0, built).logits
            out.append(logits)
            fed.append(tok)
    return torch.stack(out), fed


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_fused_steps_are_within_fp32s_own_error_of_float64(attn):
    """Each fused step's logits against a float64 copy of the model, all three fed the plain fp32 run's
    greedy tokens: no further from it than 4x the plain fp32 step is, plus 64 ulp of the logits' scale.
    The bound comes from what fp32 itself does on this host, so it holds on every host type."""
    model = tiny(attn)
    plain, tokens = _steps(model, False)
    fused, _ = _steps(model, True, feed=tokens)
    m64 = copy.deepcopy(model).double()
    m64.config._attn_implementation = "sdpa"  # the same math; eager's float64 mask makes padded rows NaN
    exact = _float64_steps(m64, tokens)
    scale = exact.abs().amax()
    assert ((fused.double() - exact).abs().amax()
            <= 4 * (plain.double() - exact).abs().amax() + 64 * 2.0 ** -24 * scale)


def _float64_steps(m64, tokens):
    """transformers' own forward of the float64 model, one step per fed token."""
    ids, mask = left_pad(PROMPTS, 0)
    out = []
    with torch.no_grad():
        kw = growing_cache(m64, 8)
        m64(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=True, **kw)
        for tok in tokens:
            mask = torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype)], 1)
            out.append(m64(input_ids=tok, attention_mask=mask, position_ids=position_ids(mask)[:, -1:],
                           use_cache=True, **kw).logits)
    return torch.stack(out)


def test_a_layer_hook_sees_the_layers_input_and_output_and_may_replace_it():
    """PPO's shared-trunk collector is a plain forward hook on a decoder layer: under the fused layers it
    gets the layer's input and output (copies: the buffer moves on), and a tensor it returns becomes the
    hidden state, as transformers does."""
    model = tiny()
    seen = []
    handle = model.model.layers[1].register_forward_hook(lambda m, a, out: seen.append((a[0].clone(), out.clone())))
    fused, tokens = _steps(model, True, n=2)
    fused_seen, seen[:] = list(seen), []
    _steps(model, False, n=2, feed=tokens)  # the same tokens: a near-tie cannot make the runs diverge
    assert len(fused_seen) == len(seen) == 3  # the prompt pass, then two steps
    # 1e-4 of the scale: far above fp32 rounding through two layers, far below the O(1) difference the
    # wrong tensor (another layer's, or the buffer after later layers wrote it) would show
    for (fi, fo), (pi, po) in zip(fused_seen[1:], seen[1:]):
        assert fi.shape == pi.shape == fo.shape == po.shape == (3, 1, 64)
        assert torch.allclose(fi, pi, rtol=0, atol=1e-4 * pi.abs().amax()) and torch.allclose(
            fo, po, rtol=0, atol=1e-4 * po.abs().amax())
    handle.remove()
    model.model.layers[1].register_forward_hook(lambda m, a, out: torch.zeros_like(out))
    zeroed, _ = _steps(model, True, n=1)
    assert not torch.allclose(zeroed[0], fused[0])
    assert torch.allclose(zeroed[0], _steps(model, False, n=1)[0][0], rtol=0, atol=1e-4 * zeroed.abs().amax())


def test_fused_layers_stay_off_where_they_do_not_apply(monkeypatch):
    """Another activation, a hooked norm or linear, a bias, or another fp32 product: None, and decode_step
    runs transformers' ops."""
    m = tiny(act="gelu")
    with D.decoding(m, 3):
        assert D.FusedLayers.build(m) is None
    m = tiny()
    m.model.layers[0].input_layernorm.register_forward_hook(lambda *a: None)
    with D.decoding(m, 3):
        assert D.FusedLayers.build(m) is None
    m = tiny()
    m.model.layers[2].mlp.down_proj.register_forward_pre_hook(lambda *a: None)
    with D.decoding(m, 3):
        assert D.FusedLayers.build(m) is None
    m = tiny()
    with D.decoding(m, 3):
        assert D.FusedLayers.build(m) is not None
    monkeypatch.setattr(decoding, "fp32_product", lambda *a: "mkl_packed" if decoding._mkl_packing() else "plain")
    with D.decoding(m, 3):
        assert D.FusedLayers.build(m) is None
