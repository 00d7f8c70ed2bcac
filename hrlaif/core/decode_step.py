"""A Llama decode step without transformers' per-call machinery, computing exactly what it computes.

A decode step of a small model is many small ops, and on a CPU the Python around them counts: for
SmolLM2-135M at batch 8, transformers' forward spends ~6 of a ~73 ms step (AMX host held to AVX2) in
its decorators, keyword plumbing and ~400 module calls. `direct_decode_steps(model)` routes the
one-token-per-row calls of a `generate` through `decode_step`, which runs the same ops in the same
order on the same modules (their `forward`s, so packed linears from hrlaif.core.decoding and the
attention implementation the config names still apply): logits, cache contents and therefore greedy
tokens are bit for bit those of `model.forward` (tests/test_decode_step.py checks it with padding,
eager / SDPA / the shared-prefix attention and hooks).

It applies only where that equality is known to hold: transformers' own Llama classes (SmolLM2 is
one), eval mode, no autograd, hooks only where it calls them as transformers would (forward hooks on
the modules it calls, such as the pre-hook PPO puts on the LM head; plain forward hooks on decoder
layers, such as PPO's shared-trunk collector), and a call that asks for nothing else (no embeddings
input, no attentions or hidden states out). Every other call goes to `model.forward`. Hub kernels (transformers'
`use_kernels`) replace modules' `forward`s and `apply_rotary_pos_emb`, which both paths call alike.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools

import torch
from torch.nn.modules import module as M
from transformers.models.llama import modeling_llama as llama

from hrlaif.core.decoding import decoding_linears
from hrlaif.core.fused_layers import FusedLayers, hooked
from hrlaif.core.prefix_attention import decoding_attention

_CLASSES = {"self_attn": llama.LlamaAttention, "mlp": llama.LlamaMLP, "input_layernorm": llama.LlamaRMSNorm,
            "post_attention_layernorm": llama.LlamaRMSNorm}
# Keywords a decode step may carry and that decode_step handles as model.forward would.
_HANDLED = {"input_ids", "attention_mask", "position_ids", "cache", "past_key_values", "use_cache",
            "logits_to_keep", "return_dict", "output_attentions", "output_hidden_states"}


def _written_for_this_transformers() -> bool:
    """The names and the output field decode_step uses: transformers >= 5.20's Llama (older ones name the
    cache `past_key_values` and build masks elsewhere); any other version keeps `model.forward`."""
    fields = {f.name for f in dataclasses.fields(llama.CausalLMOutputWithPast)}
    return "cache" in fields and all(hasattr(llama, n) for n in (
        "create_causal_mask", "slice_logits_to_keep", "apply_rotary_pos_emb", "eager_attention_forward",
        "ALL_ATTENTION_FUNCTIONS"))


def _leaves(model) -> list:
    """The modules decode_step calls itself: each through `__call__` when hooked (PPO's LM head has a
    pre-hook), else straight to `forward`."""
    inner = model.model
    out = [inner.embed_tokens, inner.rotary_emb, inner.norm, model.lm_head]
    for layer in inner.layers:
        a, m = layer.self_attn, layer.mlp
        out += [layer.input_layernorm, layer.post_attention_layernorm, a.q_proj, a.k_proj, a.v_proj, a.o_proj,
                m.gate_proj, m.up_proj, m.down_proj]
        if isinstance(m.act_fn, torch.nn.Module):
            out.append(m.act_fn)
    return out


def eligible(model) -> bool:
    """Whether `model` is transformers' Llama, built of its own classes, with no global module hooks and
    no hooks on the modules whose calls decode_step inlines (its decoder, each attention and MLP), except
    plain forward hooks on decoder layers (it calls those). The modules it calls (`_leaves`) may carry
    forward hooks: it calls those through `__call__`. The model's own hooks (a DeepSpeed engine's) run
    as ever: `model(...)` calls them around whatever `forward` is."""
    inner = getattr(model, "model", None)
    if not _written_for_this_transformers():
        return False
    if type(model) is not llama.LlamaForCausalLM or type(inner) is not llama.LlamaModel \
            or type(inner.rotary_emb) is not llama.LlamaRotaryEmbedding or type(inner.norm) is not llama.LlamaRMSNorm \
            or type(model.lm_head) is not torch.nn.Linear:
        return False
    if M._global_forward_pre_hooks or M._global_forward_hooks or M._global_backward_hooks \
            or getattr(M, "_global_backward_pre_hooks", None):
        return False
    layers = list(inner.layers)
    if len(layers) != inner.config.num_hidden_layers:
        return False
    for layer in layers:
        if type(layer) is not llama.LlamaDecoderLayer or layer._forward_pre_hooks or layer._backward_hooks \
                or layer._backward_pre_hooks or getattr(layer, "_forward_hooks_with_kwargs", None) \
                or any(layer._forward_hooks_always_called.get(k) for k in layer._forward_hooks):
            return False
        if any(type(getattr(layer, name)) is not cls for name, cls in _CLASSES.items()):
            return False
    leaves = {id(m) for m in _leaves(model)}
    for m in model.modules():
        if m is model or type(m) is llama.LlamaDecoderLayer:  # the model's own hooks: `model(...)` runs them
            continue
        if id(m) in leaves:
            if m._backward_hooks or m._backward_pre_hooks:
                return False
        elif hooked(m):
            return False
    return True


def _call(module):
    """What calling `module` runs: its hooks and forward when hooked, else its forward alone."""
    return module if module._forward_pre_hooks or module._forward_hooks else module.forward


def _fits(model, kw: dict) -> bool:
    ids = kw.get("input_ids")
    cache = kw.get("cache", kw.get("past_key_values"))
    return (ids is not None and ids.dim() == 2 and ids.shape[1] == 1 and cache is not None
            and set(kw) <= _HANDLED and kw.get("use_cache", True) is not False
            and kw.get("return_dict", True) is not False and not kw.get("output_attentions")
            and not kw.get("output_hidden_states") and isinstance(kw.get("logits_to_keep", 0), int)
            and not model.training and not torch.is_grad_enabled()
            and not getattr(model.config, "output_attentions", False)
            and not getattr(model.config, "output_hidden_states", False))


def decode_step(model, input_ids, cache, attention_mask=None, position_ids=None, logits_to_keep: int = 0,
                fused: FusedLayers | None = None):
    """LlamaForCausalLM.forward for one new token per row with a KV cache, op for op (transformers 5.x's
    modeling_llama), without its decorators, and without module calls except where a module is hooked
    (`_call`). Returns the same output type. `fused`: the layers around attention run as two C calls
    each (hrlaif/core/fused_layers.py; fp32, equal to the last bits, not bit for bit)."""
    inner = model.model
    h = _call(inner.embed_tokens)(input_ids)
    if position_ids is None:
        position_ids = (torch.arange(h.shape[1], device=h.device) + cache.get_seq_length()).unsqueeze(0)
    mask = llama.create_causal_mask(config=inner.config, inputs_embeds=h, attention_mask=attention_mask,
                                    cache=cache, position_ids=position_ids)
    cos, sin = inner.rotary_emb(h, position_ids=position_ids)
    attend = llama.ALL_ATTENTION_FUNCTIONS.get_interface(inner.config._attn_implementation,
                                                         llama.eager_attention_forward)
    kwargs = {"position_ids": position_ids, "use_cache": True}
    shape = (*h.shape[:-1], -1)
    if fused is not None and fused.fits(h):
        h = _fused_layers(model, fused, h, cos, sin, cache, mask, attend, kwargs)
    else:
        for layer in inner.layers[: inner.config.num_hidden_layers]:
            residual = layer_input = h
            attn, mlp = layer.self_attn, layer.mlp
            x = _call(layer.input_layernorm)(h)
            heads = (*h.shape[:-1], -1, attn.head_dim)
            q = _call(attn.q_proj)(x).view(heads).transpose(1, 2)
            k = _call(attn.k_proj)(x).view(heads).transpose(1, 2)
            v = _call(attn.v_proj)(x).view(heads).transpose(1, 2)
            q, k = llama.apply_rotary_pos_emb(q, k, cos, sin)
            k, v = cache.update(k, v, attn.layer_idx, kwargs=kwargs)
            o, _ = attend(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling, **kwargs)
            h = residual + _call(attn.o_proj)(o.reshape(shape).contiguous())
            residual = h
            x = _call(layer.post_attention_layernorm)(h)
            h = residual + _call(mlp.down_proj)(mlp.act_fn(_call(mlp.gate_proj)(x)) * _call(mlp.up_proj)(x))
            for hook in layer._forward_hooks.values():  # plain forward hooks (eligible): PPO's trunk collector
                out = hook(layer, (layer_input,), h)
                h = h if out is None else out
    h = _call(inner.norm)(h)
    logits = _call(model.lm_head)(llama.slice_logits_to_keep(h, logits_to_keep))
    return llama.CausalLMOutputWithPast(logits=logits, cache=cache)


def _fused_layers(model, fused: FusedLayers, h, cos, sin, cache, mask, attend, kwargs) -> torch.Tensor:
    """decode_step's layers as `FusedLayers` calls around the cache update and the attention function;
    returns the last layer's hidden states."""
    inner = model.model
    fused.start(h, cos, sin)
    for i, layer in enumerate(inner.layers[: inner.config.num_hidden_layers]):
        attn = layer.self_attn
        layer_input = fused.hidden() if layer._forward_hooks else None
        q, k, v = fused.qkv(i)
        k, v = cache.update(k, v, attn.layer_idx, kwargs=kwargs)
        o, _ = attend(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling, **kwargs)
        fused.out(i, o)
        for hook in layer._forward_hooks.values():  # plain forward hooks (eligible): PPO's trunk collector
            out = hook(layer, (layer_input,), fused.hidden())
            if out is not None:
                fused.set_hidden(out)
    return fused.hidden()


@contextlib.contextmanager
def direct_decode_steps(model):
    """While open, `model(...)` calls that are one-token decode steps with a cache run `decode_step`
    (when `eligible(model)` at entry); everything else runs `model.forward` unchanged."""
    if not eligible(model) or "forward" in vars(model):
        yield
        return
    original = model.forward
    fused = FusedLayers.build(model)

    @functools.wraps(original)  # its signature too: callers look for the cache's keyword name in it
    def forward(*args, **kw):
        if args or not _fits(model, kw):
            return original(*args, **kw)
        return decode_step(model, kw["input_ids"], kw.get("cache", kw.get("past_key_values")),
                           kw.get("attention_mask"), kw.get("position_ids"), kw.get("logits_to_keep", 0), fused)

    model.forward = forward
    try:
        yield
    finally:
        del model.forward


@contextlib.contextmanager
def decoding(model, rows: int):
    """Everything that makes a `generate` call of `model` on `rows` rows decode faster, for its duration:
    packed linears (hrlaif.core.decoding), SDPA for an eager model's decode steps
    (hrlaif.core.prefix_attention) and `direct_decode_steps`. PPO's rollouts, the sample stage and
    evaluation's generation all decode through it; the cache (`growing_cache`) is the caller's."""
    with decoding_linears(model, rows), decoding_attention(model), direct_decode_steps(model):
        yield
