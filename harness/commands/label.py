"""`hrlaif label`: AI-feedback preference labels and the label-accuracy table
(trainers/feedback/label_stage.py; flags from LabelConfig and JudgeConfig)."""
from __future__ import annotations

import argparse

from core import settings
from judges.config import JudgeConfig
from trainers.configs import LabelConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    settings.add_arguments(p, LabelConfig, required=("samples", "mode", "out"))
    settings.add_arguments(p, JudgeConfig, prefix="judge", group_title="judge (default: the embedded llama.cpp judge)")


def configs(args) -> tuple[LabelConfig, JudgeConfig]:
    return settings.from_args(LabelConfig, args), settings.from_args(JudgeConfig, args, prefix="judge")


def run(args) -> int:
    from trainers.feedback.label_stage import label_samples

    label_samples(*configs(args))
    return 0
