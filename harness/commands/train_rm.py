"""`hrlaif train-rm`: K-wise reward model on labelled partial orders (trainers.reward_model)."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="backbone checkpoint, usually the SFT model (default: embedded SmolLM2)")
    p.add_argument("--labels", required=True, help="labels.jsonl from `hrlaif label`")
    p.add_argument("--samples", default=None, help="samples.jsonl to cross-check the labels against")
    p.add_argument("--out", required=True, help="reward-model output directory")
    p.add_argument("--clip", type=float, default=10.0, help="rewards are clamped to [-clip, clip]")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=0, help="cap on optimizer steps (0 = all epochs)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--groups-per-step", type=int, default=4, help="prompt groups per optimizer step")
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--heldout-frac", type=float, default=0.2, help="share of prompt ids held out")
    p.add_argument("--loss", choices=["kwise", "pairwise"], default="kwise")
    p.add_argument("--train-layers", type=int, default=0, help="train only the top N blocks + head (0 = all)")
    p.add_argument("--zero-stage", type=int, default=0, help="DeepSpeed ZeRO stage 0-3")
    p.add_argument("--seed", type=int, default=1234)


def run(args) -> int:
    from core.store import read_json
    from trainers.reward_model import RMConfig, train_reward_model

    out = train_reward_model(RMConfig(
        model=args.model, labels=args.labels, samples=args.samples, out_dir=args.out, clip=args.clip,
        epochs=args.epochs, max_steps=args.max_steps, lr=args.lr, groups_per_step=args.groups_per_step,
        max_len=args.max_len, heldout_frac=args.heldout_frac, loss=args.loss, zero_stage=args.zero_stage,
        train_layers=args.train_layers, seed=args.seed))
    m = read_json(out / "rm_metrics.json")
    acc = m["heldout_acc"]
    print(f"{out}  held-out pair accuracy {acc['score']:.3f} (n={acc['n']}, 95% CI {acc['ci95'][0]:.3f}-"
          f"{acc['ci95'][1]:.3f}), clipped share {m['clipped_share']:.3f}")
    return 0
