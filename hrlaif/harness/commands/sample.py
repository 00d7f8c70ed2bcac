"""`hrlaif sample`: K responses per prompt from a checkpoint -> samples.jsonl (hrlaif/trainers/sampling.py;
flags from SampleConfig)."""
from __future__ import annotations

from hrlaif.core import settings
from hrlaif.trainers.configs import SampleConfig


def add_arguments(p) -> None:
    settings.add_arguments(p, SampleConfig, required=("out",))


def configs(args) -> SampleConfig:
    return settings.from_args(SampleConfig, args)


def run(args) -> int:
    from hrlaif.trainers.sampling import sample_responses

    print(sample_responses(configs(args)))
    return 0
