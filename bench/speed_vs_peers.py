"""Speed of each part beside its peer (issue 13's figures) in one run (run on a quiet machine; ~25 min in full):

1. the host: CPU flags, and the measured matmul peak in fp32 and bf16 (the case for `precision: auto`);
2. MMLU, `hrlaif eval` vs the lm-eval CLI: wall time at each tool's defaults and at equal precision, and
   the items on which both pick the same letter (bench/mmlu_vs_lmeval.py);
3. PPO, hrlaif vs TRL's PPOTrainer at equal settings, with the generate / score / train split and the
   share of matmul peak (bench/ppo_throughput.py, `pip install '.[bench]'`; skipped without trl);
4. the quickstart, cold: `hrlaif run` with empty judge and evaluation caches (the converted embedded
   model is reused; it is not part of the run), its wall time and every stage's.

    python bench/speed_vs_peers.py                 # everything
    python bench/speed_vs_peers.py --skip ppo,quickstart --mmlu-items 8   # a smoke run
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def host() -> None:
    import torch
    from ppo_throughput import peak_flops

    from hrlaif.core import hardware

    d = hardware.describe()
    print(f"host: {d['machine']}, {os.cpu_count()} cores, flags {' '.join(d['cpu_flags']) or '(none of note)'}; "
          f"native bf16: {d['cpu_native_bf16']}; auto precision on cpu: {hardware.resolve_precision('auto', 'cpu')}")
    for threads in (1, torch.get_num_threads()):
        torch.set_num_threads(threads)
        fp32, bf16 = peak_flops("fp32") / 1e9, peak_flops("bf16") / 1e9
        print(f"  matmul 1024^2, {threads} thread(s): fp32 {fp32:6.0f} GFLOP/s, bf16 {bf16:6.0f} GFLOP/s "
              f"({bf16 / fp32:.1f}x)")


def mmlu(items: int, reps: int) -> None:
    import mmlu_vs_lmeval
    mmlu_vs_lmeval.report(mmlu_vs_lmeval.compare(items, reps))


def ppo(reps: int) -> None:
    if importlib.util.find_spec("trl") is None:
        print("PPO vs TRL: skipped (trl is not installed: pip install '.[bench]')")
        return
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "ppo_throughput.py"), "--reps", str(reps)],
                       env=ENV, cwd=ROOT, capture_output=True, text=True)
    print(p.stdout.rstrip() if p.returncode == 0 else f"PPO bench failed ({p.returncode}):\n{p.stderr[-2000:]}")


def quickstart() -> None:
    """`hrlaif run` (the README's command) with empty judge and evaluation caches."""
    from hrlaif.core.store import cache_dir

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        models = cache_dir() / "models"
        if models.exists():  # the one-off GGUF conversion is not part of the run
            (cache / "models").symlink_to(models)
        out = Path(tmp) / "run"
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "hrlaif.harness.cli", "run", "--out", str(out)],
                           env={**ENV, "HRLAIF_CACHE": str(cache)}, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if p.returncode != 0:
            print(f"quickstart failed ({p.returncode}):\n{p.stderr[-2000:]}")
            return
        stages = json.loads((out / "run_summary.json").read_text())["stages_s"]
        shutil.rmtree(out, ignore_errors=True)
    print(f"quickstart, cold caches: {wall / 60:.1f} min (target <= 10 min)")
    print("  " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip", default="", help="comma-separated: host, mmlu, ppo, quickstart")
    ap.add_argument("--mmlu-items", type=int, default=100)
    ap.add_argument("--reps", type=int, default=2, help="alternating repetitions of the MMLU and PPO arms")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    parts = {"host": host, "mmlu": lambda: mmlu(args.mmlu_items, args.reps), "ppo": lambda: ppo(args.reps),
             "quickstart": quickstart}
    for name, fn in parts.items():
        if name not in skip:
            fn()
            print(flush=True)


if __name__ == "__main__":
    main()
