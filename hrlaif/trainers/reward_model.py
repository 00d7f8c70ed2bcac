"""K-wise reward-model training (HRLAIF / InstructGPT style) on labelled partial orders.

The model (`RewardModel`: backbone + scalar head at the last real token, clipped) is in
hrlaif/trainers/models.py, its losses (`kwise_group_loss`, the O(K) one-forward-per-group loss, and
the naive `pairwise_group_loss`) in hrlaif/trainers/loss.py. Here: encoding a prompt's K responses,
reading and checking labels.jsonl, the held-out split, accuracy, and the training loop.

    rm_dir = train_reward_model(RMConfig(model="runs/x/sft", labels="runs/x/labels.jsonl", out="runs/x/rm"))
    rm, tok = load_reward_model(rm_dir)                  # hrlaif.trainers.models
    rewards = score_texts(rm, tok, prompts, responses)

Token layout (shared with PPO): `render_prompt(prompt)` tokens followed by the raw
response tokens, no EOS appended (hrlaif.trainers.data_formats.encode_prompt_response).
"""
from __future__ import annotations

import contextlib
import logging
import random
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import torch

from hrlaif.core.errors import UserError
from hrlaif.core.layout import METRICS, RM_METRICS
from hrlaif.core.seeding import seed_everything
from hrlaif.core.store import append_jsonl, file_hash, read_jsonl, write_json, write_jsonl
from hrlaif.core.tensors import right_pad
from hrlaif.core.trackers import Trackers
from hrlaif.trainers.configs import RMConfig
from hrlaif.trainers.data_formats import encode_prompt_response
from hrlaif.trainers.loss import kwise_group_loss, pairwise_group_loss
from hrlaif.trainers.models import RewardModel

log = logging.getLogger(__name__)
HELDOUT_PAIRS = "heldout_pairs.jsonl"  # the held-out groups, labels.jsonl format: `hrlaif eval-rm` reads it


# ------------------------------------------------------------------ encoding

def encode_group(tok, prompt: str, responses: list[str], max_len: int):
    """K responses of one prompt -> right-padded (input_ids, attention_mask), n truncated."""
    seqs, cut = [], 0
    for r in responses:
        ids, t = encode_prompt_response(tok, prompt, r, max_len)
        seqs.append(ids)
        cut += t
    ids, mask = right_pad(seqs, tok.pad_token_id)
    return ids, mask, cut


@torch.no_grad()
def score_texts(rm: RewardModel, tok, prompts: list[str], responses: list[str], max_len: int = 1024,
                batch_size: int = 8) -> list[float]:
    """Clipped rewards for (prompt, response) pairs (PPO, evaluation)."""
    out = []
    for b in range(0, len(prompts), batch_size):
        seqs = [encode_prompt_response(tok, p, r, max_len)[0]
                for p, r in zip(prompts[b:b + batch_size], responses[b:b + batch_size])]
        ids, mask = right_pad(seqs, tok.pad_token_id)
        out.extend(rm(input_ids=ids, attention_mask=mask).tolist())
    return out


# ------------------------------------------------------------------ labels

def has_cycle(n: int, pairs: list[tuple[int, int]]) -> bool:
    succ = defaultdict(list)
    for i, j in pairs:
        succ[i].append(j)
    state = [0] * n  # 0 new, 1 on stack, 2 done
    for s in range(n):
        if state[s]:
            continue
        stack = [(s, iter(succ[s]))]
        state[s] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state[nxt] == 1:
                return True
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
    return False


def load_labels(path, samples_path=None) -> list[dict]:
    """labels.jsonl -> validated groups {id, prompt, category, responses, pairs}.

    With `samples_path`, every label row must match its sample: same id, same prompt and
    the same policy responses (rows extended by red-team rewrites are matched on the
    responses whose `sources` entry is "policy").
    """
    path = Path(path)
    rows = read_jsonl(path)
    if not rows:
        raise UserError(f"{path} has no labelled groups")
    samples = None
    if samples_path:
        samples = {str(r.get("id")): r for r in read_jsonl(samples_path)}
        if not samples:
            raise UserError(f"{samples_path} has no samples")
    groups = []
    for n, r in enumerate(rows, 1):
        where = f"{path.name}:{n}"
        for key in ("id", "prompt", "responses", "pairs"):
            if key not in r:
                raise UserError(f"{where} has no `{key}` field (is this a labels.jsonl?)")
        responses = r["responses"]
        if not isinstance(responses, list) or len(responses) < 2 or not all(isinstance(x, str) for x in responses):
            raise UserError(f"{where}: `responses` must be a list of >= 2 strings")
        k = len(responses)
        pairs = r["pairs"]
        if not isinstance(pairs, list):
            raise UserError(f"{where}: `pairs` must be a list of [i, j]")
        clean = []
        for p in pairs:
            if (not isinstance(p, (list, tuple)) or len(p) != 2
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in p)):
                raise UserError(f"{where}: pair {p!r} is not [i, j] with integer indices")
            i, j = p
            if not (0 <= i < k and 0 <= j < k):
                raise UserError(f"{where}: pair [{i}, {j}] is out of range for {k} responses")
            if i == j:
                raise UserError(f"{where}: pair [{i}, {j}] compares a response with itself")
            clean.append((i, j))
        clean = list(dict.fromkeys(clean))  # duplicates would double-weight a pair
        if has_cycle(k, clean):
            raise UserError(f"{where}: `pairs` contain a cycle; a partial order cannot")
        if samples is not None:
            sid = str(r["id"])
            s = samples.get(sid)
            if s is None:
                raise UserError(f"{where}: id {sid!r} is not in the samples file {samples_path}")
            sources = r.get("sources")
            policy = ([x for x, src in zip(responses, sources) if src == "policy"]
                      if isinstance(sources, list) and len(sources) == k else responses)
            if s.get("prompt") != r["prompt"] or list(s.get("responses", [])) != policy:
                raise UserError(f"{where}: id {sid!r} does not match the samples file "
                                f"(prompt or responses differ); labels and samples are from different runs")
        groups.append({"id": str(r["id"]), "prompt": r["prompt"], "category": r.get("category") or "general",
                       "responses": responses, "pairs": clean})
    return groups


def split_heldout(groups: list[dict], frac: float, seed: int, universe=None, keep_out=()) -> tuple[list, list]:
    """Split by prompt id (all rows of an id on one side), seeded.

    `universe`: the ids to draw from (the samples file's, which both variants label: their reward
    models then hold out the same prompts); `keep_out`: ids never trained on besides the draw."""
    ids = sorted({str(i) for i in universe} if universe else {g["id"] for g in groups})
    random.Random(seed).shuffle(ids)
    n_held = 0 if frac <= 0 or len(ids) < 2 else min(len(ids) - 1, max(1, round(frac * len(ids))))
    held = set(ids[:n_held]) | set(keep_out)
    return [g for g in groups if g["id"] not in held], [g for g in groups if g["id"] in held]


# ------------------------------------------------------------------ training

@torch.no_grad()
def evaluate(model, tok, groups: list[dict], max_len: int, clip: float, autocast=contextlib.nullcontext) -> dict:
    """Pairwise accuracy of the clipped scores (r_i > r_j strictly; a tie counts as wrong), overall and
    per category, with a bootstrap CI over prompts (a prompt's pairs share its responses: they are
    resampled together); clipped share = scores the clip changed."""
    per_cat, every, raws, outcomes = defaultdict(list), [], [], []
    device = next(model.parameters()).device
    for g in groups:
        gids, mask, _ = encode_group(tok, g["prompt"], g["responses"], max_len)
        with autocast():
            reward, raw = model(input_ids=gids.to(device), attention_mask=mask.to(device), return_raw=True)
        raws.extend(raw.float().tolist())
        for i, j in g["pairs"]:
            ok = float(reward[i] > reward[j])
            per_cat[g["category"]].append((ok, g["id"]))
            every.append((ok, g["id"]))
            outcomes.append([str(g["id"]), int(i), int(j), int(ok)])
    return {"acc": pair_accuracy(every), "per_category": {c: pair_accuracy(v) for c, v in sorted(per_cat.items())},
            "clipped_share": (sum(abs(x) > clip for x in raws) / len(raws)) if raws else 0.0,
            "n_rewards": len(raws), "outcomes": outcomes}


def pair_accuracy(outcomes: list[tuple[float, str]]) -> dict:
    """[(1 or 0, prompt id)] -> {score, n, n_clusters, ci95, ci_method}: the CI resamples prompts."""
    from hrlaif.core.stats import cluster_bootstrap_mean
    return cluster_bootstrap_mean([o for o, _ in outcomes], [c for _, c in outcomes])


def train_reward_model(cfg: RMConfig) -> Path:
    from tqdm.auto import tqdm

    from hrlaif.trainers.checkpointing import full_params, save_hf_checkpoint
    from hrlaif.trainers.distributed import EngineConfig, make_engine
    from hrlaif.trainers.precision import resolve

    place = resolve(cfg)
    t0 = time.time()
    groups = load_labels(cfg.labels, cfg.samples)
    shared = load_labels(cfg.heldout_pairs) if cfg.heldout_pairs else []
    universe = [r.get("id") for r in read_jsonl(cfg.samples)] if cfg.samples else None
    train, held = split_heldout(groups, cfg.heldout_frac, cfg.seed, universe, keep_out={g["id"] for g in shared})
    trainable = [g for g in train if g["pairs"]]
    if not trainable:
        raise UserError(f"{cfg.labels}: no training group has a preference pair")
    seed_everything(cfg.seed)
    rm, tok, identity = RewardModel.from_backbone(cfg.model, clip=cfg.clip)

    # Tokenise once; each group is one right-padded [K, T] batch.
    truncated = 0
    for g in trainable:
        g["ids"], g["mask"], cut = encode_group(tok, g["prompt"], g["responses"], cfg.max_len)
        g["pairs_t"] = torch.tensor(g["pairs"], dtype=torch.long)
        truncated += cut
    if truncated:
        log.warning("%d responses longer than max_len=%d lost prompt tokens on the left", truncated, cfg.max_len)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / METRICS
    metrics_path.unlink(missing_ok=True)
    tracker = Trackers(cfg.report_to, out, out.name, asdict(cfg), "reward_model")

    rm.backbone.config.use_cache = False
    if cfg.train_layers:
        from hrlaif.trainers.freezing import train_top_layers
        log.info("training %d parameters (top %d blocks + head)", train_top_layers(rm, cfg.train_layers),
                 cfg.train_layers)
    engine = make_engine(rm, EngineConfig(cfg, micro_batch_size=1, grad_accum=cfg.groups_per_step,
                                          device=place.device))
    module = engine.module

    def scored(on: list[dict]) -> dict | None:
        engine.eval()
        with full_params(module):
            return evaluate(engine, tok, on, cfg.max_len, cfg.clip, place.autocast) if on else None

    init_eval = scored(held)
    total = max(1, cfg.epochs * len(trainable) // cfg.groups_per_step)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)

    def stream():
        rng = random.Random(cfg.seed)
        while True:
            order = list(range(len(trainable)))
            rng.shuffle(order)
            yield from (trainable[i] for i in order)

    module.forward_calls = module.sequences_forwarded = 0
    n_groups_seen, last_loss = 0, None
    engine.train()
    batches = stream()
    bar = tqdm(range(total), desc="train-rm", unit="step", dynamic_ncols=True)
    for step in bar:
        t_step = time.time()
        losses, correct, n_pairs, rewards_seen = [], 0, 0, []
        for _ in range(cfg.groups_per_step):
            g = next(batches)
            ids, mask, p = (t.to(engine.device) for t in (g["ids"], g["mask"], g["pairs_t"]))
            with place.autocast():
                if cfg.loss == "kwise":
                    loss, rewards = kwise_group_loss(engine, ids, mask, p)
                else:
                    loss = pairwise_group_loss(engine, ids, mask, p)
            if cfg.loss == "kwise":
                correct += int((rewards[p[:, 0]] > rewards[p[:, 1]]).sum())
                n_pairs += len(p)
                rewards_seen.extend(rewards.detach().float().tolist())
            if not torch.isfinite(loss):
                raise UserError(f"reward-model loss became {loss.item()} at step {step + 1}; stopped "
                                f"(nothing saved); try a lower --lr")
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
            n_groups_seen += 1
        last_loss = sum(losses) / len(losses)
        row = {"step": step + 1, "loss": last_loss, "time": round(time.time() - t_step, 4)}
        if n_pairs:
            row.update(pair_acc=correct / n_pairs, reward_mean=sum(rewards_seen) / len(rewards_seen))
        append_jsonl(metrics_path, row)
        tracker.log(row, step + 1, prefix="rm/")
        bar.set_postfix(loss=f"{last_loss:.4f}")
    bar.close()
    train_forward = {"groups": n_groups_seen, "backbone_calls": module.forward_calls,
                     "sequences": module.sequences_forwarded,
                     "sequences_per_group": module.sequences_forwarded / max(1, n_groups_seen)}

    final = scored(held if held else trainable)
    shared_eval = scored([g for g in shared if g["pairs"]])  # held-out ids without independent truth: none
    save_hf_checkpoint(module, tok, out, save_fn=lambda m, d: m.save_pretrained(d))
    write_jsonl(out / HELDOUT_PAIRS, [{k: g[k] for k in ("id", "prompt", "category", "responses", "pairs")}
                                      for g in held])

    nan = {"score": float("nan"), "n": 0, "ci95": [float("nan"), float("nan")]}
    metrics = {
        "heldout_acc": final["acc"] if held else nan,
        "per_category": final["per_category"] if held else {},
        "clipped_share": final["clipped_share"],
        "clip": cfg.clip,
        "heldout_acc_init": init_eval["acc"] if init_eval else nan,
        "definition": "held-out pairwise accuracy: share of labelled pairs (i preferred to j) of held-out "
                      "prompt ids with r_i > r_j for the clipped scores (ties count as wrong); 95% CI: "
                      "bootstrap over prompts (a prompt's pairs are resampled together); clipped_share = "
                      "share of scored responses whose raw reward lies outside [-clip, clip] (training "
                      "uses the raw reward)"
                      + ("" if held else " (no held-out ids: clipped_share measured on training groups)"),
        "split": {"train_ids": len({g['id'] for g in train}), "heldout_ids": len({g['id'] for g in held}),
                  "train_pairs": sum(len(g["pairs"]) for g in train),
                  "heldout_pairs": sum(len(g["pairs"]) for g in held),
                  "heldout_ids_from": "samples" if universe else "labels",
                  "groups_without_pairs": sum(1 for g in train if not g["pairs"]), "truncated": truncated},
        "train_forward": train_forward,
        "loss": cfg.loss, "last_train_loss": last_loss, "steps": total,
        "base_model": identity, "config": asdict(cfg), "placement": place.record(),
        "wall_time_s": round(time.time() - t0, 2),
    }
    if shared_eval:
        metrics["shared_heldout_acc"] = {**shared_eval["acc"], "file": str(cfg.heldout_pairs),
                                         "sha256_12": file_hash(cfg.heldout_pairs, 12),
                                         "per_category": shared_eval["per_category"],
                                         # [id, better, worse, 1 if ordered right]: both RMs on the same pairs,
                                         # for the report's paired RM hybrid − RM basic (hrlaif/reports/table1.py)
                                         "pairs": shared_eval["outcomes"]}
    write_json(out / RM_METRICS, metrics)
    tracker.results({k: metrics[k] for k in ("heldout_acc", "shared_heldout_acc") if k in metrics}, "rm")
    tracker.close()
    return out
