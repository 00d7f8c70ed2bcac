"""PPO step time: hrlaif's trainer vs TRL's PPOTrainer (trl==0.19.1, `pip install '.[bench]'`).

Equal settings (issue 13): SmolLM2-135M (the embedded model; `--tiny` for a 0.4M random Llama),
batch 8, one mini-batch, 1 PPO epoch, 64 response tokens, GSM8K prompts of at most 96 tokens
(chat template included; /work/shared/data/gsm8k or `--data-dir`, else the embedded set), every
block trained, 3 timed steps after one warm-up step. Four arms, each in its own subprocess,
alternated per repetition so background load hits them alike:

  trl:fp32   TRL PPOTrainer, fp32          trl:bf16   TRL PPOTrainer, bf16=True (accelerate autocast)
  ours:auto  hrlaif ppo, precision auto    ours:fp32  hrlaif ppo, precision fp32

Printed side by side: s/step (median), ours' split generate / score / train, each phase's floor
(`phase_floors`: its linear layers timed at the model's shapes on the real tokens, decoding's weights
streamed once a token at the measured bandwidth), the speed-up of
ours:auto over TRL's faster arm and of ours:fp32 over trl:fp32 (equal precision), and for each of
our phases the share of the measured matmul peak at the precision in use (a timed 1024^2 matmul
at that dtype and thread count, measured after the arms; FLOPs counted from the model's shapes
and the tokens each phase runs). Decoding is bound by streaming the weights, not by FLOPs, so
its share is low by nature.

    python bench/ppo_throughput.py                    # the issue's settings, 2 repetitions
    python bench/ppo_throughput.py --tiny --steps 1 --reps 1 --response-length 8   # a smoke run
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
ARMS = ("trl:fp32", "trl:bf16", "ours:auto", "ours:fp32")
SHARED_GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
EMBEDDED_GSM8K = ROOT / "hrlaif" / "evalsets" / "data" / "gsm8k" / "test.jsonl"


def peak_flops(dtype: str, n: int = 1024, seconds: float = 1.0) -> float:
    """FLOP/s of a timed n x n matmul at `dtype` on the current thread count."""
    import torch
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    for _ in range(3):
        a @ b
    reps, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ b
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def prepare(args, work: Path) -> tuple[str, str, list[str]]:
    """Actor dir, an RM dir (RewardModel on the actor backbone, random head), the prompt texts."""
    import torch

    from hrlaif.core.models import build_tiny_model, load_tokenizer, resolve
    from hrlaif.core.store import read_jsonl
    from hrlaif.trainers.data_formats import render_prompt
    from hrlaif.trainers.models import RewardModel
    actor = str(build_tiny_model(work / "tiny")) if args.tiny else resolve(args.model).path
    rm_dir = work / "rm"
    if not (rm_dir / "reward_config.json").exists():
        torch.manual_seed(0)
        rm, tok, _ = RewardModel.from_backbone(actor)
        rm.save_pretrained(rm_dir)
        tok.save_pretrained(rm_dir)
    src = Path(args.data_dir) / "gsm8k" / "test.jsonl" if args.data_dir else \
        SHARED_GSM8K if SHARED_GSM8K.exists() else EMBEDDED_GSM8K
    tok = load_tokenizer(actor)
    need = args.batch_size * (args.steps + 1)
    prompts = [r["question"] for r in read_jsonl(src)
               if len(tok(render_prompt(tok, r["question"]), add_special_tokens=False)["input_ids"])
               <= args.max_prompt_tokens][:need]
    if len(prompts) < need:
        sys.exit(f"{src}: only {len(prompts)} prompts of <= {args.max_prompt_tokens} tokens (need {need})")
    with open(work / "prompts.jsonl", "w") as f:
        for i, p in enumerate(prompts):
            f.write(json.dumps({"id": str(i), "prompt": p}) + "\n")
    return actor, str(rm_dir), prompts


# --------------------------------------------------------------------------- workers

def run_ours(args, work: Path, actor: str, rm_dir: str, precision: str) -> dict:
    import shutil

    from hrlaif.trainers.configs import PPOConfig
    from hrlaif.trainers.ppo import train
    out = work / f"ours_{precision}"
    shutil.rmtree(out, ignore_errors=True)
    rows = train(PPOConfig(model=actor, reward_model=rm_dir, out=str(out), prompts=str(work / "prompts.jsonl"),
                           drift_every=0,
                           steps=args.steps + 1, batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
                           ppo_epochs=args.ppo_epochs, max_new_tokens=args.response_length, max_prompt_len=512,
                           seed=1, save_every=0, precision=precision))
    placement = json.loads((out / "sessions.jsonl").read_text().splitlines()[0])["precision"]
    rows = rows[1:]  # warm-up
    return {"precision": placement, "step_s": [r["time_gen"] + r["time_score"] + r["time_train"] for r in rows],
            "gen_s": [r["time_gen"] for r in rows], "score_s": [r["time_score"] for r in rows],
            "train_s": [r["time_train"] for r in rows], "response_len": [r["response_len"] for r in rows]}


def run_trl(args, work: Path, actor: str, bf16: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import PPOConfig, PPOTrainer

    from hrlaif.trainers.data_formats import render_prompt
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
    times = []

    class Timer(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter())

    cfg = PPOConfig(output_dir=str(work / "trl_out"), per_device_train_batch_size=args.batch_size,
                    gradient_accumulation_steps=1, num_mini_batches=args.batch_size // args.mini_batch_size,
                    num_ppo_epochs=args.ppo_epochs, response_length=args.response_length,
                    total_episodes=args.batch_size * (args.steps + 1), local_rollout_forward_batch_size=args.batch_size,
                    learning_rate=1e-6, report_to=[], save_strategy="no", num_sample_generations=0,
                    stop_token="eos", bf16=bf16, fp16=False, use_cpu=True, logging_steps=10**6,
                    seed=1, dataloader_num_workers=0, disable_tqdm=True)
    trainer = PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                         value_model=value, train_dataset=ds, callbacks=[Timer()])
    t0 = time.perf_counter()
    trainer.train()
    steps = [b - a for a, b in zip([t0] + times, times)][1:]  # the first step is warm-up
    return {"precision": "bf16" if bf16 else "fp32", "step_s": steps}


# ---------------------------------------------------------------------------- FLOPs

def phase_flops(actor: str, args, prompt_len: float, resp_len: float, precision: str) -> dict:
    """FLOPs each of our phases executes per step (2 per multiply-add; backward = 2x forward).

    Score: the reward model and the reference (its LM head on response positions); the critic's
    values and (bf16) the old log-probs only without the fused first forward (one minibatch)."""
    from transformers import AutoConfig
    c = AutoConfig.from_pretrained(actor)
    h, i, L = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    kv = h // c.num_attention_heads * c.num_key_value_heads
    block = h * (2 * h + 2 * kv) + 3 * h * i           # q, o, k, v and the gated MLP
    head = h * c.vocab_size
    B, P, R = args.batch_size, prompt_len, resp_len
    T = P + R
    attn = lambda q, k: 4 * q * k * h * L  # noqa: E731 - scores and weighted sum, every block
    gen = 2 * B * (P * L * block + R * (L * block + head)) + B * (attn(P, P / 2) + attn(R, P + R / 2))
    fwd_seq = 2 * B * T * L * block + B * attn(T, T / 2)  # one full forward of the blocks
    score = 2 * fwd_seq + 2 * B * R * head                 # reward model, reference (+ its head)
    if args.mini_batch_size != args.batch_size:            # no fused first forward
        score += fwd_seq + (fwd_seq + 2 * B * R * head if precision == "bf16" else 0)
    train = args.ppo_epochs * (3 * 2 * fwd_seq + 6 * B * R * head)  # actor and critic, fwd + bwd
    return {"gen": gen, "score": score, "train": train}


def phase_floors(actor: str, args, prompt_len: float, resp_len: float, precision: str) -> dict:
    """Seconds each phase needs at least on this host, now: its linear layers at the model's own shapes
    and the tokens it runs (real tokens only), timed with random weights, plus for decoding the weights
    streamed once per new token at the measured memory bandwidth. Attention, norms, activations, the
    optimizer and Python are what a phase spends above its floor."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoConfig
    c = AutoConfig.from_pretrained(actor)
    h, i, L, V = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    kv = h // c.num_attention_heads * c.num_key_value_heads
    dt = torch.bfloat16 if precision == "bf16" else torch.float32
    shapes = [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]  # q k v o gate up down
    ws = [torch.randn(o, k, dtype=dt, requires_grad=True) for o, k in shapes]
    head = torch.randn(V, h, dtype=dt, requires_grad=True)

    def timed(fn, reps=3):
        fn()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t) / reps

    def block(n: int, backward: bool) -> float:
        x, x2 = torch.randn(n, h, dtype=dt, requires_grad=True), torch.randn(n, i, dtype=dt, requires_grad=True)

        def run():
            ys = [F.linear(x2 if w.shape[1] == i else x, w) for w in ws]
            if backward:
                torch.autograd.backward(ys, [torch.ones_like(y) for y in ys])
        with torch.enable_grad() if backward else torch.no_grad():
            return timed(run)

    def lm_head(n: int, backward: bool) -> float:
        x = torch.randn(max(n, 1), h, dtype=dt, requires_grad=True)

        def run():
            y = F.linear(x, head)
            if backward:
                y.backward(torch.ones_like(y))
        with torch.enable_grad() if backward else torch.no_grad():
            return timed(run, 2)

    B, P, R = args.batch_size, round(prompt_len), round(resp_len)
    big = torch.ones(2 ** 28)  # 1 GiB: memory bandwidth as a sum streams it
    bw = 4 * big.numel() / timed(big.sum, 5)
    del big
    weight_bytes = (L * sum(o * k for o, k in shapes) + V * h) * (2 if dt == torch.bfloat16 else 4)
    gen = L * block(B * P, False) + lm_head(B, False) + R * weight_bytes / bw
    score = 2 * L * block(B * (P + R), False) + lm_head(B * R, False)            # reward model, reference
    train = args.ppo_epochs * (2 * L * block(B * (P + R), True) + lm_head(B * R, True))  # actor, critic
    return {"gen": gen, "score": score, "train": train, "bandwidth_Bps": bw}


# ---------------------------------------------------------------------------- driver

def _med(xs):
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="actor (default: embedded SmolLM2-135M)")
    ap.add_argument("--tiny", action="store_true", help="tiny random Llama instead")
    ap.add_argument("--data-dir", default=None, help="directory with gsm8k/test.jsonl (default: the shared data)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--mini-batch-size", type=int, default=8)
    ap.add_argument("--ppo-epochs", type=int, default=1)
    ap.add_argument("--response-length", type=int, default=64)
    ap.add_argument("--max-prompt-tokens", type=int, default=96)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per run (plus one warm-up)")
    ap.add_argument("--reps", type=int, default=2, help="alternating repetitions of every arm")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch/OpenMP threads per worker (more threads than free cores makes every op wait "
                         "for a descheduled thread: measure on a quiet machine)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--work", default=None)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the workers
    import torch
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="ppo_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    actor, rm_dir, prompts = prepare(args, work)

    if args.worker:
        impl, prec = args.worker.split(":")
        res = (run_ours(args, work, actor, rm_dir, prec) if impl == "ours"
               else run_trl(args, work, actor, prec == "bf16"))
        print("RESULT " + json.dumps(res))
        return

    arms = [a for a in args.arms.split(",") if a]
    if unknown := [a for a in arms if a not in ARMS]:
        sys.exit(f"unknown arm(s) {', '.join(unknown)} (arms: {', '.join(ARMS)})")
    results = {a: [] for a in arms}
    argv, skip = [], False
    for a in sys.argv[1:]:  # the workers get the same flags, with the resolved --work
        if not skip and not a.startswith("--work"):
            argv.append(a)
        skip = a == "--work"
    argv += ["--work", str(work)]
    for rep in range(args.reps):
        for arm in arms:
            p = subprocess.run([sys.executable, __file__, *argv, "--worker", arm], capture_output=True, text=True)
            line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{arm} worker failed:\n{p.stderr[-3000:]}")
            results[arm].append(json.loads(line[7:]))
            print(f"rep {rep} {arm:<9}: {_med(results[arm][-1]['step_s']):.2f} s/step", flush=True)

    summary = {a: {"precision": r[0]["precision"], "step_s": _med([s for x in r for s in x["step_s"]]),
                   **{k: _med([s for x in r for s in x[k]]) for k in ("gen_s", "score_s", "train_s", "response_len")
                      if k in r[0]}} for a, r in results.items()}
    from hrlaif.core.models import load_tokenizer
    from hrlaif.trainers.data_formats import render_prompt
    tok = load_tokenizer(actor)
    prompt_len = statistics.mean(len(tok(render_prompt(tok, p), add_special_tokens=False)["input_ids"])
                                 for p in prompts)
    peaks = {prec: peak_flops(prec) for prec in sorted({s["precision"] for s in summary.values()})}
    for a, s in summary.items():
        if a.startswith("ours"):
            fl = phase_flops(actor, args, prompt_len, s["response_len"], s["precision"])
            s["share_of_peak"] = {k: fl[k] / s[f"{k}_s"] / peaks[s["precision"]] for k in fl}
            s["share_of_peak"]["step"] = sum(fl.values()) / s["step_s"] / peaks[s["precision"]]
            s["floor_s"] = phase_floors(actor, args, prompt_len, s["response_len"], s["precision"])
    trl = [summary[a]["step_s"] for a in ("trl:fp32", "trl:bf16") if a in summary]
    speedups = {}
    if trl and "ours:auto" in summary:
        speedups["ours:auto vs TRL's faster arm"] = min(trl) / summary["ours:auto"]["step_s"]
    if "trl:fp32" in summary and "ours:fp32" in summary:
        speedups["ours:fp32 vs trl:fp32 (equal precision)"] = (summary["trl:fp32"]["step_s"]
                                                               / summary["ours:fp32"]["step_s"])

    from hrlaif.core.hardware import describe
    print(f"\nhost: {describe()}; torch threads {args.threads}; mean prompt {prompt_len:.0f} tokens; "
          f"matmul peak " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()))
    print(f"{'arm':<10} {'prec':<5} {'s/step':>7} {'gen':>6} {'score':>6} {'train':>6}   "
          "share of peak gen/score/train/step")
    for a, s in summary.items():
        split = " ".join(f"{s[k]:6.2f}" if k in s else f"{'-':>6}" for k in ("gen_s", "score_s", "train_s"))
        share = " / ".join(f"{v:.0%}" for v in s["share_of_peak"].values()) if "share_of_peak" in s else ""
        print(f"{a:<10} {s['precision']:<5} {s['step_s']:7.2f} {split}   {share}")
    for a, s in summary.items():
        if "floor_s" in s:
            f = s["floor_s"]
            print(f"{a} floor (linear layers at the model's shapes on real tokens; decoding: weights streamed once a "
                  f"token at {f['bandwidth_Bps'] / 1e9:.1f} GB/s): gen {f['gen']:.2f} / score {f['score']:.2f} / "
                  f"train {f['train']:.2f} = {f['gen'] + f['score'] + f['train']:.2f} s; measured at "
                  + " / ".join(f"{f[k] / s[f'{k}_s']:.0%}" for k in ("gen", "score", "train")) + " of it")
    for k, v in speedups.items():
        print(f"{k}: {v:.2f}x")
    out = {"config": {k: v for k, v in vars(args).items() if k not in ("worker", "work")}, "host": describe(),
           "mean_prompt_len": prompt_len, "matmul_peak_flops_per_s": peaks, "arms": summary, "speedups": speedups}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
