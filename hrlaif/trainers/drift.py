"""How far the PPO actor drifts from where it started, measured while training.

Two measures, at step 0 (before the first update) and every `drift_every` steps:

- held-out reward: greedy responses to prompts never trained on, scored by the reward model
  (`split_prompts` removes them from the training set by id and by text, drift on or off), and,
  with a `gold_fn(prompts, responses) -> [1 | 0 | None]` (the evaluation judge's verdict, passed
  in by the pipeline), the gold verdict on the same responses: the gold-vs-proxy view;
- benchmarks (optional): `evaluate_fn(model, tokenizer, benchmarks, limit, data_dir) ->
  {bench: {score, ci95, n, items: [{doc_id, score}]}}` on a quick subset. The caller passes it in
  (the pipeline passes `hrlaif.evalsets.runner.evaluate_in_process`): trainers never import evaluation
  code, and no `evaluate_fn` means held-out reward only.

Files (rank 0): one `drift.jsonl` record per checkpoint (step, the training batch's KL as k1, the
reward's estimator, and k3, never negative, for a sqrt(KL) axis; rewards; benchmark summaries),
and per-item files so that a checkpoint is compared with step 0 item by item:
`drift/step_<N>/<bench>.jsonl` {doc_id, score} and `drift/step_<N>/heldout.jsonl`
{id, reward, response, gold}.
"""
from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import torch

from hrlaif.core import decode_step, decoding, fewrows, fused_layers, hardware, prefix_attention
from hrlaif.core.layout import PPODir
from hrlaif.core.store import append_jsonl, atomic_write_bytes, cache_dir, stable_hash, write_jsonl
from hrlaif.trainers import generation
from hrlaif.trainers.data_formats import DATA_DIR, load_prompts
from hrlaif.trainers.experience import score
from hrlaif.trainers.generation import Generation, generate

HELDOUT_PROMPTS = DATA_DIR / "heldout_prompts.jsonl"


def split_prompts(train: list[dict], cfg) -> tuple[list[dict], list[dict]]:
    """(training prompts without any held-out one, held-out prompts to evaluate on).

    `cfg` is a PPOConfig: `heldout_prompts` names the held-out file (None = the packaged
    hrlaif/trainers/data/heldout_prompts.jsonl when present), `heldout_limit` how many to evaluate.
    """
    path = cfg.heldout_prompts or (str(HELDOUT_PROMPTS) if HELDOUT_PROMPTS.exists() else None)
    held_all = load_prompts(path) if path else []  # excluded from training even with drift off
    held_ids = {p["id"] for p in held_all}
    held_text = {p["prompt"] for p in held_all}
    train = [p for p in train if p["id"] not in held_ids and p["prompt"] not in held_text]
    return train, (held_all[:cfg.heldout_limit] if cfg.drift_every else [])


def response_texts(gen, tok, eos_ids: list[int]) -> list[str]:
    """Each row's response as text: its tokens up to (without) EOS."""
    eos = set(int(e) for e in eos_ids)
    out = []
    for row, keep in zip(gen.responses.tolist(), gen.response_mask.tolist()):
        toks = [t for t, k in zip(row, keep) if k]
        out.append(tok.decode(toks[:-1] if toks and toks[-1] in eos else toks, skip_special_tokens=True))
    return out


HELDOUT_BATCH = 16  # held-out prompts decoded together at a drift point (at least the rollout batch)


def heldout_batch(rollout_batch: int, world: int) -> int:
    """Rows per held-out generate call on each rank. Decoding streams every weight once per token, so
    one wide batch costs about what a narrow one does: the quickstart's 8 held-out prompts decode in one
    batch instead of two of its rollout's 4."""
    return max(1, max(rollout_batch, HELDOUT_BATCH) // world)


@torch.no_grad()
def heldout_rows(model, reward_model, tok, prompts: list[dict], prompt_ids: list[list[int]], *, batch_size: int,
                 max_new_tokens: int, eos_ids: list[int], pad_id: int, bridge=None,
                 weights_id: str | None = None) -> list[dict]:
    """[{id, reward, response}] for greedy responses to `prompts` (this rank's share, in order).

    `weights_id`: the hash of the model's weights when known without hashing them (PPO's step 0: the
    checkpoint it loaded). The greedy responses are then kept in the cache under that hash and the
    decoding settings, and the next run from the same weights reads them instead of decoding again:
    the quickstart's two PPO stages start from the same SFT model, and only their reward models differ,
    so each scores the responses itself."""
    rows = []
    param = next(model.parameters())
    path = _generations_file(weights_id, f"{param.device} {param.dtype}", prompt_ids, batch_size, max_new_tokens,
                             eos_ids, pad_id)
    gens = _cached_generations(path)
    fresh = gens is None
    gens = gens or []
    for j, k in enumerate(range(0, len(prompt_ids), batch_size)):
        batch = prompts[k:k + batch_size]
        if fresh:
            gens.append(generate(model, prompt_ids[k:k + batch_size], max_new_tokens=max_new_tokens,
                                 eos_ids=eos_ids, pad_id=pad_id, greedy=True))
        gen = gens[j]
        r, _ = score(reward_model, gen, eos_ids, pad_id, bridge=bridge, prompts=[p["prompt"] for p in batch])
        rows += [{"id": p["id"], "prompt": p["prompt"], "reward": float(x), "response": text}
                 for p, x, text in zip(batch, r.tolist(), response_texts(gen, tok, eos_ids))]
    if fresh and path is not None:
        _keep_generations(path, gens)
    return rows


_GEN_FIELDS = ("sequences", "attention_mask", "prompt_width", "response_mask", "logprobs", "finished")


def _generations_file(weights_id, device, prompt_ids, batch_size, max_new_tokens, eos_ids, pad_id) -> Path | None:
    if not weights_id:
        return None
    # Everything greedy decoding's tokens depend on: weights, prompts, settings, the device and the weights'
    # dtype, the kernels' precision (autocast, the host's ISA as the harness sees it), the code.
    key = stable_hash({"weights": weights_id, "prompts": prompt_ids, "batch": batch_size, "new": max_new_tokens,
                       "eos": list(eos_ids), "pad": pad_id, "autocast_cpu": torch.is_autocast_enabled("cpu"),
                       "autocast_dtype": str(torch.get_autocast_dtype("cpu")), "device": device,
                       "cuda_autocast": torch.is_autocast_enabled("cuda"), "host": hardware.describe(),
                       "torch": torch.__version__, "hrlaif": _code_version()})
    return cache_dir() / "drift_generations" / f"{key}.pt"


def _code_version() -> str:
    """The decoding code's own hash: an edit to the sampler invalidates what it decoded before."""
    h = hashlib.blake2b(digest_size=8)
    for mod in (generation, decode_step, decoding, prefix_attention, fewrows, fused_layers):
        h.update(Path(mod.__file__).read_bytes())
    h.update(fewrows.SOURCE.read_bytes())  # the C kernels those two run
    return h.hexdigest()


def _cached_generations(path: Path | None) -> list[Generation] | None:
    if path is None or not path.exists():
        return None
    try:
        return [Generation(**{k: g[k] for k in _GEN_FIELDS}) for g in torch.load(path, weights_only=True)]
    except Exception:  # a torn or foreign file: decode again (and overwrite it)
        return None


def _keep_generations(path: Path, gens: list[Generation]) -> None:
    buf = io.BytesIO()
    torch.save([{k: getattr(g, k) for k in _GEN_FIELDS} for g in gens], buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def benchmark_scores(evaluate_fn, model, tok, cfg) -> dict:
    """{bench: {score, ci95, n, items}} of the drift benchmarks, {} without benchmarks or evaluate_fn."""
    if evaluate_fn is None or not cfg.drift_benchmarks:
        return {}
    res = evaluate_fn(model, tok, list(cfg.drift_benchmarks), cfg.drift_limit, cfg.drift_data_dir)
    return {b: {"score": r["score"], "ci95": list(r["ci95"]), "n": r["n"], "items": list(r.get("items") or [])}
            for b, r in res.items()}


def log_drift(out: Path, step: int, row: dict, heldout: list[dict], benchmarks: dict, gold_fn=None,
              times: dict | None = None) -> dict:
    """Write checkpoint `step + 1`'s per-item files and append its drift.jsonl record (rank 0).

    `row`: the step's training metrics (kl, kl_k3, reward_raw); `heldout`: every rank's
    `heldout_rows`, in prompt order; `gold_fn`: the evaluation judge's verdicts, or None."""
    out, n = Path(out), step + 1
    t0 = time.perf_counter()
    gold = gold_fn([h["prompt"] for h in heldout], [h["response"] for h in heldout]) if gold_fn and heldout \
        else [None] * len(heldout)
    if len(gold) != len(heldout):
        raise ValueError(f"gold_fn returned {len(gold)} verdicts for {len(heldout)} responses")
    items = out / "drift" / f"step_{n}"
    write_jsonl(items / "heldout.jsonl", [{"id": h["id"], "reward": h["reward"], "response": h["response"],
                                           "gold": g} for h, g in zip(heldout, gold)])
    for bench, r in benchmarks.items():
        write_jsonl(items / f"{bench}.jsonl", r["items"])
    judged = [g for g in gold if g is not None]
    rec = {"step": n, "kl": row["kl"], "kl_k3": row.get("kl_k3", row["kl"]), "reward_train": row["reward_raw"],
           "reward_heldout": sum(h["reward"] for h in heldout) / len(heldout) if heldout else None,
           "gold_heldout": sum(judged) / len(judged) if judged else None,
           "gold_invalid": sum(g is None for g in gold) if gold_fn else None,
           "benchmarks": {b: {k: v for k, v in r.items() if k != "items"} for b, r in benchmarks.items()},
           "time_s": {k: round(v, 2) for k, v in ((times or {}) | {"gold": time.perf_counter() - t0}).items()}}
    append_jsonl(PPODir(out).drift, rec)
    return rec
