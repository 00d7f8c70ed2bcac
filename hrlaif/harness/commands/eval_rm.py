"""`hrlaif eval-rm`: accuracy of any reward model (harness or HF sequence classifier) on a
preference set, with a CI clustered by prompt (hrlaif/trainers/reward_eval.py; flags from RMEvalConfig)."""
from __future__ import annotations

from hrlaif.core import settings
from hrlaif.trainers.configs import RMEvalConfig


def add_arguments(p) -> None:
    settings.add_arguments(p, RMEvalConfig, required=("reward_model", "pairs"))


def configs(args) -> RMEvalConfig:
    return settings.from_args(RMEvalConfig, args)


def run(args) -> int:
    from hrlaif.trainers.reward_eval import evaluate_rm

    r = evaluate_rm(configs(args))
    a = r["accuracy"]
    print(f"{r['reward_model']}: accuracy {a['score']:.3f} (95% CI {a['ci95'][0]:.3f}-{a['ci95'][1]:.3f}, "
          f"{a['n']} pairs, {a['n_clusters']} prompts) on {r['pairs']}")
    if len(r["per_category"]) > 1:
        for cat, c in r["per_category"].items():
            print(f"  {cat:<20} {c['score']:.3f}  n={c['n']}")
    return 0
