"""Reward-model accuracy on a preference set (`hrlaif eval-rm`), RewardBench's core metric.

Any reward model `hrlaif.trainers.models.load_reward_model` loads (the harness's own, or an HF
sequence classifier) scores both responses of every pair, each encoded the way that model reads
(prompt, response) (`rm_inputs`); a pair is right when the chosen response scores strictly
higher (a tie is wrong). The 95% CI is a bootstrap over prompts: the pairs of one prompt share
its responses and are resampled together (hrlaif.core.stats.cluster_bootstrap_mean).

Pair files (JSONL), told apart by their fields:
- hh-rlhf: `{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}`: the shared
  dialogue is the prompt, the final assistant turns are the responses;
- `{"prompt", "chosen", "rejected"}` rows (RewardBench style; optional `id`, `category`);
- labels.jsonl-format groups `{"id", "prompt", "responses", "pairs": [[i, j], ...]}`, e.g. a
  run's shared held-out pairs (RUN/heldout/pairs.jsonl: independent truth, never trained on by
  either reward model), so two reward models are scored on one set; or one reward model's own
  held-out groups (RUN/rm_<mode>/model/heldout_pairs.jsonl).
"""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import torch

from hrlaif.core.errors import UserError
from hrlaif.core.store import read_jsonl
from hrlaif.core.tensors import right_pad
from hrlaif.trainers.configs import RMEvalConfig
from hrlaif.trainers.models import load_reward_model, rm_inputs
from hrlaif.trainers.precision import resolve


def load_pairs(path, limit: int = 0) -> list[dict]:
    """A pair file in any of the three layouts -> [{id, category, prompt, chosen, rejected}]."""
    rows = read_jsonl(path)
    if not rows:
        raise UserError(f"{path} has no rows")
    first = rows[0]
    if "responses" in first and "pairs" in first:
        from hrlaif.trainers.reward_model import load_labels
        out = [{"id": g["id"], "category": g["category"], "prompt": g["prompt"], "chosen": g["responses"][i],
                "rejected": g["responses"][j]} for g in load_labels(path) for i, j in g["pairs"]]
    elif {"chosen", "rejected"} <= set(first) and "prompt" in first:
        out = []
        for n, r in enumerate(rows, 1):
            if not all(isinstance(r.get(k), str) for k in ("prompt", "chosen", "rejected")):
                raise UserError(f"{Path(path).name}:{n}: `prompt`, `chosen` and `rejected` must be strings")
            out.append({"id": str(r.get("id", n)), "category": str(r.get("category") or r.get("subset") or "all"),
                        "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]})
    elif {"chosen", "rejected"} <= set(first):
        from hrlaif.trainers.feedback.redteam import load_hh_pairs
        out = [{**p, "category": "hh-rlhf"} for p in load_hh_pairs(path)]
    else:
        raise UserError(f"{path}: rows have neither chosen/rejected nor responses/pairs fields "
                        f"(first row has {', '.join(sorted(first)) or 'no fields'})")
    if not out:
        raise UserError(f"{path} has no usable preference pair")
    return out[:limit] if limit else out


@torch.no_grad()
def score_texts(rm, tok, prompts: list[str], responses: list[str], *, max_len: int, batch_size: int,
                autocast, device) -> list[float]:
    """Scores of (prompt, response) pairs: clipped for a harness reward model, the logit otherwise."""
    seqs = [rm_inputs(rm, tok, p, r, max_len) for p, r in zip(prompts, responses)]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # like lengths share a batch: less padding
    out = [0.0] * len(seqs)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        ids, mask = right_pad([seqs[i] for i in idx], tok.pad_token_id)
        with autocast():
            scores = rm(input_ids=ids.to(device), attention_mask=mask.to(device))
        for i, s in zip(idx, scores.float().tolist()):
            out[i] = s
    return out


def evaluate_rm(cfg: RMEvalConfig) -> dict:
    """Accuracy of `cfg.reward_model` on `cfg.pairs` -> the result (also written to cfg.out)."""
    from hrlaif.core.stats import cluster_bootstrap_mean
    from hrlaif.core.store import file_hash, write_json

    if not cfg.reward_model:
        raise UserError("no reward model given (--reward-model)")
    place = resolve(cfg)
    pairs = load_pairs(cfg.pairs, cfg.limit)
    t0 = time.time()
    rm, tok = load_reward_model(cfg.reward_model)
    if tok is None:
        raise UserError(f"{cfg.reward_model} has no tokenizer: cannot encode texts for it")
    rm.to(place.device)
    kw = dict(max_len=cfg.max_len, batch_size=cfg.batch_size, autocast=place.autocast, device=place.device)
    prompts = [p["prompt"] for p in pairs]
    chosen = score_texts(rm, tok, prompts, [p["chosen"] for p in pairs], **kw)
    rejected = score_texts(rm, tok, prompts, [p["rejected"] for p in pairs], **kw)
    right = [float(c > r) for c, r in zip(chosen, rejected)]
    by_cat = defaultdict(list)
    for p, ok in zip(pairs, right):
        by_cat[p["category"]].append((ok, p["id"]))
    result = {"reward_model": str(cfg.reward_model), "kind": type(rm).__name__, "pairs": str(cfg.pairs),
              "pairs_sha256_12": file_hash(cfg.pairs, 12),
              "accuracy": cluster_bootstrap_mean(right, [p["id"] for p in pairs]),
              "per_category": {c: cluster_bootstrap_mean([o for o, _ in v], [i for _, i in v])
                               for c, v in sorted(by_cat.items())},
              "ties": sum(c == r for c, r in zip(chosen, rejected)),
              "margin_mean": sum(c - r for c, r in zip(chosen, rejected)) / len(pairs),
              "definition": "share of pairs whose chosen response scores strictly higher than the rejected one "
                            "(ties count as wrong); 95% CI: bootstrap over prompts",
              "placement": place.record(), "wall_time_s": round(time.time() - t0, 2)}
    if cfg.out:
        write_json(cfg.out, result)
    return result
