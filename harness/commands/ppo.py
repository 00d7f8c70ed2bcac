"""`hrlaif ppo`: DeepSpeed PPO of an actor against a reward model, with drift evaluation.

Two ranks on one machine: `torchrun --nproc_per_node 2 -m harness.cli ppo ... --zero-stage 2`.
"""
from __future__ import annotations

import argparse


def _reward_or_none(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="actor checkpoint directory (also the frozen reference)")
    p.add_argument("--reward-model", required=True, help="reward model directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--prompts", help="training prompts.jsonl (default: the embedded feedback prompts)")
    p.add_argument("--heldout-prompts", help="held-out prompts.jsonl for the drift hook")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8, help="prompts per step over all ranks")
    p.add_argument("--mini-batch-size", type=int, default=4, help="sequences per optimiser step over all ranks")
    p.add_argument("--ppo-epochs", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--max-prompt-len", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-6, help="actor learning rate")
    p.add_argument("--critic-lr", type=float, default=1e-5)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--kl-estimator", choices=["k1", "k3"], default="k1")
    p.add_argument("--adaptive-kl", action="store_true", help="adapt kl_coef towards --target-kl (Ziegler)")
    p.add_argument("--target-kl", type=float, default=6.0)
    p.add_argument("--missing-eos-reward", type=_reward_or_none, default=-1.0,
                   help="reward of a response cut at --max-new-tokens ('none' = keep the RM score)")
    p.add_argument("--critic-init", choices=["actor", "reward"], default="actor")
    p.add_argument("--zero-stage", type=int, default=0)
    p.add_argument("--train-layers", type=int, default=0, help="train only the top N blocks of actor/critic (0 = all)")
    p.add_argument("--no-share-trunk", action="store_true",
                   help="with --train-layers: recompute the shared frozen blocks in every model and epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0 = never)")
    p.add_argument("--drift-every", type=int, default=0, help="drift evaluation every M steps (0 = never)")
    p.add_argument("--drift-benchmarks", default="gsm8k,mmlu", help="comma list ('' = held-out reward only)")
    p.add_argument("--drift-limit", type=int, default=20)
    p.add_argument("--drift-data-dir")
    p.add_argument("--greedy", action="store_true", help=argparse.SUPPRESS)  # deterministic tests only
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest")


def config_from_args(args):
    from trainers.ppo import DriftConfig, PPOConfig
    drift = DriftConfig(every=args.drift_every,
                        benchmarks=[b.strip() for b in args.drift_benchmarks.split(",") if b.strip()],
                        limit=args.drift_limit, data_dir=args.drift_data_dir, heldout_prompts=args.heldout_prompts)
    return PPOConfig(model=args.model, reward_model=args.reward_model, out=args.out, prompts=args.prompts,
                     steps=args.steps, batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
                     ppo_epochs=args.ppo_epochs, max_new_tokens=args.max_new_tokens,
                     max_prompt_len=args.max_prompt_len, temperature=args.temperature, lr=args.lr,
                     critic_lr=args.critic_lr, kl_coef=args.kl_coef, kl_estimator=args.kl_estimator,
                     adaptive_kl=args.adaptive_kl, target_kl=args.target_kl,
                     missing_eos_reward=args.missing_eos_reward, critic_init=args.critic_init,
                     zero_stage=args.zero_stage, train_layers=args.train_layers,
                     share_trunk=not args.no_share_trunk, seed=args.seed, save_every=args.save_every,
                     greedy=args.greedy, resume=args.resume, drift=drift)


def run(args) -> int:
    from trainers.ppo import train
    cfg = config_from_args(args)
    cfg.validate()  # bad flags fail before DeepSpeed and the models load
    rows = train(cfg)
    if rows:
        last = rows[-1]
        print(f"ppo: {last['step']} steps, reward {last['reward_raw']:.4f}, kl {last['kl']:.4f}; "
              f"final actor in {cfg.out}/final")
    return 0
