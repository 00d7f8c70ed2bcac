"""`hrlaif sample`: K responses per prompt from a checkpoint -> samples.jsonl (trainers.sampling)."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="checkpoint: HF dir, .gguf, hub id (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--prompts", default=None, help="prompts.jsonl (default: trainers/data/feedback_prompts.jsonl)")
    p.add_argument("--k", type=int, default=4, help="responses per prompt (>= 2)")
    p.add_argument("--out", required=True, help="output samples.jsonl")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=4, help="prompts per generate call")
    p.add_argument("--limit", type=int, default=0, help="only the first N prompts")
    p.add_argument("--seed", type=int, default=1234)


def run(args) -> int:
    from trainers.sampling import SampleConfig, sample_responses

    out = sample_responses(SampleConfig(
        model=args.model, prompts=args.prompts, k=args.k, out=args.out, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p, batch_size=args.batch_size, limit=args.limit,
        seed=args.seed))
    print(out)
    return 0
