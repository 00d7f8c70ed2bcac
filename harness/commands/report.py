"""`hrlaif report DIR`: rebuild DIR/report/ from the finished files of a run directory."""
from __future__ import annotations

import time
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", type=Path, help="run directory (the --out of `hrlaif run`)")
    parser.add_argument("--out", type=Path, default=None, help="report directory (default: RUN_DIR/report)")


def run(args) -> int:
    from reports.build import build_report  # lazy: matplotlib and pandas

    t0 = time.perf_counter()
    out = build_report(args.run_dir, args.out)
    print(f"report written to {out} ({time.perf_counter() - t0:.1f} s): "
          f"{out / 'report.md'}, {out / 'report.html'}, {out / 'comparison.csv'}")
    return 0
