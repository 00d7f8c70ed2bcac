"""What this host can run fast: device and precision chosen per host at run time.

Hosts of one machine kind differ: some CPUs are AVX2-only, others have AVX512-BF16 or AMX
tiles, where torch's bf16 matmul is several times its fp32 one. `precision: auto` therefore
means bf16 on CUDA (when the GPU supports it) and on CPUs with native bf16 matmul, fp32
elsewhere; `device: auto` means the first CUDA device when there is one. Both are decided
here, once, and recorded (`describe()`) in manifests and results.json.
"""
from __future__ import annotations

import functools
import logging
import os
import platform

from hrlaif.core.errors import UserError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # native bf16 matmul units
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")

# Acting as another host type. Hosts of one machine kind differ and nobody chooses theirs, so a fast
# host must be able to run what an AVX2-only one runs: HRLAIF_CPU_ISA=avx2 hides every flag above
# AVX2 from the harness's own detection and caps torch's, oneDNN's and MKL's kernel dispatch the same way
# (`hold_back_torch`, called before torch is imported). llama.cpp is compiled for the real host and
# cannot be held back.
ISA_ENV = "HRLAIF_CPU_ISA"
ISAS = ("native", "avx2")
_ABOVE_AVX2 = ("avx512", "amx", "avx_vnni", "avx_ne_convert", "avx_ifma")
# MKL (torch's fp32 BLAS) dispatches on its own: without its cap, a held-back fp32 matmul still ran
# AVX-512 kernels (M=8 decode matmuls differed by up to 1.9x between the two).
TORCH_CAPS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}


def host_isa() -> str:
    """The instruction-set level the harness acts on: native (the real CPU) or avx2."""
    isa = os.environ.get(ISA_ENV, "").strip().lower() or "native"
    if isa not in ISAS:
        raise UserError(f"{ISA_ENV} must be one of {', '.join(ISAS)} (got {isa!r})")
    return isa


def hold_back_torch() -> dict[str, str]:
    """Cap torch's and oneDNN's CPU dispatch at HRLAIF_CPU_ISA. Only effective before torch is
    imported (both read their variable once); returns what was set."""
    caps = TORCH_CAPS.get(host_isa(), {})
    for k, v in caps.items():
        os.environ.setdefault(k, v)
    return caps


def _proc_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The `flags` of /proc/cpuinfo (Linux x86; empty where there is none), less every flag above
    AVX2 when HRLAIF_CPU_ISA=avx2."""
    flags = _proc_flags()
    if host_isa() == "avx2":
        flags = frozenset(f for f in flags if not f.startswith(_ABOVE_AVX2))
    return flags


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16 advertised by the CPU and usable by torch's oneDNN kernels."""
    if not any(f in cpu_flags() for f in BF16_CPU_FLAGS):
        return False
    try:
        import torch
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (ImportError, AttributeError, RuntimeError):
        return False


def check_device(spec: str) -> str | None:
    """Problem text for a bad `device` setting (for hrlaif.core.settings' `check=`), else None."""
    if spec in ("auto", "cpu", "cuda") or (spec.startswith("cuda:") and spec[5:].isdigit()):
        return None
    return f"must be auto, cpu, cuda or cuda:N (got {spec!r})"


def resolve_device(spec: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; an unavailable GPU is a UserError."""
    problem = check_device(spec)
    if problem:
        raise UserError(f"device: {problem}")
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {spec}: no CUDA device is visible (torch {torch.__version__})")
        idx = int(spec[5:]) if ":" in spec else 0
        if idx >= torch.cuda.device_count():
            raise UserError(f"device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return spec


def resolve_precision(spec: str = "auto", device: str = "cpu") -> str:
    """'auto' -> 'bf16' where this device has native bf16 matmul, else 'fp32'."""
    if spec not in PRECISIONS:
        raise UserError(f"precision: must be one of {', '.join(PRECISIONS)} (got {spec!r})")
    if spec != "auto":
        if spec == "bf16" and device == "cpu" and not cpu_has_native_bf16():
            log.warning("precision bf16 on a CPU without AMX/AVX512-BF16: emulated, slower than fp32")
        return spec
    if device.startswith("cuda"):
        import torch
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def torch_dtype(precision: str):
    import torch
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]


def describe(device: str | None = None, precision: str | None = None) -> dict:
    """Host facts recorded next to results: what ran, and why auto chose it."""
    out = {"machine": platform.machine(), "cpu_flags": sorted(f for f in REPORTED_FLAGS if f in cpu_flags()),
           "cpu_native_bf16": cpu_has_native_bf16()}
    if host_isa() != "native":  # acting as another host type: the real flags too
        out["cpu_isa_override"] = host_isa()
        out["real_cpu_flags"] = sorted(f for f in REPORTED_FLAGS if f in _proc_flags())
    if device is not None:
        out["device"] = device
    if precision is not None:
        out["precision"] = precision
    return out
