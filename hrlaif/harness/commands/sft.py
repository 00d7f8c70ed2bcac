"""`hrlaif sft`: supervised fine-tuning on alpaca or chat data (hrlaif/trainers/sft.py; flags from SFTConfig)."""
from __future__ import annotations

from hrlaif.core import settings
from hrlaif.trainers.configs import SFTConfig


def add_arguments(p) -> None:
    settings.add_arguments(p, SFTConfig, required=("out",))


def configs(args) -> SFTConfig:
    return settings.from_args(SFTConfig, args)


def run(args) -> int:
    from hrlaif.trainers.sft import train_sft

    print(train_sft(configs(args)))
    return 0
