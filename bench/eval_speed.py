"""Evaluation-core figures (issue: evaluation core, "Performance"):

1. wall time of the full embedded evaluation (ceval, mmlu, gsm8k, humaneval, toxigen) on SmolLM2-135M;
2. wall time of the cached re-run of the same command;
3. `hrlaif eval` vs the lm-eval command line on the same MMLU subject and model (bench/mmlu_vs_lmeval.py);
4. optionally (--shared) the embedded model on ../shared/data with --limit 30, checking that every
   score recomputed from samples/<bench>.jsonl equals results.json.

Usage: python bench/eval_speed.py [--skip-full] [--shared] [--mmlu-items 100]
Prints the figures; it asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def sh(cmd: list[str], **kw) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return time.perf_counter() - t


def hrlaif(*args: str) -> list[str]:
    return [PY, "-m", "hrlaif.harness.cli", *args]


def recompute(out: Path) -> list[str]:
    from hrlaif.evalsets.kinds import summarize
    from hrlaif.evalsets.registry import metric
    res = json.loads((out / "results.json").read_text())
    lines = []
    for name, r in res["benchmarks"].items():
        if name == "win_ratio":
            continue
        rows = [json.loads(l) for l in (out / "samples" / f"{name}.jsonl").read_text().splitlines()]
        again = summarize(metric(name), rows)
        ok = abs(again["score"] - r["score"]) < 1e-12 and again["n"] == r["n"]
        lines.append(f"  {name:<10} score={r['score']:.4f} n={r['n']} recomputed={again['score']:.4f} "
                     f"{'OK' if ok else 'MISMATCH'}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--shared", action="store_true")
    ap.add_argument("--mmlu-items", type=int, default=100)
    ap.add_argument("--mmlu-reps", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_full:
            cmd = hrlaif("eval", "--out", f"{tmp}/full", "--no-cache")
            t_full = sh(cmd)
            print(f"full embedded evaluation (5 benchmarks), SmolLM2-135M: {t_full:.1f} s")
            print("\n".join(recompute(Path(tmp) / "full")))
            sh(hrlaif("eval", "--out", f"{tmp}/seed"))  # fill the cache (the run above bypassed it)
            t_cached = sh(hrlaif("eval", "--out", f"{tmp}/cached"))
            print(f"cached re-run: {t_cached:.2f} s")
        if args.shared:
            shared = ROOT.parent / "shared" / "data"
            t = sh(hrlaif("eval", "--data-dir", str(shared), "--limit", "30", "--out", f"{tmp}/shared"))
            print(f"embedded model on ../shared/data --limit 30: {t:.1f} s")
            print("\n".join(recompute(Path(tmp) / "shared")))
    if args.mmlu_items:
        import mmlu_vs_lmeval
        mmlu_vs_lmeval.report(mmlu_vs_lmeval.compare(args.mmlu_items, args.mmlu_reps))


if __name__ == "__main__":
    main()
