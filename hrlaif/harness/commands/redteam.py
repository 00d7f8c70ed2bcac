"""`hrlaif redteam`: the SFT model answers harmful prompts; the harmlessness judge flags, rewrites and
re-judges (hrlaif/trainers/feedback/redteam_stage.py; flags from RedteamConfig and JudgeConfig)."""
from __future__ import annotations

from hrlaif.core import settings
from hrlaif.judges.config import JudgeConfig
from hrlaif.trainers.feedback.redteam_stage import RedteamConfig


def add_arguments(p) -> None:
    settings.add_arguments(p, RedteamConfig, required=("out",))
    settings.add_arguments(p, JudgeConfig, prefix="judge",
                           group_title="harmlessness judge (default: the embedded llama.cpp judge)")


def configs(args) -> tuple[RedteamConfig, JudgeConfig]:
    return settings.from_args(RedteamConfig, args), settings.from_args(JudgeConfig, args, prefix="judge")


def run(args) -> int:
    from hrlaif.trainers.feedback.redteam_stage import run_redteam

    cfg, judge = configs(args)
    run_redteam(cfg, judge)
    return 0
