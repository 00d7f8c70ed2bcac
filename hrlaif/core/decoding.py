"""Decoding-friendly linear layers: a few rows per step through weights packed once.

A decode step multiplies each weight matrix by a few rows (one per sequence). torch's `F.linear`
re-reads (and, for oneDNN's bf16, reorders) the weight on every call; `decoding_linears(model, rows)`
routes every plain CPU nn.Linear of a model through a forward that does better for a few rows, for
the duration of a `with` block: PPO's rollouts (hrlaif/trainers/generation.py) and evaluation's
generation (hrlaif/evalsets/prefix_lm.py) decode through it, with a `GrowingKVCache`.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def few_rows_linear(self, x):
    """nn.Linear forward for fp32 decoding: a few rows computed as (W x^T)^T.

    Same product, but for M <= 8 rows MKL's kernel for a tall left operand can stream the
    weight faster than the one for x W^T (decoding SmolLM2 with batch 4: 2.5 -> 1.9 s on
    2 threads; the 49k x 576 LM head alone 23 -> 9.5 ms), and on other hosts slower (MKL
    capped at AVX2 on an AMX Xeon: 20% slower per decode step at batch 4 and 8), so
    `few_rows_pays` times both on the host. More rows take the usual path.
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


def few_rows_pays(linears, rows: int) -> bool:
    """Whether `few_rows_linear` beats `F.linear` for `rows` rows on this host.

    Which is faster depends on the CPU and MKL's dispatch, so it is timed, not assumed: the model's
    weights as a decode step streams them from memory (every one, up to CALIBRATION_BYTES, and at
    least one of each shape), both ways, alternating, best of 3; few rows must win by 10%.
    The decision is kept in $HRLAIF_CACHE/host-calibration.json per host (CPU flags, the ISA caps
    in force, torch version, threads, rows, shapes), so later runs on the host decode the same
    way: the two products differ in the last bits, and a choice that flipped with timing noise
    would make greedy outputs irreproducible."""
    import os
    import time

    from hrlaif.core.hardware import TORCH_CAPS, cpu_flags
    from hrlaif.core.store import cache_dir, read_json, stable_hash, write_json

    by_shape, weights, total = {}, {}, 0
    for m in linears:
        w = m.weight
        if tuple(w.shape) not in by_shape or total < CALIBRATION_BYTES:
            weights.setdefault(id(w), w)  # a tied weight once
            total += w.numel() * w.element_size()
        by_shape.setdefault(tuple(w.shape), w)
    key = stable_hash({"flags": sorted(cpu_flags()), "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "caps": [os.environ.get(k) for k in sorted(TORCH_CAPS["avx2"])],
                       "rows": rows, "shapes": sorted(by_shape)})
    if key in _FEW_ROWS_PAYS:
        return _FEW_ROWS_PAYS[key]
    path = cache_dir() / "host-calibration.json"
    try:
        known = read_json(path) if path.is_file() else {}
    except (OSError, ValueError):
        known = {}
    if key not in known:
        xs = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=w.dtype) for w in weights.values()}

        def seconds(product) -> float:
            t = time.perf_counter()
            for w in weights.values():
                product(xs[w.shape[1]], w)
            return time.perf_counter() - t

        def plain(x, w):
            return F.linear(x, w)

        def few(x, w):
            return torch.mm(w, x.T).T.contiguous()

        with torch.no_grad():
            seconds(plain), seconds(few)  # warm-up
            times = {"plain": [], "few": []}
            for _ in range(3):
                times["plain"].append(seconds(plain))
                times["few"].append(seconds(few))
        known[key] = {"few_rows": min(times["few"]) < 0.9 * min(times["plain"]), "rows": rows,
                      "ms": {k: round(1000 * min(v), 2) for k, v in times.items()}}
        try:
            write_json(path, known)
        except OSError:
            pass  # a read-only cache: decide again next time
    _FEW_ROWS_PAYS[key] = bool(known[key]["few_rows"])
    return _FEW_ROWS_PAYS[key]


_FEW_ROWS_PAYS: dict[str, bool] = {}
CALIBRATION_BYTES = 300e6  # more than a server CPU's caches: the weights come from memory, as in decoding


@contextlib.contextmanager
def decoding_linears(model, rows: int):
    """Route every plain CPU nn.Linear of `model` through a decoding-friendly forward: weights
    packed for `rows` rows (`packed_linear`) where that is faster, else `few_rows_linear`.

    Skipped for ZeRO-3 partitioned weights (`ds_id`), whose gather hooks own the forward.
    """
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and "forward" not in vars(m)
               and m.weight.device.type == "cpu" and not hasattr(m.weight, "ds_id")]
    dtype = packing_dtype() if linears else None
    if dtype == torch.float32:  # fp32 packing replaces fp32 matmuls only; low-precision weights keep theirs
        linears = [m for m in linears if m.weight.dtype == torch.float32]
    if dtype is None:  # the few-rows product: only for fp32 weights, a few rows, and where it is faster
        linears = [m for m in linears if m.weight.dtype == torch.float32]
        if rows > 8 or torch.is_autocast_enabled("cpu") or not linears or not few_rows_pays(linears, rows):
            linears = []
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


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys and values are views of a buffer with room to grow.

    DynamicLayer concatenates each step's key and value onto the whole cache, copying it: at batch 8
    with a 900-token few-shot prompt that copy was 43% of a decode step of SmolLM2 (61 of 121 ms,
    AMX host held to AVX2). Here a step writes its token into spare room; the buffer is copied only
    when it is full (to twice the size), so the copies cost O(log n) per sequence instead of O(n).
    Values are exactly DynamicLayer's; attention reads the same numbers through a strided view.
    """

    def __init__(self, reserve: int = 256, **kwargs):
        super().__init__(**kwargs)
        self.reserve = reserve
        self._kbuf = self._vbuf = None

    def update(self, key_states, value_states, *args, **kwargs):
        if torch.is_grad_enabled() and (key_states.requires_grad or value_states.requires_grad):
            return super().update(key_states, value_states, *args, **kwargs)  # autograd: no in-place writes
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = self.get_seq_length()
        q = key_states.shape[-2]
        if not self._backed_by_buffer(key_states, n + q):
            cap = max(n + q + self.reserve, 2 * (n + q) if self._kbuf is not None else 0)
            kbuf = key_states.new_empty(*key_states.shape[:-2], cap, key_states.shape[-1])
            vbuf = value_states.new_empty(*value_states.shape[:-2], cap, value_states.shape[-1])
            if n:
                kbuf[..., :n, :].copy_(self.keys)
                vbuf[..., :n, :].copy_(self.values)
            self._kbuf, self._vbuf = kbuf, vbuf
        self._kbuf[..., n:n + q, :].copy_(key_states)
        self._vbuf[..., n:n + q, :].copy_(value_states)
        self.keys, self.values = self._kbuf[..., :n + q, :], self._vbuf[..., :n + q, :]
        return self.keys, self.values

    def _backed_by_buffer(self, new, length: int) -> bool:
        """Whether keys/values are still our buffer's prefix (crop keeps that; batch selection, beam
        reordering and offloading replace the tensors) and the buffer holds `length` positions."""
        buf = self._kbuf
        return (buf is not None and self.keys.numel() > 0 and buf.shape[-2] >= length
                and buf.shape[:-2] == new.shape[:-2] and buf.dtype == new.dtype and buf.device == new.device
                and self.keys.data_ptr() == buf.data_ptr() and self.values.data_ptr() == self._vbuf.data_ptr())

    def reset(self) -> None:
        self._kbuf = self._vbuf = None
        super().reset()


class GrowingKVCache(DynamicCache):
    """DynamicCache (sliding-window and other special layers included, as the config asks) whose plain
    full-attention layers are `GrowingLayer`s: the prompt pass allocates room for `reserve` more tokens."""

    def __init__(self, config=None, reserve: int = 256):
        super().__init__(config=config)
        if self.layer_class_to_replicate is not None:
            self.layer_class_to_replicate = lambda **kw: GrowingLayer(reserve=reserve, **kw)
        self.layers = [GrowingLayer(reserve=reserve) if type(layer) is DynamicLayer else layer
                       for layer in self.layers]


def growing_cache(model, reserve: int) -> dict:
    """`model(...)` / `model.generate(...)` keyword for a fresh `GrowingKVCache` with room for `reserve`
    new tokens after the prompt: `cache` (transformers >= 5.20) or `past_key_values` (older)."""
    import inspect

    cache = GrowingKVCache(config=getattr(model, "config", None), reserve=reserve)
    return {"cache": cache} if "cache" in inspect.signature(model.forward).parameters else {"past_key_values": cache}
