"""`hrlaif report DIR`: rebuild DIR/report/ from the finished files of a run directory.
`hrlaif report --index RUNS_DIR`: an index page (index.html, index.md) of the runs under RUNS_DIR."""
from __future__ import annotations

import time
from pathlib import Path

from hrlaif.core.layout import ReportDir


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", type=Path, nargs="?", help="run directory (the --out of `hrlaif run`)")
    parser.add_argument("--index", type=Path, default=None, metavar="RUNS_DIR",
                        help="write an index page of the runs under RUNS_DIR instead (headline numbers, links)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report directory (default: RUN_DIR/report; with --index: RUNS_DIR)")


def run(args) -> int:
    from hrlaif.core.errors import UserError

    if (args.run_dir is None) == (args.index is None):
        raise UserError("give a run directory, or --index RUNS_DIR (not both)")
    t0 = time.perf_counter()
    if args.index is not None:
        from hrlaif.reports.index import build_index  # lazy: pandas

        out = build_index(args.index, args.out)
        print(f"index written to {out} ({time.perf_counter() - t0:.1f} s): {out / 'index.html'}, {out / 'index.md'}")
        return 0
    from hrlaif.reports.build import build_report  # lazy: matplotlib and pandas

    out = build_report(args.run_dir, args.out)
    print(f"report written to {out} ({time.perf_counter() - t0:.1f} s): "
          f"{out / 'report.md'}, {ReportDir(out).html}, {out / 'comparison.csv'}")
    return 0
