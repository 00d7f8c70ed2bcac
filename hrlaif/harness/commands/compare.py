"""`hrlaif compare DIR... --out OUT`: evaluation dirs (or checkpoints) side by side, each paired
with the first: one table (md, csv, self-contained html), paired Δ with CIs, per-benchmark
breakdowns and bar charts. A checkpoint (a dir with config.json) is first evaluated on the first
entry's benchmarks and items, as `hrlaif gate` does. An lm-eval output dir (0.4.x, --log_samples)
counts as an evaluation dir (hrlaif/reports/lmeval_output.py). Exit 2 when item sets or documents differ.
"""
from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("dirs", type=Path, nargs="+", metavar="DIR",
                        help="evaluation dirs (results.json + samples/), lm-eval output dirs (--output_path with "
                             "--log_samples) or checkpoint dirs; the first is the baseline")
    parser.add_argument("--out", type=Path, required=True, help="output dir (tables, html, plots, evaluations)")
    parser.add_argument("--names", default=None, help="comma list of row labels, one per DIR (default: the dir names)")
    parser.add_argument("--benchmarks", default=None,
                        help="comma list for evaluating checkpoints (default: the first evaluation dir's)")
    parser.add_argument("--limit", type=int, default=None, help="items per benchmark when evaluating checkpoints")
    parser.add_argument("--data-dir", default=None, help="benchmark data dir when evaluating checkpoints")


def run(args) -> int:
    import time

    from hrlaif.core.errors import UserError
    from hrlaif.harness.gate import evaluate_if_checkpoint, is_checkpoint

    if len(args.dirs) < 2:
        raise UserError("compare needs at least two evaluation dirs (or checkpoints)")
    names = [n.strip() for n in args.names.split(",")] if args.names else [d.name for d in args.dirs]
    if len(names) != len(args.dirs) or not all(names):
        raise UserError(f"--names gives {len(names)} labels for {len(args.dirs)} dirs")
    for d in args.dirs:
        if not d.exists():
            raise UserError(f"not found: {d}")
    benches = [b.strip() for b in args.benchmarks.split(",") if b.strip()] if args.benchmarks else None
    t0 = time.perf_counter()
    # Checkpoints are evaluated like the first evaluation dir (its benchmarks, limit and data).
    ref = next((d for d in args.dirs if not is_checkpoint(d)), args.dirs[0])
    evals = []
    for i, d in enumerate(args.dirs):
        evals.append(evaluate_if_checkpoint(d, args.out, f"{i}_{d.name}", ref, benches, args.limit, args.data_dir))
        if i == 0:
            ref = evals[0]  # the baseline's items are the ones every later entry must match
    from hrlaif.reports.compare import build_compare  # lazy: pandas and matplotlib

    out = build_compare(evals, args.out, names=names)
    print((out / "comparison.md").read_text(encoding="utf-8").split("\n## Per benchmark")[0].rstrip())
    print(f"\ncomparison written to {out} ({time.perf_counter() - t0:.1f} s): {out / 'comparison.md'}, "
          f"{out / 'comparison.html'}, {out / 'comparison.csv'}")
    return 0
