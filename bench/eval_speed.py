"""Evaluation-core figures (issue: evaluation core, "Performance"):

1. wall time of the full embedded evaluation (ceval, mmlu, gsm8k, humaneval, toxigen) on SmolLM2-135M;
2. wall time of the cached re-run of the same command;
3. `hrlaif eval` vs the lm-eval command line on the same MMLU-format task and model, in one run;
4. optionally (--shared) the embedded model on ../shared/data with --limit 30, checking that every
   score recomputed from samples/<bench>.jsonl equals results.json.

Usage: python bench/eval_speed.py [--skip-full] [--shared] [--mmlu-limit 30]
Prints the figures; it asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
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
    return [PY, "-m", "harness.cli", *args]


def recompute(out: Path) -> list[str]:
    from evalsets.kinds import summarize
    res = json.loads((out / "results.json").read_text())
    lines = []
    for name, r in res["benchmarks"].items():
        if name == "win_ratio":
            continue
        rows = [json.loads(l) for l in (out / "samples" / f"{name}.jsonl").read_text().splitlines()]
        again = summarize(name, rows)
        ok = abs(again["score"] - r["score"]) < 1e-12 and again["n"] == r["n"]
        lines.append(f"  {name:<10} score={r['score']:.4f} n={r['n']} recomputed={again['score']:.4f} {'OK' if ok else 'MISMATCH'}")
    return lines


def lm_eval_cli_vs_ours(limit: int) -> None:
    """Same task (hendrycks CSV of the embedded MMLU set, official MMLU prompt), same model."""
    from core.models import resolve
    model_dir = resolve(None).path
    data = ROOT / "evalsets" / "data" / "mmlu"
    subject = "elementary_mathematics"
    with tempfile.TemporaryDirectory() as tmp:
        tasks = Path(tmp) / "tasks"
        tasks.mkdir()
        (tasks / "bench_mmlu.yaml").write_text(textwrap.dedent(f"""\
            task: bench_mmlu
            dataset_path: csv
            dataset_kwargs:
              data_files: {{test: {data}/test/{subject}_test.csv, dev: {data}/dev/{subject}_dev.csv}}
              column_names: [question, A, B, C, D, answer]
            test_split: test
            fewshot_split: dev
            fewshot_config: {{sampler: first_n}}
            num_fewshot: 5
            output_type: multiple_choice
            description: "The following are multiple choice questions (with answers) about elementary mathematics.\\n\\n"
            doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{A}}}}\\nB. {{{{B}}}}\\nC. {{{{C}}}}\\nD. {{{{D}}}}\\nAnswer:"
            doc_to_choice: ["A", "B", "C", "D"]
            doc_to_target: "{{{{['A','B','C','D'].index(answer)}}}}"
            metric_list: [{{metric: acc}}]
            """))
        cli = [PY, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
               "--tasks", "bench_mmlu", "--include_path", str(tasks), "--device", "cpu", "--batch_size", "8",
               "--limit", str(limit), "--output_path", str(Path(tmp) / "lm_out")]
        ours = hrlaif("eval", "--benchmarks", "mmlu", "--limit", str(limit), "--chat-template", "off",
                      "--no-cache", "--out", str(Path(tmp) / "ours"))
        # restrict ours to the same subject: a data dir with that one subject
        sub = Path(tmp) / "data" / "mmlu"
        for split in ("test", "dev"):
            (sub / split).mkdir(parents=True)
            (sub / split / f"{subject}_{split}.csv").write_text((data / split / f"{subject}_{split}.csv").read_text())
        ours += ["--data-dir", str(Path(tmp) / "data")]
        times = {"lm-eval CLI": [], "hrlaif eval": []}
        for _ in range(2):  # alternate, so machine load hits both alike
            times["lm-eval CLI"].append(sh(cli))
            times["hrlaif eval"].append(sh(ours))
        best = {k: min(v) for k, v in times.items()}
        print(f"MMLU-format task, {limit} items, 5-shot, SmolLM2-135M (best of 2, alternating):")
        for k, v in best.items():
            print(f"  {k:<12} {v:6.1f} s")
        print(f"  ratio hrlaif/lm-eval = {best['hrlaif eval'] / best['lm-eval CLI']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--shared", action="store_true")
    ap.add_argument("--mmlu-limit", type=int, default=10)
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
    lm_eval_cli_vs_ours(args.mmlu_limit)


if __name__ == "__main__":
    main()
