"""`hrlaif sft`: supervised fine-tuning on alpaca or chat data (trainers/sft.py; flags from SFTConfig)."""
from __future__ import annotations

from core import settings
from trainers.configs import SFTConfig


def add_arguments(p) -> None:
    settings.add_arguments(p, SFTConfig, required=("out",))


def configs(args) -> SFTConfig:
    return settings.from_args(SFTConfig, args)


def run(args) -> int:
    from trainers.sft import train_sft

    print(train_sft(configs(args)))
    return 0
