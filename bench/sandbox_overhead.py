"""Per-program cost of the HumanEval sandbox over 20 trivial programs.

Compares a sandboxed run (mount/net/pid/ipc namespaces, read-only host mounts, private
/tmp, minimal /dev, fresh /proc, privilege drop, rlimits, guards, temp dir) with a bare
`python -I -S -c` subprocess of the same interpreter; the difference is the sandbox's
overhead. Also reports the batch wall time with the 2-worker pool.

    .venv/bin/python bench/sandbox_overhead.py [--n 20]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrlaif.evalsets import sandbox  # noqa: E402

PROGRAM = "x = sum(range(100))\nassert x == 4950\n"


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args()
    iso = sandbox.isolation()  # probe outside the timings
    print(f"sandbox: {iso.describe()}")

    bare = median_ms(lambda: subprocess.run([iso.python, "-I", "-S", "-B", "-c", PROGRAM], check=True), args.n)

    def sandboxed():
        assert sandbox.run_program(PROGRAM).passed

    boxed = median_ms(sandboxed, args.n)
    nog = median_ms(lambda: sandbox.run_program(PROGRAM, sandbox.Limits(guards=False)), args.n)
    t0 = time.perf_counter()
    res = sandbox.run_programs([PROGRAM] * args.n, workers=2)
    batch = (time.perf_counter() - t0) * 1000
    assert all(r.passed for r in res)

    print(f"programs: {args.n} trivial, median of {args.n} sequential runs")
    print(f"bare python subprocess   {bare:7.1f} ms")
    print(f"sandbox, guards off      {nog:7.1f} ms")
    print(f"sandbox (default)        {boxed:7.1f} ms")
    print(f"overhead per program     {boxed - bare:7.1f} ms  (guards alone: {boxed - nog:.1f} ms)")
    print(f"batch of {args.n}, 2 workers {batch:7.1f} ms total, {batch / args.n:.1f} ms/program")


if __name__ == "__main__":
    main()
