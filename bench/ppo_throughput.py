"""PPO step time: hrlaif's trainer vs TRL's PPOTrainer (trl==0.19.1, `pip install .[bench]`).

Both run the same model (default: the embedded SmolLM2-135M; `--tiny` for a 0.4M random
Llama), batch size, prompts, response length, PPO epochs and minibatches, fp32 on CPU.
Each repetition launches one subprocess per implementation, alternating ours/TRL so
background load hits both alike; the first step of every run is warm-up and not timed.

Also printed: the share of measured matmul peak reached in our PPO update phase, i.e. the
FLOPs the update executes (forward and backward of the blocks it runs, see `main`) divided by
the update time and by the peak FLOP/s of a timed 2048^3 fp32 torch.matmul.

`--train-layers N` trains only the top N blocks of policy and value model in BOTH trainers
(the quickstart's setting is 8). Ours then computes the frozen blocks once per rollout for
all four models (trainers/trunk.py); TRL recomputes them in every forward.

Ours keeps freed memory in the process (harness/allocator.py). `--trl-allocator` adds a third
arm, TRL with that same glibc setting, to show how much of the gap the allocator is.

    python bench/ppo_throughput.py --reps 2 --steps 3 --batch-size 4 --response-length 24
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = ["Explain why the sky is blue.", "Write a haiku about autumn.", "What is 17 times 3?",
           "Give me three tips for learning Python.", "Summarise the plot of Hamlet in two sentences.",
           "How do vaccines work?", "Translate 'good morning' into French.", "Name a prime number above 50."]


def peak_flops(n: int = 2048, reps: int = 5) -> float:
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def prepare(args, work: Path) -> tuple[str, str]:
    """Actor dir and an RM dir (RewardModel on the actor backbone, random head) + prompts."""
    import torch
    from core.models import build_tiny_model, resolve
    from trainers.models import RewardModel
    actor = str(build_tiny_model(work / "tiny")) if args.tiny else resolve(args.model).path
    rm_dir = work / "rm"
    if not (rm_dir / "reward_config.json").exists():
        torch.manual_seed(0)
        rm, tok, _ = RewardModel.from_backbone(actor)
        rm.save_pretrained(rm_dir)
        tok.save_pretrained(rm_dir)
    n = args.batch_size * (args.steps + 1)
    with open(work / "prompts.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": str(i), "prompt": PROMPTS[i % len(PROMPTS)]}) + "\n")
    return actor, str(rm_dir)


# --------------------------------------------------------------------------- workers

def run_ours(args, work: Path, actor: str, rm_dir: str) -> dict:
    import shutil
    from trainers.configs import PPOConfig
    from trainers.ppo import train
    out = work / "ours_out"
    shutil.rmtree(out, ignore_errors=True)
    rows = train(PPOConfig(model=actor, reward_model=rm_dir, out=str(out), prompts=str(work / "prompts.jsonl"),
                           steps=args.steps + 1, batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
                           ppo_epochs=args.ppo_epochs, max_new_tokens=args.response_length,
                           max_prompt_len=512, missing_eos_reward=None, seed=1, train_layers=args.train_layers,
                           share_trunk=not args.no_share_trunk))
    rows = rows[1:]  # warm-up
    return {"step_s": [r["time_gen"] + r["time_score"] + r["time_train"] for r in rows],
            "train_s": [r["time_train"] for r in rows], "gen_s": [r["time_gen"] for r in rows],
            "score_s": [r["time_score"] for r in rows], "response_len": [r["response_len"] for r in rows]}


def run_trl(args, work: Path, actor: str, rm_dir: str, same_allocator: bool = False) -> dict:
    import torch
    if same_allocator:
        from core.allocator import keep_freed_memory
        if not keep_freed_memory():
            sys.exit("--trl-allocator: glibc refused the setting (or HRLAIF_MALLOC_DEFAULTS=1 is set)")
    from datasets import Dataset
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                              TrainerCallback)
    from trl import PPOConfig, PPOTrainer
    from trainers.data_formats import render_prompt

    tok = AutoTokenizer.from_pretrained(actor, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    prompts = [json.loads(x)["prompt"] for x in (work / "prompts.jsonl").read_text().splitlines()]
    ds = Dataset.from_dict({"input_ids": [tok(render_prompt(tok, p), add_special_tokens=False)["input_ids"]
                                          for p in prompts]})
    policy = AutoModelForCausalLM.from_pretrained(actor, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(actor, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(actor, num_labels=1, dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(actor, num_labels=1, dtype=torch.float32)
    for m in (value, reward):
        m.config.pad_token_id = tok.pad_token_id
    if args.train_layers:  # the same trainable blocks as ours
        from trainers.freezing import train_top_layers
        train_top_layers(policy, args.train_layers)
        train_top_layers(value, args.train_layers)
    times = []

    class Timer(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter())

    cfg = PPOConfig(output_dir=str(work / "trl_out"), per_device_train_batch_size=args.batch_size,
                    gradient_accumulation_steps=1, num_mini_batches=args.batch_size // args.mini_batch_size,
                    num_ppo_epochs=args.ppo_epochs, response_length=args.response_length,
                    total_episodes=args.batch_size * (args.steps + 1), local_rollout_forward_batch_size=args.batch_size,
                    learning_rate=1e-6, report_to=[], save_strategy="no", num_sample_generations=0,
                    stop_token="eos", bf16=False, fp16=False, use_cpu=True, logging_steps=10**6,
                    seed=1, dataloader_num_workers=0, disable_tqdm=True)
    trainer = PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                         value_model=value, train_dataset=ds, callbacks=[Timer()])
    trainer.train()
    steps = [b - a for a, b in zip(times, times[1:])]  # first step = warm-up
    return {"step_s": steps}


# ---------------------------------------------------------------------------- driver

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="actor (default: embedded SmolLM2-135M)")
    ap.add_argument("--tiny", action="store_true", help="tiny random Llama instead")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--mini-batch-size", type=int, default=2)
    ap.add_argument("--ppo-epochs", type=int, default=2)
    ap.add_argument("--response-length", type=int, default=24)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per run (plus one warm-up)")
    ap.add_argument("--train-layers", type=int, default=0,
                    help="train only the top N blocks of policy and value model, in both trainers (0 = all)")
    ap.add_argument("--no-share-trunk", action="store_true", help="ours: recompute the frozen blocks per model")
    ap.add_argument("--reps", type=int, default=2, help="alternating ours/TRL repetitions")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/OpenMP threads per worker (on a shared box more threads than free cores "
                         "makes every op wait for a descheduled thread: 15-30x slower)")
    ap.add_argument("--trl-allocator", action="store_true",
                    help="add an arm: TRL with ours' glibc allocator setting (harness/allocator.py)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--worker", choices=["ours", "trl", "trl_allocator"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the workers
    import torch
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="ppo_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    actor, rm_dir = prepare(args, work)

    if args.worker:
        if args.worker == "ours":
            res = run_ours(args, work, actor, rm_dir)
        else:
            res = run_trl(args, work, actor, rm_dir, same_allocator=args.worker == "trl_allocator")
        print("RESULT " + json.dumps(res))
        return

    arms = ("ours", "trl", "trl_allocator") if args.trl_allocator else ("ours", "trl")
    results = {k: [] for k in arms}
    argv = [a for a in sys.argv[1:]] + ["--work", str(work)]
    for rep in range(args.reps):
        for impl in arms:
            p = subprocess.run([sys.executable, __file__, *argv, "--worker", impl], capture_output=True, text=True)
            line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{impl} worker failed:\n{p.stderr[-3000:]}")
            results[impl].append(json.loads(line[7:]))
            print(f"rep {rep} {impl}: step {statistics.median(results[impl][-1]['step_s']):.2f}s", flush=True)

    med = {k: statistics.median([s for r in v for s in r["step_s"]]) for k, v in results.items()}
    ours = results["ours"]
    train_s = statistics.median([s for r in ours for s in r["train_s"]])
    resp = statistics.mean([s for r in ours for s in r["response_len"]])
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trainers.data_formats import render_prompt
    from trainers.trunk import decoder_of
    m = AutoModelForCausalLM.from_pretrained(actor)
    dec = decoder_of(m)
    n_blocks = len(dec.layers)
    per_block = sum(p.numel() for p in dec.layers[0].parameters())
    head = m.get_output_embeddings().weight.numel()
    tok = AutoTokenizer.from_pretrained(actor)
    prompt_len = statistics.mean(len(tok(render_prompt(tok, p), add_special_tokens=False)["input_ids"])
                                 for p in PROMPTS)
    tokens, resp_tokens = args.batch_size * (prompt_len + resp), args.batch_size * resp
    # FLOPs our update executes: per model and token 2x the forwarded block params + 4x the
    # trained ones (backward: activation and weight grads), plus the actor's LM head on response
    # tokens (forward + backward, 6x). Frozen blocks are forwarded only without the shared trunk.
    trained = args.train_layers or n_blocks
    forwarded = trained if args.train_layers and not args.no_share_trunk else n_blocks
    flops = args.ppo_epochs * (2 * tokens * (2 * forwarded + 4 * trained) * per_block + 6 * head * resp_tokens)
    peak = peak_flops()  # same thread count as the workers
    print(json.dumps({"config": {k: v for k, v in vars(args).items() if k not in ("worker", "work")},
                      "median_step_s": med, "speedup_ours_vs_trl": med["trl"] / med["ours"],
                      **({"speedup_ours_vs_trl_same_allocator": med["trl_allocator"] / med["ours"]}
                         if args.trl_allocator else {}),
                      "ours_split_s": {k: statistics.median([s for r in ours for s in r[k]])
                                       for k in ("gen_s", "score_s", "train_s")},
                      "ours_mean_response_len": resp, "mean_prompt_len": prompt_len,
                      "update_flops": flops, "update_flops_per_s": flops / train_s,
                      "matmul_peak_flops_per_s": peak, "update_share_of_peak": flops / train_s / peak},
                     indent=2))


if __name__ == "__main__":
    main()
