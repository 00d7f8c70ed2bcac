"""`hrlaif eval`: score a checkpoint (hrlaif/evalsets/runner.py; flags from EvalConfig and JudgeConfig)."""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from hrlaif.core import settings
from hrlaif.core.layout import EvalDir
from hrlaif.evalsets.config import EvalConfig
from hrlaif.judges.config import JudgeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    settings.add_arguments(p, EvalConfig)
    settings.add_arguments(p, JudgeConfig, prefix="judge", group_title="evaluation judge: grades satisfaction, the win "
                           "ratio and ToxiGen's judge classifier (default: the embedded llama.cpp judge)")


def configs(args) -> tuple[EvalConfig, JudgeConfig]:
    # A completions file is scored on HumanEval unless benchmarks are named.
    humaneval = {"benchmarks": ["humaneval"]} if getattr(args, "completions", None) and \
        not hasattr(args, "benchmarks") else {}
    cfg = settings.from_args(EvalConfig, args, **humaneval)
    if cfg.out is None:
        cfg = dataclasses.replace(cfg, out=f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}")
    return cfg, settings.from_args(JudgeConfig, args, prefix="judge")


def run(args) -> int:
    from hrlaif.evalsets.runner import LazyModel, evaluate

    cfg, judge = configs(args)
    out = Path(cfg.out)
    t0 = time.time()
    print(f"hrlaif eval: {', '.join(cfg.benchmarks)} -> {out}", flush=True)
    res = evaluate(LazyModel(cfg.model), cfg, out, judge=judge)
    print(f"model {res['model'].get('name')} (weights {res['model'].get('weights_sha')}); "
          f"wrote {EvalDir(out).results} in {time.time() - t0:.1f}s", flush=True)
    return 0
