"""`hrlaif label`: AI-feedback preference labels and the label-accuracy table
(hrlaif/trainers/feedback/label_stage.py; flags from LabelConfig and JudgeConfig)."""
from __future__ import annotations

import argparse

from hrlaif.core import settings
from hrlaif.judges.config import JudgeConfig
from hrlaif.trainers.configs import LabelConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    settings.add_arguments(p, LabelConfig, required=("samples", "mode", "out"))
    settings.add_arguments(p, JudgeConfig, prefix="judge", group_title="judge (default: the embedded llama.cpp judge)")


def configs(args) -> tuple[LabelConfig, JudgeConfig]:
    return settings.from_args(LabelConfig, args), settings.from_args(JudgeConfig, args, prefix="judge")


def run(args) -> int:
    from hrlaif.trainers.feedback.label_stage import label_samples

    label_samples(*configs(args))
    return 0
