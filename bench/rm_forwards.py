"""Reward-model cost per prompt group: K-wise loss (HRLAIF) vs naive pair expansion.

For K responses under a FULL partial order (all K(K-1)/2 pairs), count the sequences that
go through the backbone and time forward+backward per group:

- K-wise (ours): one batched forward of the K responses            -> K sequences
- naive:         one forward of both responses for every pair       -> K(K-1) sequences

Both give the same loss value (printed as |diff|). Backbone: SmolLM2-135M (embedded) by
default, `--tiny` for the random 0.4M-parameter test model.

    python bench/rm_forwards.py [--tiny] [--ks 2 4 8] [--reps 1] [--threads 1] [--precision bf16] [--json out.json]
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from hrlaif.trainers.data_formats import load_instruction_data  # noqa: E402
from hrlaif.trainers.loss import kwise_group_loss, pairwise_group_loss  # noqa: E402
from hrlaif.trainers.models import RewardModel  # noqa: E402
from hrlaif.trainers.reward_model import encode_group  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny random backbone instead of SmolLM2-135M")
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--reps", type=int, default=1, help="timed repetitions per K and method")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0 = torch default); 1 gives stable timings on a shared, busy CPU")
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"),
                    help="the forward's precision, as the RM trainer resolves it (bf16: autocast)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tiny:
        from hrlaif.core.models import build_tiny_model
        spec = str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))
    else:
        spec = None
    rm, tok, ident = RewardModel.from_backbone(spec)
    rm.train()
    # Real responses of varied length from the embedded SFT set, one prompt.
    data = load_instruction_data(None)
    prompt = data[0]["messages"][-2]["content"]
    pool = [ex["messages"][-1]["content"] for ex in data]

    seqs = []
    rm.backbone.register_forward_hook(lambda m, a, kw, o: seqs.append(kw["input_ids"].shape[0]), with_kwargs=True)

    def run(fn, ids, mask, pairs):
        seqs.clear()
        t = time.perf_counter()
        with place.autocast():
            out = fn(rm, ids, mask, pairs)
        loss = out[0] if isinstance(out, tuple) else out
        loss.backward()
        rm.zero_grad(set_to_none=True)
        return time.perf_counter() - t, len(seqs), sum(seqs), loss.item()

    rows = []
    from hrlaif.core.hardware import resolve_precision
    from hrlaif.trainers.precision import Placement
    place = Placement("cpu", resolve_precision(args.precision, "cpu"))
    n_params = sum(p.numel() for p in rm.parameters()) / 1e6
    print(f"precision {place.precision}; backbone: {ident.get('name')} ({n_params:.1f}M params), "
          f"torch threads {torch.get_num_threads()}, forward+backward per group, mean of {args.reps}")
    header = (f"{'K':>2} {'pairs':>5} | {'ours calls':>10} {'ours seqs':>9} {'ours s/grp':>10} | "
              f"{'naive calls':>11} {'naive seqs':>10} {'naive s/grp':>11} | {'speedup':>7} {'|loss diff|':>11}")
    print(header)
    print("-" * len(header))
    for k in args.ks:
        ids, mask, _ = encode_group(tok, prompt, pool[:k], args.max_len)
        pairs = torch.tensor(list(itertools.combinations(range(k), 2)))  # i < j: i preferred
        res = {}
        if k == args.ks[0]:
            run(kwise_group_loss, ids, mask, pairs)  # warm-up (allocator, kernels) once
        for name, fn in (("kwise", kwise_group_loss), ("naive", pairwise_group_loss)):
            times = []
            for _ in range(args.reps):
                dt, calls, n_seq, loss = run(fn, ids, mask, pairs)
                times.append(dt)
            res[name] = {"calls": calls, "sequences": n_seq, "s_per_group": sum(times) / len(times), "loss": loss}
        row = {"k": k, "pairs": len(pairs), "tokens_per_response_mean": float(mask.sum(1).float().mean()),
               **{f"{m}_{f}": v for m, r in res.items() for f, v in r.items()},
               "speedup": res["naive"]["s_per_group"] / res["kwise"]["s_per_group"],
               "loss_abs_diff": abs(res["naive"]["loss"] - res["kwise"]["loss"])}
        rows.append(row)
        print(f"{k:>2} {len(pairs):>5} | {res['kwise']['calls']:>10} {res['kwise']['sequences']:>9} "
              f"{res['kwise']['s_per_group']:>10.3f} | {res['naive']['calls']:>11} {res['naive']['sequences']:>10} "
              f"{res['naive']['s_per_group']:>11.3f} | {row['speedup']:>6.1f}x {row['loss_abs_diff']:>11.2e}")
        assert res["kwise"]["sequences"] == k and res["naive"]["sequences"] == k * (k - 1)
    if args.json:
        Path(args.json).write_text(json.dumps({"backbone": ident, "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
