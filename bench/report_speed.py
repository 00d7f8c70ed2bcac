"""How long `hrlaif report DIR` takes to regenerate a report (synthetic run directory).

Two figures, wall and CPU seconds:
- cold: a fresh `python -m hrlaif.harness.cli report DIR` process (imports included), as a user runs it;
- warm: `report` again in one process after a first build (imports paid), median of --reps.

The tests only bound this loosely (tests/test_reports.py); this script prints the figure.

    .venv/bin/python bench/report_speed.py [--reps 5]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from synthetic_run import write_synthetic_run  # noqa: E402


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="warm repetitions (median reported)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="report-speed-") as tmp:
        return _measure(write_synthetic_run(Path(tmp) / "run"), args.reps)


def _measure(run_dir: Path, reps: int) -> int:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    c0, t0 = _children_cpu(), time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "hrlaif.harness.cli", "report", str(run_dir)], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    cold_wall, cold_cpu = time.perf_counter() - t0, _children_cpu() - c0
    if p.returncode != 0:
        sys.exit(f"hrlaif report failed ({p.returncode}): {p.stderr[-2000:]}")

    from hrlaif.harness.cli import main as cli
    from hrlaif.reports.build import build_report

    build_report(run_dir)  # pay the imports once
    walls, cpus = [], []
    for _ in range(max(1, reps)):
        t, c = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli(["report", str(run_dir)])
        if code != 0:
            sys.exit("hrlaif report failed")
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    print(f"report regeneration, synthetic run ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}):")
    print(f"  cold process: {cold_wall:.2f} s wall, {cold_cpu:.2f} s CPU")
    print(f"  warm (median of {len(walls)}): {statistics.median(walls):.2f} s wall, "
          f"{statistics.median(cpus):.2f} s CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
