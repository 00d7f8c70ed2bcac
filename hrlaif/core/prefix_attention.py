"""Attention over a prompt prefix that every row of a batch shares, read once per step for all rows.

Few-shot generation (GSM8K: 5 shots, ~700 of each prompt's ~750 tokens) decodes a batch whose rows
start with the same tokens. With one KV cache row per sequence, every decode step streams that
prefix's keys and values once per row: at batch 8 after a 900-token prompt, SDPA was ~30% of a
SmolLM2 decode step (AMX host held to AVX2), all of it memory traffic. Here the prefix's keys and
values are kept once (batch 1, `SharedPrefixLayer`) and every row's queries meet them in one product;
each row's own tokens (its suffix, padding and generated tokens) stay in a per-row `GrowingLayer`.
Both parts go through one softmax, so the result is attention over the whole row, in fp32. A pass of
several tokens per row (the rows' own prompt tokens) runs SDPA over the full rows instead: its scores
for every query at once would be large, and it happens once per generate call.

A decode step's attention (one query per row, fp32 on a CPU) runs in one C call
(`hrlaif/core/fewrows.py: prefix_attention_step`: scores, softmax, weighted values) where the kernel is
built, else as the torch ops below.

`shared_prefix_cache(model, prefix_kv, reserve)` sets it up for one `generate` call
(hrlaif/evalsets/prefix_lm.py `_shared_prefix_generation`): attention modules read the prefix from
their cache layer, and the model's attention implementation is switched to `ATTENTION_NAME` (the
model's own implementation for everything else: training, or a module without a shared prefix) and back
on exit. `decoding_attention(model)` switches an eager model the same way for its decode steps, which
then run SDPA's fused kernel.
"""
from __future__ import annotations

import contextlib
import sys

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from hrlaif.core import fewrows
from hrlaif.core.decoding import GrowingKVCache, GrowingLayer, growing_cache

ATTENTION_NAME = "hrlaif_shared_prefix"


class SharedPrefixLayer(GrowingLayer):
    """A GrowingLayer after `prefix_len` positions held once for the whole batch (`prefix_keys`,
    `prefix_values`: [1, kv heads, prefix_len, head dim], fp32). Lengths and mask sizes count the
    prefix, so positions and masks are those of the full rows; `update` returns the rows' own part."""

    def __init__(self, prefix_keys: torch.Tensor, prefix_values: torch.Tensor, reserve: int = 256, **kwargs):
        super().__init__(reserve=reserve, **kwargs)
        self.prefix_keys, self.prefix_values = prefix_keys.contiguous(), prefix_values.contiguous()
        self.prefix_len = prefix_keys.shape[-2]
        self.packed_keys = None  # `kernel_ready` packs them on first use

    def get_seq_length(self) -> int:
        return self.prefix_len + super().get_seq_length()

    def kernel_ready(self, query, key, value) -> bool:
        """Whether this decode step runs `fewrows.prefix_attention_step`: fp32 on a CPU with the kernel,
        head dim a multiple of 8. The prefix's keys are packed for it once, on the first such step."""
        if self.packed_keys is None:
            ok = self.prefix_keys.dtype == torch.float32 and fewrows.attention_ready(query, key, value)
            self.packed_keys = fewrows.pack_heads(self.prefix_keys[0]) if ok else False
        return self.packed_keys is not False and fewrows.attention_ready(query, key, value)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0 and -tokens_to_remove > self.own_length():
            raise ValueError("cannot crop into the shared prefix")
        super().crop(tokens_to_remove)


def shared_prefix_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                            **kwargs):
    """Attention of `query` [B, H, q, d] over the module's shared prefix and the rows' own `key`/`value`
    [B, kv heads, S, d], under `attention_mask` [B or 1, 1, q, prefix + S] (bool: True attends; or
    additive; None: causal over the own part).

    Without a shared prefix: a decode step of an eager model (one query per row, no grad, fp32, no
    autocast) runs the C kernel of hrlaif/core/fewrows.py where it is built (else SDPA's fused kernel)
    instead of eager's matmul, mask add, softmax and matmul over
    per-query-head copies of the cache (SmolLM2's shapes at batch 8, held to AVX2: 59 against 370 us per
    layer after 100 tokens, 0.65 against 2.0 ms after 900). Everything else runs the model's own
    implementation. Under autocast that is deliberate: a sampler whose attention were more exact than
    the update's bf16 forward samples off-policy (PPO's bf16 vowel test then learned systematically
    slower: 2.6-3.0 against 4.2-5.7 over seeds 1-3; fp32 trajectories were identical)."""
    layer = getattr(module, "_shared_prefix_layer", None)
    B, H, q, d = query.shape
    if layer is None or module.training:
        if q > 1 or module.training or torch.is_grad_enabled() or query.dtype != torch.float32 \
                or torch.is_autocast_enabled(query.device.type):  # not a plain fp32 decode step
            return own_attention(module)(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                   **kwargs)
        if fewrows.attention_ready(query, key, value):  # the C kernel, with no prefix
            return fewrows.prefix_attention_step(query, *fewrows.no_prefix(key), key, value, attention_mask,
                                                 query.shape[-1] ** -0.5 if scaling is None else scaling), None
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            attention_mask = attention_mask == 0  # eager's additive mask: 0 where a position is attended
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    kp, vp = layer.prefix_keys, layer.prefix_values
    if q > 1:  # the rows' own prompt pass: SDPA over full rows, whose kernels never hold every score at once
        full = [torch.cat([p.to(x.dtype).expand(B, -1, -1, -1), x], dim=-2) for p, x in ((kp, key), (vp, value))]
        if attention_mask is None:  # no padding: causal over the own part, the prefix visible to every query
            own = torch.arange(key.shape[-2], device=query.device)
            attention_mask = torch.cat([torch.ones(q, kp.shape[-2], dtype=torch.bool, device=query.device),
                                        own[None, :] <= own[key.shape[-2] - q:, None]], dim=-1)[None, None]
        return sdpa_attention_forward(module, query, *full, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    kvh, S, P = key.shape[1], key.shape[-2], kp.shape[-2]
    scale = d ** -0.5 if scaling is None else scaling
    if layer.kernel_ready(query, key, value):  # the C kernel (hrlaif/core/fewrows.py): one pass over the prefix
        return fewrows.prefix_attention_step(query, layer.packed_keys, layer.prefix_values[0], key, value,
                                             attention_mask, scale), None
    g = H // kvh  # query heads per key/value head: head h reads kv head h // g (repeat_kv's order)
    with torch.autocast(query.device.type, enabled=False):
        qf = query.float().reshape(B, kvh, g * q, d)
        # Every row's queries against the one prefix: [1, kvh, B*g*q, d] x [1, kvh, d, P].
        sp = torch.matmul(qf.transpose(0, 1).reshape(1, kvh, B * g * q, d), kp.transpose(-1, -2))
        sp = sp.reshape(kvh, B, g * q, P).transpose(0, 1)
        ss = torch.matmul(qf, key.float().transpose(-1, -2))
        scores = torch.cat([sp, ss], dim=-1).mul_(scale).view(B, kvh, g, q, P + S)
        if attention_mask is not None:  # None: one query with nothing to hide from it
            mask = attention_mask[:, :, None]  # [B or 1, 1, 1, q, P + S]: the same for every head
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, float("-inf"))
            else:
                scores = scores + mask.float()
        probs = torch.softmax(scores, dim=-1).view(B, kvh, g * q, P + S)
        pp = probs[..., :P].transpose(0, 1).reshape(1, kvh, B * g * q, P)
        out = torch.matmul(pp, vp).reshape(kvh, B, g * q, d).transpose(0, 1)
        out = out + torch.matmul(probs[..., P:], value.float())
    out = out.reshape(B, H, q, d).transpose(1, 2).to(query.dtype).contiguous()
    return out, None


def own_attention(module):
    """The attention function the module ran before `decoding_attention` switched it (a model's eager
    attention is a function of its own modeling file, as its forward looks it up)."""
    before = getattr(module, "_attention_before", "sdpa")
    if before == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[before]


def _register() -> str:
    # One name per implementation it stands in for: the multi-token passes it hands back get that
    # implementation's mask (eager's is additive and never skipped; SDPA's may be None when causal).
    for name, mask in ((ATTENTION_NAME, sdpa_mask), (ATTENTION_NAME + "_eager", eager_mask)):
        AttentionInterface.register(name, shared_prefix_attention)
        AttentionMaskInterface.register(name, mask)
    return ATTENTION_NAME


def attention_modules(model) -> list:
    return [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "num_key_value_groups")]


def decoding_attention(model):
    """While open, an eager model's decode steps run SDPA (`shared_prefix_attention`; everything else
    keeps eager, with eager's own mask). Models on SDPA or another implementation, models whose attention
    modules are not the plain kind, and a model already switched (nested) are left alone."""
    modules = attention_modules(model)
    if model.config._attn_implementation != "eager" or not modules or not all(plain_attention(m) for m in modules):
        return contextlib.nullcontext()
    return switched_attention(model, modules)


@contextlib.contextmanager
def switched_attention(model, modules, register=_register):
    """The model's attention implementation set to the function `register()` registers (under the name
    it returns: `shared_prefix_attention` by default; with "_eager" appended when the model's own
    implementation is eager) and back on exit; a no-op when already switched."""
    config = getattr(model, "config", None) or modules[0].config  # a critic wrapper may have none
    before = config._attn_implementation
    if before not in ("sdpa", "eager"):
        yield
        return
    name = register()
    for m in modules:
        m._attention_before = before
    config._attn_implementation = name + ("_eager" if before == "eager" else "")
    try:
        yield
    finally:
        config._attn_implementation = before
        for m in modules:
            m.__dict__.pop("_attention_before", None)


def plain_attention(module) -> bool:
    """Softmax(q k^T * scaling + mask) v and nothing else: no logit soft-capping (Gemma 2) and no
    attention sinks (gpt-oss), which eager and SDPA would apply and this module's paths would not."""
    config = getattr(module, "config", None)
    return not (getattr(config, "attn_logit_softcapping", None) or hasattr(module, "sinks"))


@contextlib.contextmanager
def shared_prefix_cache(model, prefix_kv: list[tuple[torch.Tensor, torch.Tensor]], reserve: int):
    """`generate` keyword for a cache whose layer i holds `prefix_kv[i]` ([1, kv heads, P, d]) once for
    every row, with room for `reserve` more per-row positions; while open, the model's attention reads
    it (`shared_prefix_attention`). Yields None where that cannot apply (an attention implementation
    other than SDPA or eager, or layers that are not the plain full-attention kind): the caller then
    copies the prefix into every row."""

    modules = attention_modules(model)
    kwarg = growing_cache(model, reserve)
    cache: GrowingKVCache = next(iter(kwarg.values()))
    by_idx = {m.layer_idx: m for m in modules}
    if model.config._attn_implementation not in ("sdpa", "eager", ATTENTION_NAME, ATTENTION_NAME + "_eager") \
            or set(by_idx) != set(range(len(prefix_kv))) \
            or len(cache.layers) != len(prefix_kv) or not all(type(layer) is GrowingLayer for layer in cache.layers) \
            or not all(plain_attention(m) for m in modules):
        yield None
        return
    cache.layers = [SharedPrefixLayer(k.float(), v.float(), reserve=layer.reserve)
                    for (k, v), layer in zip(prefix_kv, cache.layers)]
    try:
        for i, layer in enumerate(cache.layers):
            by_idx[i]._shared_prefix_layer = layer
        with switched_attention(model, modules):
            yield kwarg
    finally:
        for m in modules:
            m.__dict__.pop("_shared_prefix_layer", None)
