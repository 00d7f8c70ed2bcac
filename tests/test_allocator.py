"""hrlaif/core/allocator.py: glibc reuses big freed blocks instead of faulting in fresh pages."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

# Minor page faults (thousands) per iteration of what a tied-embedding backward allocates:
# a dense 113 MB gradient and the sum of two of them.
PROBE = ("import resource, torch; from hrlaif.core.allocator import keep_freed_memory as k; ok = k(); "
         "f = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt; out = []\n"
         "for _ in range(16):\n"
         " a = f(); z = torch.zeros(49152, 576); y = z + z; del z, y; out.append((f() - a) // 1000)\n"
         "print(ok, k(), *out)")


def _probe(opt_out: str) -> list[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HRLAIF_MALLOC_DEFAULTS": opt_out}
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True,
                          cwd=Path(__file__).resolve().parents[1]).stdout.split()


def test_big_blocks_are_reused_after_a_few_steps_unless_the_user_opts_out():
    ok, again, *faults = _probe("0")
    assert (ok, again) == ("True", "True")
    assert sum(map(int, faults[-4:])) < 2  # steady state: no fresh pages
    off, _, *default = _probe("1")
    assert off == "False" and all(int(x) > 50 for x in default)  # every iteration faults 55k pages


# Four 600 MB blocks (each under the 1 GB mmap threshold, so from the heap), never written (no page
# is touched, so the test is instant), then freed: 2.4 GB free at the heap's top, more than the
# highest trim threshold mallopt accepts (2 GB, an int). The heap must keep it, or the next PPO
# update faults all of it in again (2.8 GB per update on SmolLM2 at batch 8).
TRIM_PROBE = ("import ctypes; from hrlaif.core.allocator import keep_freed_memory as k; print(k())\n"
              "libc = ctypes.CDLL('libc.so.6'); libc.sbrk.restype = libc.malloc.restype = ctypes.c_void_p\n"
              "libc.free.argtypes = [ctypes.c_void_p]\n"
              "start = libc.sbrk(0); blocks = [libc.malloc(600_000_000) for _ in range(4)]; grown = libc.sbrk(0)\n"
              "assert all(blocks)\n"
              "for b in reversed(blocks): libc.free(b)\n"
              "print(grown - start, grown - libc.sbrk(0))")


def _trim_probe(opt_out: str) -> list[str]:
    env = {**os.environ, "HRLAIF_MALLOC_DEFAULTS": opt_out}
    return subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, env=env, check=True,
                          cwd=Path(__file__).resolve().parents[1]).stdout.split()


def test_more_than_two_gigabytes_freed_at_the_heap_top_stay_in_the_process():
    ok, grew, released = _trim_probe("0")
    assert ok == "True" and int(grew) >= 2_400_000_000  # the blocks came from the heap
    assert released == "0"  # and the heap's end did not move back when they were freed
    ok, grew, _ = _trim_probe("1")  # glibc's defaults: 600 MB blocks are mmaps, unmapped on free
    assert ok == "False" and int(grew) < 100_000_000
