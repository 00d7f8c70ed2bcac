"""How far the PPO actor drifts from where it started, measured while training.

Two measures, at step 0 (before the first update) and every `drift_every` steps:

- held-out reward: greedy responses to prompts never trained on, scored by the reward model
  (`split_prompts` removes them from the training set by id and by text, drift on or off);
- benchmarks (optional): `evaluate_fn(model, tokenizer, benchmarks, limit, data_dir) ->
  {bench: {score, ci95, n}}` on a quick subset. The caller passes it in (the pipeline passes
  `evalsets.runner.evaluate_in_process`): trainers never import evaluation code, and no
  `evaluate_fn` means held-out reward only.
"""
from __future__ import annotations

from pathlib import Path

import torch

from core.store import append_jsonl
from trainers.data_formats import DATA_DIR, load_prompts
from trainers.experience import score
from trainers.generation import generate

HELDOUT_PROMPTS = DATA_DIR / "heldout_prompts.jsonl"


def split_prompts(train: list[dict], cfg) -> tuple[list[dict], list[dict]]:
    """(training prompts without any held-out one, held-out prompts to evaluate on).

    `cfg` is a PPOConfig: `heldout_prompts` names the held-out file (None = the packaged
    trainers/data/heldout_prompts.jsonl when present), `heldout_limit` how many to evaluate.
    """
    path = cfg.heldout_prompts or (str(HELDOUT_PROMPTS) if HELDOUT_PROMPTS.exists() else None)
    held_all = load_prompts(path) if path else []  # excluded from training even with drift off
    held_ids = {p["id"] for p in held_all}
    held_text = {p["prompt"] for p in held_all}
    train = [p for p in train if p["id"] not in held_ids and p["prompt"] not in held_text]
    return train, (held_all[:cfg.heldout_limit] if cfg.drift_every else [])


@torch.no_grad()
def heldout_reward_sum(model, reward_model, prompts: list[list[int]], *, batch_size: int, max_new_tokens: int,
                       eos_ids: list[int], pad_id: int) -> torch.Tensor:
    """[sum of rewards, count] over greedy responses to `prompts` (this rank's share), float64."""
    total = torch.zeros(2, dtype=torch.float64)
    for k in range(0, len(prompts), batch_size):
        gen = generate(model, prompts[k:k + batch_size], max_new_tokens=max_new_tokens, eos_ids=eos_ids,
                       pad_id=pad_id, greedy=True)
        r, _ = score(reward_model, gen, eos_ids, pad_id)
        total += torch.tensor([r.sum().item(), float(len(r))], dtype=torch.float64)
    return total


def benchmark_scores(evaluate_fn, model, tok, cfg) -> dict:
    """{bench: {score, ci95, n}} of the drift benchmarks, {} without benchmarks or evaluate_fn."""
    if evaluate_fn is None or not cfg.drift_benchmarks:
        return {}
    res = evaluate_fn(model, tok, list(cfg.drift_benchmarks), cfg.drift_limit, cfg.drift_data_dir)
    return {b: {"score": r["score"], "ci95": list(r["ci95"]), "n": r["n"]} for b, r in res.items()}


def log_drift(out: Path, step: int, row: dict, total: torch.Tensor, benchmarks: dict) -> dict:
    """Append one drift.jsonl record: step, training KL and reward, held-out reward, benchmarks."""
    rec = {"step": step + 1, "kl": row["kl"], "reward_train": row["reward_raw"],
           "reward_heldout": total[0].item() / total[1].item() if total[1] > 0 else None,
           "benchmarks": benchmarks}
    append_jsonl(Path(out) / "drift.jsonl", rec)
    return rec
