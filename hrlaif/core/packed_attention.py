"""Padding-free forwards: a padded batch's rows laid end to end as one row, each attending only to itself.

A PPO batch is left-padded prompts plus right-padded responses: at batch 8 with <= 96-token prompts and
64-token responses, 8-13% of the [8, 160] grid is padding, and every linear layer of the update's four
forwards and backwards (policy, critic) and of the reference's forward multiplies it. Packed, the
linear layers see only the real tokens; attention runs row by row over each row's own span (the
model's own eager or SDPA function, causal), so nothing attends across rows and each row's positions
are those of its padded self (`position_ids(mask)`). The result equals the padded forward's at every
real token up to the order of floating-point sums (`tests/test_packed_attention.py`).

`Packing(mask)` packs [B, W, ...] tensors into [1, T, ...] and back; `packed_rows(model, packing)`
switches the model's attention for the duration of one forward. Models whose attention is not plain
eager or SDPA (flash-attention kernels, soft-capping, sinks, sliding windows) are not switched:
`packable(model)` says so and the caller keeps the padded batch.
"""
from __future__ import annotations

import contextlib

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from hrlaif.core.prefix_attention import attention_modules, own_attention, plain_attention, switched_attention
from hrlaif.core.tensors import position_ids

PACKED_NAME = "hrlaif_packed_rows"


class Packing:
    """Where the real tokens (mask 1) of a [B, W] batch go in the packed [1, T] row, row after row."""

    def __init__(self, attention_mask: torch.Tensor):
        mask = attention_mask.bool()
        self.batch, self.width = mask.shape
        self.index = mask.flatten().nonzero().squeeze(1)  # flat [B*W] positions of the real tokens
        self.lengths = [int(n) for n in mask.sum(1).tolist()]
        self.position_ids = position_ids(attention_mask).flatten()[self.index][None]
        self._slot = None

    @property
    def tokens(self) -> int:
        return int(self.index.numel())

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[B, W, ...] -> [1, T, ...]."""
        return x.flatten(0, 1).index_select(0, self.index)[None]

    def unpack(self, y: torch.Tensor) -> torch.Tensor:
        """[1, T, ...] -> [B, W, ...], zeros at padding (differentiable in y)."""
        flat = y.new_zeros((self.batch * self.width, *y.shape[2:]))
        return flat.index_copy(0, self.index, y[0]).view(self.batch, self.width, *y.shape[2:])

    def slots(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For flat [B*W] `positions`: (which are real tokens, their index in the packed row)."""
        if self._slot is None:
            self._slot = torch.full((self.batch * self.width,), -1, dtype=torch.long, device=self.index.device)
            self._slot[self.index] = torch.arange(self.tokens, device=self.index.device)
        slot = self._slot[positions]
        real = slot >= 0
        return real, slot[real]


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Attention of a packed row ([1, H, T, d]; keys [1, kv heads, T, d]): each span of
    `module._packed_lengths` attends causally to itself through the module's own implementation."""
    own = own_attention(module)
    eager = getattr(module, "_attention_before", "sdpa") == "eager"
    outs, start = [], 0
    for n in module._packed_lengths:
        if n == 0:
            continue
        span = slice(start, start + n)
        mask = _causal_additive(n, query.device) if eager and n > 1 else None  # SDPA: is_causal when None
        out, _ = own(module, query[:, :, span], key[:, :, span], value[:, :, span], mask, dropout=dropout,
                     scaling=scaling, **kwargs)
        outs.append(out)  # [1, n, H, d]
        start += n
    return torch.cat(outs, dim=1), None


def _causal_additive(n: int, device) -> torch.Tensor:
    # eager's own mask for an unpadded row: 0 on and below the diagonal, the dtype's minimum above
    # (fp32, as transformers builds it for fp32 weights; eager adds it to the scores)
    m = torch.full((n, n), torch.finfo(torch.float32).min, device=device)
    return m.triu_(1)[None, None]


def _no_mask(*_args, **_kwargs):
    return None  # the spans are causal by construction: no [T, T] mask is built


def _register() -> str:
    for name in (PACKED_NAME, PACKED_NAME + "_eager"):
        AttentionInterface.register(name, packed_attention)
        AttentionMaskInterface.register(name, _no_mask)
    return PACKED_NAME


def packable(model) -> bool:
    """Whether `packed_rows` can switch this model: plain full attention under eager or SDPA."""
    modules = attention_modules(model)
    if not modules:
        return False
    config = getattr(model, "config", None) or modules[0].config  # a critic wrapper may have none
    if config._attn_implementation not in ("eager", "sdpa") or any(m.config is not config for m in modules):
        return False
    layer_types = getattr(config, "layer_types", None)  # the spans would ignore a sliding window
    if layer_types and any(t != "full_attention" for t in layer_types):
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    return all(plain_attention(m) for m in modules)


@contextlib.contextmanager
def packed_rows(model, packing: Packing):
    """While open, `model`'s forward over a row packed by `packing` attends span by span."""
    modules = attention_modules(model)
    for m in modules:
        m._packed_lengths = packing.lengths
    try:
        with switched_attention(model, modules, register=_register):
            yield
    finally:
        for m in modules:
            m.__dict__.pop("_packed_lengths", None)
