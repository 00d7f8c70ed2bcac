"""MMLU: `hrlaif eval` against the lm-eval command line (issue 13, items 3 and 6).

Setup: N items (default 100) of one MMLU subject with >= N test items from the shared data
(/work/shared/data/mmlu, or --data-dir in the hendrycks layout), 5-shot from its dev split,
batch 8, completion prompts (no chat template), the same HF checkpoint (the embedded SmolLM2-135M,
converted), wall time of each command line (process start to exit). Both read the same CSV files:
lm-eval through a task YAML with `dataset_path: csv` and the official MMLU prompt, ours through
`--data-dir` (the official `mmlu_<subject>` task with the data swapped).

Arms, alternated per repetition so background load hits them alike:
  lm-eval        `lm-eval run --model hf` at its defaults (dtype auto: the checkpoint's fp32), --device cpu
  hrlaif         `hrlaif eval` at its defaults (precision auto: bf16 where the CPU has bf16 matmul)
  hrlaif:fp32    `hrlaif eval --precision fp32` (equal precision)
Printed: wall times (best of --reps), the speed-up at each tool's defaults and at equal precision,
and on how many items each arm picks the same letter as lm-eval.

    python bench/mmlu_vs_lmeval.py                     # the issue's measurement (quiet machine)
    python bench/mmlu_vs_lmeval.py --items 8 --reps 1  # a smoke run
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PY = sys.executable
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
SHARED = ROOT.parent / "shared" / "data"
LETTERS = "ABCD"


def run(cmd: list[str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return time.perf_counter() - t


def pick_subject(data: Path, subject: str | None, items: int) -> str:
    """The named subject, else the first (sorted) with >= `items` test rows."""
    counts = {p.name[:-len("_test.csv")]: sum(1 for _ in csv.reader(p.open(encoding="utf-8")))
              for p in sorted((data / "mmlu" / "test").glob("*_test.csv"))}
    if subject:
        if counts.get(subject, 0) < items:
            sys.exit(f"subject {subject} has {counts.get(subject, 0)} test items, fewer than {items}")
        return subject
    for s, n in counts.items():
        if n >= items:
            return s
    sys.exit(f"no MMLU subject under {data} has {items} test items")


def task_yaml(data: Path, subject: str, folder: Path) -> None:
    """lm-eval task over the same CSVs, with the official MMLU prompt (lm_eval/tasks/mmlu/default)."""
    words = subject.replace("_", " ")
    folder.mkdir(parents=True)
    (folder / "bench_mmlu.yaml").write_text(textwrap.dedent(f"""\
        task: bench_mmlu
        dataset_path: csv
        dataset_kwargs:
          data_files: {{test: {data}/mmlu/test/{subject}_test.csv, dev: {data}/mmlu/dev/{subject}_dev.csv}}
          column_names: [question, A, B, C, D, answer]
        test_split: test
        fewshot_split: dev
        fewshot_config: {{sampler: first_n}}
        num_fewshot: 5
        output_type: multiple_choice
        description: "The following are multiple choice questions (with answers) about {words}.\\n\\n"
        doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{A}}}}\\nB. {{{{B}}}}\\nC. {{{{C}}}}\\nD. {{{{D}}}}\\nAnswer:"
        doc_to_choice: ["A", "B", "C", "D"]
        doc_to_target: "{{{{['A','B','C','D'].index(answer)}}}}"
        metric_list: [{{metric: acc}}]
        """))


def lm_eval_letters(out: Path) -> list[str]:
    # each repetition writes its own timestamped samples file: read the last one
    last = max(out.rglob("samples_bench_mmlu_*.jsonl"), key=lambda f: f.stat().st_mtime)
    rows = [json.loads(line) for line in last.open()]
    rows.sort(key=lambda r: r["doc_id"])
    return [LETTERS[max(range(4), key=lambda i: float(r["filtered_resps"][i][0]))] for r in rows]


def our_letters(out: Path) -> list[str]:
    rows = [json.loads(line) for line in (out / "samples" / "mmlu.jsonl").open()]
    rows.sort(key=lambda r: int(r["doc_id"].rsplit("/", 1)[1]))
    return [r["output"] for r in rows]


def compare(items: int = 100, reps: int = 2, subject: str | None = None, data: Path = SHARED) -> dict:
    """Runs the arms; returns {"subject", "times": {arm: s}, "precision": {arm: p}, "same": {arm: n}}."""
    from hrlaif.core.models import resolve

    model_dir = resolve(None).path
    subject = pick_subject(data, subject, items)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        task_yaml(data, subject, tmp / "tasks")
        one = tmp / "data" / "mmlu"  # ours: a data dir holding just this subject (the same files)
        for split in ("test", "dev"):
            (one / split).mkdir(parents=True)
            (one / split / f"{subject}_{split}.csv").symlink_to(data / "mmlu" / split / f"{subject}_{split}.csv")
        cmds = {
            "lm-eval": [PY, "-m", "lm_eval", "run", "--model", "hf", "--model_args", f"pretrained={model_dir}",
                        "--tasks", "bench_mmlu", "--include_path", str(tmp / "tasks"), "--device", "cpu",
                        "--batch_size", "8", "--limit", str(items), "--log_samples",
                        "--output_path", str(tmp / "lm-eval")],
            "hrlaif": [PY, "-m", "hrlaif.harness.cli", "eval", "--model", model_dir, "--benchmarks", "mmlu",
                       "--data-dir", str(tmp / "data"), "--limit", str(items), "--batch-size", "8",
                       "--chat-template", "off", "--no-cache", "--out", str(tmp / "hrlaif")],
        }
        cmds["hrlaif:fp32"] = [*cmds["hrlaif"][:-1], str(tmp / "hrlaif-fp32"), "--precision", "fp32"]
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(reps):
            for arm, cmd in cmds.items():
                times[arm].append(run(cmd))
        ref = lm_eval_letters(tmp / "lm-eval")
        letters = {"hrlaif": our_letters(tmp / "hrlaif"), "hrlaif:fp32": our_letters(tmp / "hrlaif-fp32")}
        precision = {arm: json.loads((tmp / arm.replace(":", "-") / "results.json").read_text())["model"]["precision"]
                     for arm in letters}
    assert len(ref) == items and all(len(v) == items for v in letters.values())
    return {"subject": subject, "items": items, "times": {k: min(v) for k, v in times.items()},
            "precision": {"lm-eval": "fp32 (checkpoint dtype)", **precision},
            "same": {arm: sum(a == b for a, b in zip(ref, v)) for arm, v in letters.items()}}


def report(r: dict) -> None:
    t = r["times"]
    print(f"MMLU {r['subject']}, {r['items']} items, 5-shot, batch 8, completion prompts, SmolLM2-135M "
          f"(wall time, best of the repetitions):")
    for arm in t:
        print(f"  {arm:<12} {t[arm]:7.1f} s   precision {r['precision'][arm]}")
    print(f"  speed-up at each tool's defaults: {t['lm-eval'] / t['hrlaif']:.2f}x   (target >= 3x)")
    print(f"  speed-up at equal precision (fp32): {t['lm-eval'] / t['hrlaif:fp32']:.2f}x")
    for arm, n in r["same"].items():
        print(f"  same letter as lm-eval: {arm:<12} {n}/{r['items']}   (target >= {0.97 * r['items']:.0f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--subject", default="astronomy", help="~520 of ~600 prompt tokens are its 5-shot prefix")
    ap.add_argument("--data-dir", type=Path, default=SHARED)
    args = ap.parse_args()
    report(compare(args.items, args.reps, args.subject, args.data_dir))


if __name__ == "__main__":
    main()
