"""`hrlaif gate` on a real regression and on a real null, with the CLI a CI owner runs.

  regression  the candidate is a checkpoint made worse by real training (default: the over-optimised PPO
              policy of bench/overoptimise.py), gated against the model it started from, on the benchmark
              it lost (MMLU cloze): the gate must FAIL it there and print the drop with its CI;
  null        the baseline re-evaluated under a change that must not matter (another batch size, and with
              --null-precision another precision): the gate must PASS it at the smallest margin its n
              supports (hrlaif.core.stats.min_margin; 0.6 pt at 600 items), plus whatever the change really moved.

    python bench/gate_real.py --candidate runs/overoptimise/overoptimised/final --data-dir ../shared/data

Every evaluation runs with the output cache off (a cached re-run would make the null trivially identical).
Prints both verdicts, the figures and the host's CPU flags; writes OUT/summary.json. Exit 0 when the
regression FAILs and the null PASSes.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrlaif.core.hardware import describe, hold_back_torch, resolve_precision  # noqa: E402


def cli(*argv) -> tuple[int, str]:
    from hrlaif.harness.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([str(a) for a in argv])
    return code, buf.getvalue()


def evaluate(model: str | None, out: Path, args, **over) -> Path:
    if (out / "results.json").exists():
        return out
    flags = ["eval", "--benchmarks", args.bench, "--limit", args.limit, "--no-use-cache", "--out", out,
             "--batch-size", over.get("batch_size", 8), "--precision", over.get("precision", args.precision)]
    if model:
        flags += ["--model", model]
    if args.data_dir:
        flags += ["--data-dir", args.data_dir]
    t = time.time()
    code, text = cli(*flags)
    if code != 0:
        raise SystemExit(f"gate_real: hrlaif eval failed ({code}) for {out}:\n{text[-2000:]}")
    print(f"evaluated {out.name} in {time.time() - t:.0f} s", flush=True)
    return out


def gate(base: Path, cand: Path, margin_pt: float, out: Path, bench: str) -> dict:
    code, text = cli("gate", "--baseline", base, "--candidate", cand, "--margin", f"{bench}={margin_pt:.2f}",
                     "--out", out, "--summary", out / "gate.md")
    print(text)
    res = json.loads((out / "gate.json").read_text())
    return {"exit": code, "gate": res}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", default="runs/overoptimise/overoptimised/final")
    ap.add_argument("--baseline", default=None, help="the model the candidate started from (default: embedded)")
    ap.add_argument("--bench", default="mmlu_cloze")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--limit", type=int, default=600)
    ap.add_argument("--margin", type=float, default=1.0, help="regression gate's margin, points")
    ap.add_argument("--out", default="runs/gate_real")
    ap.add_argument("--precision", default="auto", help="of the baseline and candidate evaluations")
    ap.add_argument("--null-precision", default=None,
                    help="the null re-evaluation's precision (default: the same; e.g. fp32 against auto = bf16)")
    args = ap.parse_args()
    hold_back_torch()
    from hrlaif.core.stats import min_margin

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = evaluate(args.baseline, out / "baseline", args)
    first = resolve_precision(args.precision, "cpu")
    second = resolve_precision(args.null_precision or args.precision, "cpu")
    rerun = evaluate(args.baseline, out / "baseline_rerun", args, batch_size=2, precision=second)
    cand = evaluate(args.candidate, out / "candidate", args)
    n = json.loads((base / "results.json").read_text())["benchmarks"][args.bench]["n"]
    null_margin = round(min_margin(n) * 100 + 0.05, 2)
    print(f"\n== regression: {args.candidate} vs its start, margin {args.margin} pt")
    (out / "regression").mkdir(exist_ok=True)
    reg = gate(base, cand, args.margin, out / "regression", args.bench)
    print(f"== null: the baseline again at batch size 2 and precision {second} (was 8, {first}); "
          f"margin {null_margin} pt = the smallest {n} items support")
    (out / "null").mkdir(exist_ok=True)
    null = gate(base, rerun, null_margin, out / "null", args.bench)
    ok = reg["exit"] == 1 and null["exit"] == 0
    summary = {"host": describe(), "n": n, "regression": reg, "null": null, "null_margin_pt": null_margin,
               "null_change": {"batch_size": [8, 2], "precision": [first, second]}, "as_expected": ok}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"host CPU flags: {' '.join(describe()['cpu_flags'])}")
    print("verdict: " + ("regression FAILED and null PASSED, as expected" if ok else "NOT as expected"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
