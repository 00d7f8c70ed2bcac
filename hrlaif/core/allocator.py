"""Keep freed memory in the process instead of handing it back to the OS (glibc only).

glibc serves every allocation above 32 MB with a fresh mmap and unmaps it on free, so each
one pays a page fault per 4 KB page when first written. Training a 135M model allocates a
113 MB dense embedding gradient (and the LM head's logits) several times per step; in a VM
those faults cost ~2.5 us per page, 0.13 s per tensor, up to a quarter of a PPO update.
Raising the mmap threshold makes such blocks come from the heap and be reused after a few steps
(PPO update on SmolLM2: 16.8 -> 13.3 s). Trimming is switched off (-1), not just raised: mallopt
takes an int, so the highest threshold is 2 GB, and a PPO update on SmolLM2 at batch 8 frees
2.8 GB at the heap's top, which glibc then handed back each step and faulted in again (0.7M
faults, 9 s of system time per update; update 15.7 -> 12.5 s held to AVX2). The heap keeps its
freed blocks and resident memory does not shrink back; the PPO run's peak stayed at 7.2 GB (7.3
without).
Huge pages (PyTorch's THP_MEM_ALLOC_ENABLE) cut the faults too, but not the time: the kernel
still zeroes every fresh page. HRLAIF_MALLOC_DEFAULTS=1 keeps glibc's defaults.
"""
from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from <malloc.h>
_applied = False


def keep_freed_memory() -> bool:
    """Apply once per process; True if glibc accepted the thresholds."""
    global _applied
    if _applied or os.environ.get("HRLAIF_MALLOC_DEFAULTS") == "1" or platform.libc_ver()[0] != "glibc":
        return _applied
    try:
        libc = ctypes.CDLL("libc.so.6")
        _applied = (bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30))
                    and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1)))  # -1: never trim (see above)
    except (OSError, AttributeError):
        _applied = False
    return _applied
