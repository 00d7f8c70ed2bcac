"""`hrlaif train-rm`: K-wise reward model on labelled partial orders (hrlaif/trainers/reward_model.py;
flags from RMConfig)."""
from __future__ import annotations

from hrlaif.core import settings
from hrlaif.core.layout import RM_METRICS
from hrlaif.trainers.configs import RMConfig


def add_arguments(p) -> None:
    settings.add_arguments(p, RMConfig, required=("labels", "out"))


def configs(args) -> RMConfig:
    return settings.from_args(RMConfig, args)


def run(args) -> int:
    from hrlaif.core.store import read_json
    from hrlaif.trainers.reward_model import train_reward_model

    out = train_reward_model(configs(args))
    m = read_json(out / RM_METRICS)
    acc = m["heldout_acc"]
    print(f"{out}  held-out pair accuracy {acc['score']:.3f} (n={acc['n']}, 95% CI {acc['ci95'][0]:.3f}-"
          f"{acc['ci95'][1]:.3f}), clipped share {m['clipped_share']:.3f}")
    return 0
