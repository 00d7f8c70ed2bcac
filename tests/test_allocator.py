"""harness/allocator.py: glibc keeps big freed blocks, unless the user opts out."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

# minor page faults while re-allocating 256 MB that was just freed
PROBE = ("import resource, torch; from harness.allocator import keep_freed_memory as k; ok = k(); "
         "f = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt; "
         "z = torch.zeros(1 << 26); del z; a = f(); z = torch.zeros(1 << 26); print(ok, k(), f() - a)")


def _probe(env_extra: dict) -> tuple[str, str, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__))).stdout.split()
    return out[0], out[1], int(out[2])


def test_thresholds_apply_once_and_the_opt_out_keeps_glibc_defaults():
    ok, again, reused = _probe({"HRLAIF_MALLOC_DEFAULTS": "0"})
    assert (ok, again) == ("True", "True")
    off, _, fresh = _probe({"HRLAIF_MALLOC_DEFAULTS": "1"})
    assert off == "False"
    # a fresh mmap faults in all 65,536 pages of 256 MB; the reused heap block almost none
    assert fresh > 60_000 and reused < 1_000
