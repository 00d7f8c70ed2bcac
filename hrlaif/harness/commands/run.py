"""`hrlaif run [CONFIG] --out DIR [--resume] [--dry-run]`: the whole experiment; the rerun rules are in
hrlaif/harness/pipeline.py, the dry run (plan, judge requests, tokens, cost) in hrlaif/harness/dryrun.py."""
from __future__ import annotations

import argparse
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config file, or the name of a shipped one: quickstart (the default: the embedded "
                        "model, data and judge), paper-7b (a 7B instruct model, an API judge, 8 GPUs)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<config name>, e.g. runs/quickstart)")
    p.add_argument("--resume", action="store_true",
                   help="continue a stage that was interrupted (crash, kill -9) from its partial state: labelling "
                        "from its labels.jsonl rows, PPO from its last checkpoint; without it that stage restarts "
                        "from scratch. Finished stages whose config and inputs are unchanged are reused either way; "
                        "a stage whose config or inputs changed always restarts")
    p.add_argument("--from", dest="from_stage", default=None, help="re-run this stage and every later one")
    p.add_argument("--only", default=None, help="run only this stage (earlier ones must have finished)")
    p.add_argument("--seeds", default=None, metavar="S1,S2,...",
                   help="training seeds (overrides the config's `seeds`): a reward model and PPO per seed and "
                        "variant, each evaluated; SFT, samples and labels are shared. The first seed keeps the "
                        "single-seed stage names (ppo_rlaif), the others get _s<seed> (ppo_rlaif_s2)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the stage plan and each judge-using stage's requests, tokens and (with prices in "
                        "the config) cost; loads no model and calls no judge")


def run(args) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from hrlaif.harness.config import check_judge, config_path, load_config, with_seeds
    from hrlaif.harness.pipeline import run_pipeline

    cfg = load_config(args.config)  # unknown keys, wrong types, missing files: exit 2 before any work
    if args.seeds is not None:
        cfg = with_seeds(cfg, args.seeds)
    if args.dry_run:
        from hrlaif.harness.dryrun import dry_run

        dry_run(cfg, args.config or "the quickstart")
        return 0
    check_judge(cfg)
    out = args.out or f"runs/{config_path(args.config).stem}"
    run_pipeline(cfg, out, resume=args.resume, from_stage=args.from_stage, only=args.only)
    return 0
