"""`hrlaif sft`: supervised fine-tuning on alpaca or chat data (trainers.sft)."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="base checkpoint: HF dir, .gguf, hub id (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--data", default=None, help="alpaca / sharegpt / messages JSON or JSONL (default: trainers/data/sft_embedded.json)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=0, help="cap on optimizer steps (0 = all epochs)")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--max-len", type=int, default=512, help="tokens per sequence; longer ones are truncated")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--zero-stage", type=int, default=0, help="DeepSpeed ZeRO stage 0-3")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0 = at the end)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N examples")
    p.add_argument("--seed", type=int, default=1234)


def run(args) -> int:
    from trainers.sft import SFTConfig, train_sft

    out = train_sft(SFTConfig(
        model=args.model, data=args.data, out_dir=args.out, epochs=args.epochs, max_steps=args.max_steps,
        lr=args.lr, warmup_steps=args.warmup_steps, max_len=args.max_len, batch_size=args.batch_size,
        grad_accum=args.grad_accum, zero_stage=args.zero_stage, save_every=args.save_every,
        limit=args.limit, seed=args.seed))
    print(out)
    return 0
