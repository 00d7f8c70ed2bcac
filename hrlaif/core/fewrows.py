"""An fp32 product for decoding's few rows that streams the weights at memory speed (x86 AVX2 + FMA).

A decode step's time is the time to read every weight matrix once. torch's fastest fp32 product
for 8 rows on these hosts (MKL's packed GEMM) streams SmolLM2's 538 MB at 12 GB/s where a plain sum
reads 16-20; `fewrows_kernel.c` packs each weight once per generate call and reads it front to back
with a software prefetch (AMX Xeon held to AVX2: 19 GB/s on one large matrix against MKL's 16).

The kernel is compiled on first use with the host's C compiler (the one pip needs for
llama-cpp-python), into $HRLAIF_CACHE/kernels under a hash of its source and flags, and loaded with
ctypes. It links the OpenMP runtime torch has already loaded (the same `libgomp.so.1`), so its
threads are torch's threads, not a second pool competing for the cores. Without x86 AVX2 + FMA, a
compiler or OpenMP, `available()` is False and decoding keeps torch's products
(`hrlaif/core/decoding.py` times this one against them on each host before using it).
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform
import shlex
import subprocess
import sysconfig
import threading
from pathlib import Path

import torch

from hrlaif.core.hardware import cpu_flags
from hrlaif.core.store import cache_dir, stable_hash

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("fewrows_kernel.c")
FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC"]
BLOCK = 8  # rows of x per kernel pass and outputs per packed block


def compiler() -> list[str]:
    """$CC, else the compiler Python was built with, else `cc`."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)[:1]


def _build() -> ctypes.CDLL | None:
    """Compile (once per source, compiler and flags) and load the kernel; None, logged, where either fails."""
    source = SOURCE.read_bytes()
    cc = compiler()
    try:
        out = cache_dir() / "kernels" / f"fewrows-{stable_hash([source.hex(), cc, FLAGS, platform.machine()])}.so"
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.so")
            done = subprocess.run([*cc, *FLAGS, str(SOURCE), "-o", str(tmp)], capture_output=True, text=True,
                                  timeout=120)
            if done.returncode:
                tmp.unlink(missing_ok=True)
                raise OSError((done.stderr.strip().splitlines() or [f"{cc[0]} failed"])[-1])
            os.replace(tmp, out)  # atomic: a concurrent process sees the whole library or none
        lib = ctypes.CDLL(str(out))
    except (OSError, subprocess.SubprocessError) as e:
        log.info("few-rows kernel not built (%s): decoding keeps torch's products", e)
        return None
    lib.fewrows_mm.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                               ctypes.c_void_p, ctypes.c_int]
    lib.fewrows_mm.restype = ctypes.c_int
    lib.fewrows_pack.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int]
    lib.fewrows_pack.restype = ctypes.c_int
    i64, ptr, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
    lib.attn_step.argtypes = [ptr, i64, i64, i64, i64, i64, i64, ptr, ptr, i64, ptr, ptr, i64, i64, i64, ptr, i64,
                              f32, ptr, ptr, ctypes.c_int]
    lib.attn_step.restype = ctypes.c_int
    lib.attn_scratch_floats.argtypes = [i64] * 6
    lib.attn_scratch_floats.restype = i64
    lib.layer_qkv.argtypes = [ptr, i64, i64, ptr, f32, ptr, ptr, ptr, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr,
                              ctypes.c_int]
    lib.layer_out.argtypes = [ptr, ptr, i64, i64, i64, ptr, ptr, f32, ptr, ptr, ptr, ptr, ctypes.c_int]
    lib.layer_qkv.restype = lib.layer_out.restype = ctypes.c_int
    return lib


_LIB: dict[str, ctypes.CDLL | None] = {}


def library() -> ctypes.CDLL | None:
    """The compiled kernel, built once per process (None where it cannot be)."""
    if "lib" not in _LIB:
        ok = platform.machine().lower() in ("x86_64", "amd64") and {"avx2", "fma"} <= cpu_flags()
        _LIB["lib"] = _build() if ok else None
    return _LIB["lib"]


def available() -> bool:
    return library() is not None


def pack(weight: torch.Tensor) -> torch.Tensor:
    """[N, K] fp32 weight -> [ceil(N/8), K, 8]: block b holds outputs 8b..8b+7 interleaved (zeros pad N)."""
    n, k = weight.shape
    w = weight.detach().float()
    if n % BLOCK:
        w = torch.cat([w, w.new_zeros(BLOCK - n % BLOCK, k)])
    w = w.contiguous()
    out = w.new_empty(w.shape[0] // BLOCK, k, BLOCK)
    if library().fewrows_pack(w.data_ptr(), w.shape[0], k, out.data_ptr(), torch.get_num_threads()):
        raise ValueError(f"few-rows pack: weight {tuple(weight.shape)}")
    return out


def mm(x: torch.Tensor, packed: torch.Tensor, n: int) -> torch.Tensor:
    """x [M, K] fp32 @ W^T for the W `pack` packed ([N, K]) -> [M, N]."""
    m, k = x.shape
    if packed.shape[1] != k or packed.dtype != torch.float32 or x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError(f"few-rows product: x {tuple(x.shape)} {x.dtype} against packed {tuple(packed.shape)}")
    rows = -(-m // BLOCK) * BLOCK
    if rows != m:
        x = torch.cat([x, x.new_zeros(rows - m, k)])
    x = x.contiguous()
    y = torch.empty(rows, packed.shape[0] * BLOCK)
    if library().fewrows_mm(x.data_ptr(), rows, k, packed.data_ptr(), y.shape[1], y.data_ptr(),
                            torch.get_num_threads()):
        raise ValueError("few-rows product: bad shapes")
    return y if rows == m and y.shape[1] == n else y[:m, :n]


def pack_heads(keys: torch.Tensor) -> torch.Tensor:
    """[kv heads, P, d] fp32 prefix keys -> each head's [P, d] packed like a weight (`pack`), stacked."""
    if not keys.shape[1]:
        return keys.new_zeros(keys.shape[0], 0, keys.shape[2], BLOCK)
    return torch.stack([pack(k) for k in keys])


def attention_ready(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> bool:
    """Whether `prefix_attention_step` can run this step: fp32 CPU tensors, head dim a multiple of 8,
    no autocast, the kernel built."""
    return query.dtype == key.dtype == value.dtype == torch.float32 and query.device.type == "cpu" \
        and query.shape[-1] % BLOCK == 0 and not torch.is_autocast_enabled("cpu") and available()


def no_prefix(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`prefix_attention_step`'s prefix arguments for attention over the rows' own keys alone."""
    kvh, d = key.shape[1], key.shape[-1]
    return key.new_zeros(kvh, 0, d, BLOCK), key.new_zeros(kvh, 0, d)


def _own_strides(t: torch.Tensor, d: int) -> torch.Tensor:
    """`t` [B, kv heads, S, d] with each head's rows contiguous (a GrowingLayer buffer's view is)."""
    return t if t.stride(-1) == 1 and (t.stride(-2) == d or t.shape[-2] <= 1) else t.contiguous()


def prefix_attention_step(query: torch.Tensor, packed_keys: torch.Tensor, prefix_values: torch.Tensor,
                          key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                          scale: float) -> torch.Tensor:
    """One decode step's attention (one query per row) over a shared prefix and the rows' own keys, in
    one kernel call (`attn_step` in fewrows_kernel.c: scores, an fp32 softmax, weighted values).

    query [B, H, 1, d] (d contiguous); packed_keys: `pack_heads` of the prefix's keys [kvh, P, d];
    prefix_values [kvh, P, d]; key/value [B, kvh, S, d]; mask [B or 1, 1, 1, P + S]: bool (True
    attends) or additive, or None. Returns [B, 1, H, d]."""
    B, H, _, d = query.shape
    kvh, P, S = prefix_values.shape[0], prefix_values.shape[1], key.shape[-2]
    if query.stride(-1) != 1:
        query = query.contiguous()
    key, value = _own_strides(key, d), _own_strides(value, d)
    lib = library()
    if mask is not None:
        mask = _additive(mask, P + S)
    need = lib.attn_scratch_floats(kvh, B, H // kvh, d, P, S)
    scratch = getattr(_LOCAL, "scratch", None)
    if scratch is None or scratch.numel() < need:
        scratch = _LOCAL.scratch = torch.empty(int(need * 1.5))  # room for the rows' next tokens
    out = query.new_empty(B, 1, H, d)
    if lib.attn_step(query.data_ptr(), query.stride(0), query.stride(1), kvh, B, H // kvh, d, packed_keys.data_ptr(),
                     prefix_values.data_ptr(), P, key.data_ptr(), value.data_ptr(), S, key.stride(0), key.stride(1),
                     0 if mask is None else mask.data_ptr(), 0 if mask is None or mask.shape[0] == 1 else P + S,
                     scale, out.data_ptr(), scratch.data_ptr(), torch.get_num_threads()):
        raise ValueError(f"prefix attention step: head dim {d} is not a multiple of {BLOCK}")
    return out


_LOCAL = threading.local()  # per thread: the kernel's scratch, the last mask and its additive form


def _additive(mask: torch.Tensor, n: int) -> torch.Tensor:
    """[rows, 1, 1, n] bool (True attends) or additive mask -> [rows, n] contiguous fp32 additive; the
    last one is kept, since every layer of a decode step gets the same mask tensor."""
    last = getattr(_LOCAL, "mask", None)
    if last is not None and last[0] is mask and last[1] == mask._version:
        return last[2]
    flat = mask.reshape(mask.shape[0], n)
    add = (torch.zeros(flat.shape).masked_fill_(~flat, float("-inf")) if flat.dtype == torch.bool
           else flat.float().contiguous())
    _LOCAL.mask = (mask, mask._version, add)
    return add
