"""Decoding-friendly linear layers: a few rows per step through weights packed once.

A decode step multiplies each weight matrix by a few rows (one per sequence). torch's `F.linear`
re-reads (and, for oneDNN's bf16, reorders) the weight on every call; `decoding_linears(model, rows)`
routes every plain CPU nn.Linear of a model through a forward that does better for a few rows, for
the duration of a `with` block: PPO's rollouts (hrlaif/trainers/generation.py) and evaluation's
generation (hrlaif/evalsets/prefix_lm.py) decode through it.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def few_rows_linear(self, x):
    """nn.Linear forward for fp32 decoding: a few rows computed as (W x^T)^T.

    Same product, but for M <= 8 rows MKL's kernel for a tall left operand streams the
    weight faster than the one for x W^T (decoding SmolLM2 with batch 4: 2.5 -> 1.9 s on
    2 threads; the 49k x 576 LM head alone 23 -> 9.5 ms). More rows take the usual path.
    """
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] > 8 or flat.dtype != torch.float32 or self.weight.dtype != torch.float32 \
            or torch.is_autocast_enabled("cpu"):  # bf16 matmuls: the plain x W^T is the faster one
        return F.linear(x, self.weight, self.bias)
    y = torch.mm(self.weight, flat.T).T
    if self.bias is not None:
        y = y + self.bias
    return y.contiguous().reshape(*x.shape[:-1], -1)


def packed_linear(self, x):
    """nn.Linear forward for decoding on oneDNN weights packed once per generate call.

    In bf16 it computes what autocast computes (bf16 operands, fp32 accumulation, a bf16
    result, bit for bit), but a few rows no longer pay for reordering the weight on every call:
    decoding SmolLM2 with 8 rows on one AVX512-BF16 core, 100 -> 43 ms per token in bf16 and
    104 -> 61 ms in fp32 (fp32 results differ from MKL's in the last bits)."""
    return torch.ops.mkldnn._linear_pointwise(x.to(self._packed_weight.dtype), self._packed_weight,
                                              self._packed_bias, "none", [], "")


def packing_dtype():
    """The dtype decoding packs weights in on this CPU, or None (the fp32 `few_rows_linear`):
    bf16 under bf16 autocast on CPUs with native bf16, fp32 on AVX-512 CPUs (measured faster
    there; AVX2-only hosts keep the MKL trick measured on them)."""
    from hrlaif.core.hardware import cpu_flags, cpu_has_native_bf16

    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return None
    if torch.is_autocast_enabled("cpu"):
        return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 and cpu_has_native_bf16() else None
    return torch.float32 if "avx512f" in cpu_flags() else None


@contextlib.contextmanager
def decoding_linears(model, rows: int):
    """Route every plain CPU nn.Linear of `model` through a decoding-friendly forward: weights
    packed for `rows` rows (`packed_linear`) where that is faster, else `few_rows_linear`.

    Skipped for ZeRO-3 partitioned weights (`ds_id`), whose gather hooks own the forward.
    """
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and "forward" not in vars(m)
               and m.weight.device.type == "cpu" and not hasattr(m.weight, "ds_id")]
    dtype = packing_dtype() if linears else None
    for m in linears:
        if dtype is not None:
            m._packed_weight = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach().to(dtype), rows)
            m._packed_bias = None if m.bias is None else m.bias.detach().to(dtype)
        m.forward = (few_rows_linear if dtype is None else packed_linear).__get__(m)
    try:
        yield
    finally:
        for m in linears:
            del m.forward
            if dtype is not None:
                del m._packed_weight, m._packed_bias
