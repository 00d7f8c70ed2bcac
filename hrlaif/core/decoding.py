"""Decoding-friendly linear layers: a few rows per step through weights packed once.

A decode step multiplies each weight matrix by a few rows (one per sequence). torch's `F.linear`
re-reads (and, for oneDNN's bf16, reorders) the weight on every call, and MKL's fp32 kernel for a
few rows streams it at half the memory bandwidth or less; `decoding_linears(model, rows)` routes
every plain CPU nn.Linear of a model through a forward that does better for a few rows, for the
duration of a `with` block: PPO's rollouts (hrlaif/trainers/generation.py), evaluation's generation
(hrlaif/evalsets/prefix_lm.py) and the sample stage decode through it, with a `GrowingKVCache`.
Which fp32 product that is, is timed on the host (`fp32_product`).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from hrlaif.core import fewrows


def _plain(self, x):
    return F.linear(x, self.weight, self.bias)


def _no_special_path(self, x) -> bool:
    """Autocast (bf16 matmuls: the plain x W^T is the faster one) or a backward through the layer."""
    return torch.is_autocast_enabled("cpu") or (torch.is_grad_enabled() and self.weight.requires_grad)


def few_rows_linear(self, x):
    """nn.Linear forward for fp32 decoding: a few rows computed as (W x^T)^T, MKL's kernel for a tall
    left operand (on some hosts it streams the weight faster than the one for x W^T)."""
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] > 8 or flat.dtype != torch.float32 or self.weight.dtype != torch.float32 \
            or _no_special_path(self, x):
        return _plain(self, x)
    y = torch.mm(self.weight, flat.T).T
    if self.bias is not None:
        y = y + self.bias
    return y.contiguous().reshape(*x.shape[:-1], -1)


def mkl_packed_linear(self, x):
    """nn.Linear forward for fp32 decoding on MKL's packed GEMM (`cblas_sgemm_pack`, through torch's
    `mkl::_mkl_linear`): the weight is packed once per generate call for exactly `rows` rows; other
    row counts (the prompt pass) take the plain product inside the op. Held to AVX2 on an AMX Xeon,
    SmolLM2's weights at 8 rows: 52 -> 33 ms per decode step."""
    if x.dtype != torch.float32 or _no_special_path(self, x):
        return _plain(self, x)
    return torch.ops.mkl._mkl_linear(x, self._mkl_weight, self.weight, self.bias, self._mkl_rows)


def fewrows_linear(self, x):
    """nn.Linear forward for fp32 decoding on `hrlaif/core/fewrows.py`'s kernel (weights packed once
    per generate call, streamed at memory speed); more rows than the call decodes (the prompt pass)
    take the plain product."""
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] > self._fewrows_rows or x.dtype != torch.float32 or _no_special_path(self, x):
        return _plain(self, x)
    y = fewrows.mm(flat, self._fewrows_weight, self.weight.shape[0])
    if self.bias is not None:
        y = y + self.bias
    return y.reshape(*x.shape[:-1], -1)


def packed_linear(self, x):
    """nn.Linear forward for decoding on oneDNN weights packed once per generate call.

    In bf16 it computes what autocast computes (bf16 operands, fp32 accumulation, a bf16
    result, bit for bit), but a few rows no longer pay for reordering the weight on every call:
    decoding SmolLM2 with 8 rows on one AVX512-BF16 core, 100 -> 43 ms per token in bf16 and
    104 -> 61 ms in fp32 (fp32 results differ from MKL's in the last bits)."""
    return torch.ops.mkldnn._linear_pointwise(x.to(self._packed_weight.dtype), self._packed_weight,
                                              self._packed_bias, "none", [], "")


def _onednn_packing() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def _mkl_packing() -> bool:
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


def packing_dtype():
    """bf16 when decoding runs under bf16 autocast on a CPU with native bf16 (oneDNN's packed bf16
    weights compute what autocast computes), else None: fp32 decoding takes `fp32_product`'s choice."""
    from hrlaif.core.hardware import cpu_has_native_bf16

    if _onednn_packing() and torch.is_autocast_enabled("cpu") and \
            torch.get_autocast_dtype("cpu") == torch.bfloat16 and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def fp32_candidates(rows: int) -> list[str]:
    """The fp32 decode products this torch build offers for `rows` rows."""
    return ["plain"] + (["few_rows"] if rows <= 8 else []) + (["onednn_packed"] if _onednn_packing() else []) \
        + (["mkl_packed"] if _mkl_packing() else []) + (["fewrows"] if rows <= 16 and fewrows.available() else [])


def _pack(m, product: str, rows: int, dtype=torch.float32) -> None:
    if product == "mkl_packed":
        m._mkl_weight, m._mkl_rows = torch.ops.mkl._mkl_reorder_linear_weight(m.weight.detach(), rows), rows
    elif product == "fewrows":
        m._fewrows_weight, m._fewrows_rows = fewrows.pack(m.weight), rows
    elif product == "onednn_packed":
        m._packed_weight = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach().to(dtype), rows)
        m._packed_bias = None if m.bias is None else m.bias.detach().to(dtype)


def _unpack(m) -> None:
    for name in ("_mkl_weight", "_mkl_rows", "_packed_weight", "_packed_bias", "_fewrows_weight", "_fewrows_rows"):
        m.__dict__.pop(name, None)


FORWARDS = {"few_rows": few_rows_linear, "mkl_packed": mkl_packed_linear, "onednn_packed": packed_linear,
            "fewrows": fewrows_linear}


def fp32_product(linears, rows: int) -> str:
    """Which fp32 product decodes `rows` rows fastest on this host: "plain" (`F.linear`), "few_rows",
    "onednn_packed" or "mkl_packed" (`fp32_candidates`).

    It depends on the CPU and the libraries' dispatch, so it is timed, not assumed: the model's
    weights as a decode step streams them from memory (every one, up to CALIBRATION_BYTES, and at
    least one of each shape), each product in turn, best of 3 (packing not counted: it is paid once
    per generate call); another product must beat the plain one by 10%. The decision is kept in
    $HRLAIF_CACHE/host-calibration.json per host (CPU flags, the ISA caps in force, torch version,
    threads, rows, shapes), so later runs on the host decode the same way: the products differ in
    the last bits, and a choice that flipped with timing noise would make greedy outputs
    irreproducible."""
    import os
    import time
    from types import SimpleNamespace

    from hrlaif.core.hardware import TORCH_CAPS, cpu_flags
    from hrlaif.core.store import cache_dir, read_json, stable_hash, write_json

    by_shape, weights, total = {}, {}, 0
    for m in linears:
        w = m.weight
        if tuple(w.shape) not in by_shape or total < CALIBRATION_BYTES:
            weights.setdefault(id(w), w)  # a tied weight once
            total += w.numel() * w.element_size()
        by_shape.setdefault(tuple(w.shape), w)
    candidates = fp32_candidates(rows)
    caps = [os.environ.get(k) for k in sorted(TORCH_CAPS["avx2"])]
    key = stable_hash({"v": 2, "flags": sorted(cpu_flags()), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "caps": caps,
                       "rows": rows, "shapes": sorted(by_shape), "candidates": candidates})
    if key in _FP32_PRODUCT:
        return _FP32_PRODUCT[key]
    path = cache_dir() / "host-calibration.json"
    try:
        known = read_json(path) if path.is_file() else {}
    except (OSError, ValueError):
        known = {}
    if key not in known or known[key].get("product") not in candidates:
        layers = [SimpleNamespace(weight=w.detach(), bias=None) for w in weights.values()]
        g = torch.Generator().manual_seed(0)  # not the global RNG: a calibration inside a seeded run must
        # not move its samples (the first run on a host would differ from the next)
        xs = {w.shape[1]: torch.randn(rows, 1, w.shape[1], generator=g).to(w.dtype) for w in weights.values()}
        times: dict[str, list[float]] = {c: [] for c in candidates}
        with torch.no_grad():
            for c in candidates:
                for m in layers:
                    _pack(m, c, rows)
                forward = FORWARDS.get(c, _plain)
                for rep in range(4):  # the first is a warm-up
                    t = time.perf_counter()
                    for m in layers:
                        forward(m, xs[m.weight.shape[1]])
                    if rep:
                        times[c].append(time.perf_counter() - t)
                for m in layers:
                    _unpack(m)
        ms = {c: round(1000 * min(v), 2) for c, v in times.items()}
        best = min(ms, key=ms.get)
        known[key] = {"product": best if ms[best] < 0.9 * ms["plain"] else "plain", "rows": rows, "ms": ms}
        try:
            write_json(path, known)
        except OSError:
            pass  # a read-only cache: decide again next time
    _FP32_PRODUCT[key] = known[key]["product"]
    return _FP32_PRODUCT[key]


_FP32_PRODUCT: dict[str, str] = {}
CALIBRATION_BYTES = 300e6  # more than a server CPU's caches: the weights come from memory, as in decoding


@contextlib.contextmanager
def decoding_linears(model, rows: int):
    """Route every plain CPU nn.Linear of `model` through a decoding-friendly forward for `rows` rows:
    oneDNN's packed bf16 weights under bf16 autocast on CPUs with native bf16 (`packing_dtype`), else
    for fp32 weights the product `fp32_product` timed fastest on this host (nothing, when that is
    the plain one).

    Skipped for ZeRO-3 partitioned weights (`ds_id`), whose gather hooks own the forward.
    """
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and "forward" not in vars(m)
               and m.weight.device.type == "cpu" and not hasattr(m.weight, "ds_id")]
    dtype = packing_dtype() if linears else None
    if dtype is not None:
        product = "onednn_packed"
    else:
        linears = [m for m in linears if m.weight.dtype == torch.float32]
        product = "plain" if torch.is_autocast_enabled("cpu") or not linears else fp32_product(linears, rows)
        dtype = torch.float32
    if product == "plain":
        linears = []
    for m in linears:
        _pack(m, product, rows, dtype)
        m.forward = FORWARDS[product].__get__(m)
    try:
        yield
    finally:
        for m in linears:
            del m.forward
            _unpack(m)


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
        n = self.own_length()
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

    def own_length(self) -> int:
        """Positions held in this layer's tensors (a subclass may count positions kept elsewhere)."""
        return DynamicLayer.get_seq_length(self)

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


def cache_kwarg(model, cache) -> dict:
    """`cache` as the keyword `model(...)` / `model.generate(...)` takes it: `cache` (transformers >= 5.20)
    or `past_key_values` (older, and deprecated since)."""
    import inspect

    return {"cache": cache} if "cache" in inspect.signature(model.forward).parameters else {"past_key_values": cache}


def growing_cache(model, reserve: int) -> dict:
    """`model(...)` / `model.generate(...)` keyword for a fresh `GrowingKVCache` with room for `reserve`
    new tokens after the prompt (`cache_kwarg`)."""
    return cache_kwarg(model, GrowingKVCache(config=getattr(model, "config", None), reserve=reserve))
