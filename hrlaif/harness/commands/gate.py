"""`hrlaif gate --baseline A --candidate B`: paired non-inferiority gate for CI.

Exit codes: 0 the candidate is non-inferior on every benchmark, 1 it is not,
2 bad input (missing files, items that cannot be paired, non-numeric scores).
Items with a null score (invalid judge answer) count at the worst case for the candidate; items
evaluated on one side only fail the gate unless --allow-partial; self-graded judge verdicts are
not gated unless --allow-self-graded.
"""
from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--baseline", type=Path, required=True,
                        help="evaluation dir (results.json + samples/), lm-eval output dir (--output_path with "
                             "--log_samples) or a checkpoint dir (has config.json)")
    parser.add_argument("--candidate", type=Path, required=True, help="same, for the candidate")
    parser.add_argument("--margin", action="append", default=[], metavar="BENCH=POINTS",
                        help="non-inferiority margin in points on a 0-100 scale (repeatable; "
                             "'default=P' sets the rest; default 1 point)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="level of each benchmark's non-inferiority test; the gate passes only when all pass, "
                             "so alpha also bounds its chance of passing a candidate inferior on any one")
    parser.add_argument("--out", type=Path, default=None,
                        help="where gate.json (and checkpoint evaluations) go; default: the candidate eval dir")
    parser.add_argument("--benchmarks", default=None, help="comma list to gate (default: all the baseline has)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="gate on the items both sides evaluated when one side lacks some "
                             "(default: missing items fail the benchmark)")
    parser.add_argument("--allow-self-graded", action="store_true",
                        help="gate judge-graded benchmarks even when the evaluation judge is the labeller or the "
                             "policy's base model (default: not gated, 'not evaluable: self-graded')")
    parser.add_argument("--limit", type=int, default=None, help="items per benchmark when evaluating checkpoints")
    parser.add_argument("--data-dir", default=None, help="benchmark data dir when evaluating checkpoints")
    parser.add_argument("--summary", type=Path, default=None, metavar="FILE",
                        help="write the verdict as Markdown (table with CIs and margins, the reason for each "
                             "FAIL); under GitHub Actions it is also appended to $GITHUB_STEP_SUMMARY")
    parser.add_argument("--junit", type=Path, default=None, metavar="FILE",
                        help="write JUnit XML: one test case per benchmark, a FAIL's reason as its failure")


def run(args) -> int:
    from hrlaif.core.store import write_json
    from hrlaif.harness import gate

    benches = [b.strip() for b in args.benchmarks.split(",") if b.strip()] if args.benchmarks else None
    margins = gate.parse_margins(args.margin)
    out = args.out or (args.candidate / "gate" if gate.is_checkpoint(args.candidate) else args.candidate)
    base = gate.evaluate_if_checkpoint(args.baseline, out, "baseline", args.candidate, benches,
                                       args.limit, args.data_dir)
    cand = gate.evaluate_if_checkpoint(args.candidate, out, "candidate", args.baseline, benches,
                                       args.limit, args.data_dir)
    report = gate.compare(base, cand, margins, args.alpha, benches, allow_partial=args.allow_partial,
                          allow_self_graded=args.allow_self_graded)
    write_json(Path(out) / "gate.json", report)
    from hrlaif.reports.gate_ci import write_ci_outputs
    for p in write_ci_outputs(report, args.summary, args.junit):
        print(f"wrote {p}", file=sys.stderr)
    print(gate.format_table(report))
    print(f"details: {Path(out) / 'gate.json'}", file=sys.stderr)
    return 0 if report["passed"] else 1
