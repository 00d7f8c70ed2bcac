"""`hrlaif ppo`: DeepSpeed PPO of an actor against a reward model, with drift evaluation
(hrlaif/trainers/ppo.py; flags from PPOConfig).

Two ranks on one machine: `torchrun --nproc_per_node 2 -m hrlaif.harness.cli ppo ... --zero-stage 2`.
"""
from __future__ import annotations

import argparse

from hrlaif.core import settings
from hrlaif.trainers.configs import PPOConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    settings.add_arguments(p, PPOConfig, required=("model", "reward_model", "out"))


def configs(args) -> PPOConfig:
    from hrlaif.harness.config import check_drift_benchmarks

    cfg = settings.from_args(PPOConfig, args)
    check_drift_benchmarks(cfg, settings.flag("drift_benchmarks"))
    return cfg


def run(args) -> int:
    from hrlaif.evalsets.runner import evaluate_in_process
    from hrlaif.trainers.ppo import train

    cfg = configs(args)  # bad flags fail before DeepSpeed and the models load
    rows = train(cfg, evaluate_fn=evaluate_in_process)
    if rows:
        last = rows[-1]
        print(f"ppo: {last['step']} steps, reward {last['reward_raw']:.4f}, kl {last['kl']:.4f}; "
              f"final actor in {cfg.out}/final")
    return 0
