"""K-wise reward model (HRLAIF / InstructGPT style) on labelled partial orders.

Model: a causal-LM backbone without its LM head (`AutoModel`) and a scalar linear head.
The reward of a sequence is the head applied to the hidden state of its LAST non-pad
token (the last response token; left or right padding both work), clipped to
[-clip, clip] inside `forward` with `clamp`.  Clipping in the graph means PPO never sees
an outlier reward; the price is that a sequence whose raw score is already outside the
range gets no gradient from it (clamp's derivative is 0 there).  `clipped_share` in
rm_metrics.json tells you whether that happens often (if so, raise `clip`).

Loss (the O(K) trick): a prompt's K responses go through the backbone in ONE batched
forward; the loss is the mean over every ordered pair (i, j) of the partial order
("i preferred to j") of -log sigmoid(r_i - r_j).  The naive pair expansion forwards
both responses of every pair, i.e. 2 * n_pairs = K(K-1) sequences for a full order;
`pairwise_group_loss` implements it for bench/rm_forwards.py and the equality test.

    rm_dir = train_reward_model(RMConfig(model="runs/x/sft", labels="runs/x/labels.jsonl", out_dir="runs/x/rm"))
    rm, tok = load_reward_model(rm_dir)
    rewards = score_texts(rm, tok, prompts, responses)

Token layout (shared with PPO): `render_prompt(prompt)` tokens followed by the raw
response tokens, no EOS appended (trainers.data_formats.encode_prompt_response).
"""
from __future__ import annotations

import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import UserError
from core.store import append_jsonl, read_json, read_jsonl, write_json

log = logging.getLogger(__name__)

HEAD_FILE = "reward_head.safetensors"
RM_CONFIG_FILE = "reward_config.json"


# ------------------------------------------------------------------ model

def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of the mask (works for left and right padding)."""
    pos = torch.arange(attention_mask.size(1), device=attention_mask.device)
    return (attention_mask.long() * pos).argmax(dim=1)


class RewardModel(nn.Module):
    """Backbone (base transformer, no LM head) + Linear(hidden, 1), reward clipped to [-clip, clip]."""

    def __init__(self, backbone: nn.Module, clip: float = 10.0):
        super().__init__()
        if not clip > 0:
            raise UserError(f"clip must be > 0 (got {clip})")
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        # Small init so initial rewards sit near 0, far from the clip (std as in InstructGPT-style RMs).
        nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(hidden + 1))
        nn.init.zeros_(self.head.bias)
        self.clip = float(clip)
        # Counters for tests and the bench: how many backbone calls / sequences we ran.
        self.forward_calls = 0
        self.sequences_forwarded = 0

    @property
    def config(self):  # DeepSpeed and HF utilities look for module.config
        return self.backbone.config

    def forward(self, input_ids=None, attention_mask=None, return_raw: bool = False, inputs_embeds=None):
        """`inputs_embeds`: hidden states to start from instead of `input_ids` (trainers/trunk.py)."""
        self.forward_calls += 1
        self.sequences_forwarded += int(attention_mask.size(0))
        # Position ids from the mask so a left-padded row scores like its unpadded self.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.backbone(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                               position_ids=position_ids, use_cache=False).last_hidden_state
        last = hidden[torch.arange(hidden.size(0), device=hidden.device), last_token_index(attention_mask)]
        raw = self.head(last).squeeze(-1).float()
        reward = raw.clamp(-self.clip, self.clip)  # in the graph: d reward / d raw = 0 outside the range
        return (reward, raw) if return_raw else reward

    # -- persistence: backbone as an HF checkpoint, head + rm config beside it
    def save_pretrained(self, out_dir, **kwargs) -> None:
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(out_dir, safe_serialization=True)
        save_file({k: v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(out_dir / HEAD_FILE))
        write_json(out_dir / RM_CONFIG_FILE, {"format": 1, "clip": self.clip,
                                              "hidden_size": self.backbone.config.hidden_size,
                                              "score_position": "last non-pad token",
                                              "backbone_class": type(self.backbone).__name__})

    @classmethod
    def from_pretrained(cls, path, clip: float | None = None, dtype=torch.float32) -> "RewardModel":
        from safetensors.torch import load_file
        from transformers import AutoModel

        path = Path(path)
        if not (path / RM_CONFIG_FILE).exists() or not (path / HEAD_FILE).exists():
            raise UserError(f"{path} is not a reward-model directory (no {RM_CONFIG_FILE} / {HEAD_FILE})")
        conf = read_json(path / RM_CONFIG_FILE)
        backbone = AutoModel.from_pretrained(str(path), dtype=dtype)
        rm = cls(backbone, clip=conf["clip"] if clip is None else clip)
        rm.head.load_state_dict(load_file(str(path / HEAD_FILE)))
        rm.head.to(dtype)
        rm.eval()
        return rm

    @classmethod
    def from_backbone(cls, spec: str | None, clip: float = 10.0):
        """New RM on top of a causal-LM checkpoint (`--model` syntax). -> (rm, tokenizer, identity)."""
        from transformers import AutoModel, AutoTokenizer

        from core.models import prepare_tokenizer, resolve

        ref = resolve(spec)
        try:
            tok = AutoTokenizer.from_pretrained(ref.path)
            backbone = AutoModel.from_pretrained(ref.path, dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load model {ref.spec}: {str(e).splitlines()[0]}")
        prepare_tokenizer(tok)
        return cls(backbone, clip=clip), tok, {**ref.identity, "kind": ref.kind, "spec": ref.spec, "path": ref.path}


def load_reward_model(path) -> tuple[RewardModel, object]:
    from transformers import AutoTokenizer

    from core.models import prepare_tokenizer

    rm = RewardModel.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(str(path))
    prepare_tokenizer(tok)
    return rm, tok


# ------------------------------------------------------------------ encoding and losses

def encode_group(tok, prompt: str, responses: list[str], max_len: int):
    """K responses of one prompt -> right-padded (input_ids, attention_mask), n truncated."""
    from trainers.data_formats import encode_prompt_response

    seqs, cut = [], 0
    for r in responses:
        ids, t = encode_prompt_response(tok, prompt, r, max_len)
        seqs.append(ids)
        cut += t
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return ids, mask, cut


def pair_loss(rewards: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Mean over pairs (i preferred to j) of -log sigmoid(r_i - r_j)."""
    return -F.logsigmoid(rewards[pairs[:, 0]] - rewards[pairs[:, 1]]).mean()


def kwise_group_loss(rm, ids, mask, pairs):
    """ONE forward over the K responses, loss over all pairs. -> (loss, rewards)."""
    rewards = rm(input_ids=ids, attention_mask=mask)
    return pair_loss(rewards, pairs), rewards


def pairwise_group_loss(rm, ids, mask, pairs):
    """Naive baseline: forward both responses of every pair (2 sequences per pair)."""
    losses = []
    for i, j in pairs.tolist():
        sub_mask = mask[[i, j]]
        n = int(sub_mask.sum(1).max())  # right padding: trim to this pair's own length
        r = rm(input_ids=ids[[i, j], :n], attention_mask=sub_mask[:, :n])
        losses.append(-F.logsigmoid(r[0] - r[1]))
    return torch.stack(losses).mean()


@torch.no_grad()
def score_texts(rm: RewardModel, tok, prompts: list[str], responses: list[str], max_len: int = 1024,
                batch_size: int = 8) -> list[float]:
    """Clipped rewards for (prompt, response) pairs (PPO, evaluation)."""
    out = []
    for b in range(0, len(prompts), batch_size):
        from trainers.data_formats import encode_prompt_response
        seqs = [encode_prompt_response(tok, p, r, max_len)[0]
                for p, r in zip(prompts[b:b + batch_size], responses[b:b + batch_size])]
        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
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


def split_heldout(groups: list[dict], frac: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Split by prompt id (all rows of an id on one side), seeded."""
    ids = sorted({g["id"] for g in groups})
    random.Random(seed).shuffle(ids)
    n_held = 0 if frac <= 0 or len(ids) < 2 else min(len(ids) - 1, max(1, round(frac * len(ids))))
    held = set(ids[:n_held])
    return [g for g in groups if g["id"] not in held], [g for g in groups if g["id"] in held]


# ------------------------------------------------------------------ training

@dataclass
class RMConfig:
    """Every knob of `train_reward_model`."""

    model: str | None = None
    """Backbone checkpoint, usually the SFT model (`--model` syntax; None = embedded SmolLM2)."""
    labels: str = "labels.jsonl"
    """labels.jsonl from `hrlaif label` (FORMATS.md)."""
    samples: str | None = None
    """Optional samples.jsonl to cross-check the labels against."""
    out_dir: str = "out/rm"
    """Reward-model directory (HF backbone + head + rm_metrics.json + metrics.jsonl)."""
    clip: float = 10.0
    """Rewards are clamped to [-clip, clip] inside forward."""
    epochs: int = 1
    """Passes over the training groups."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0 = all epochs)."""
    lr: float = 1e-5
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    groups_per_step: int = 4
    """Prompt groups accumulated per optimizer step (each group is one forward of K responses)."""
    max_len: int = 512
    """Tokens per prompt+response; longer ones lose tokens on the left (counted)."""
    loss: str = "kwise"
    """`kwise` (one forward per response) or `pairwise` (naive: two forwards per pair; for comparison)."""
    heldout_frac: float = 0.2
    """Share of prompt ids held out for accuracy (split by id, seeded)."""
    train_layers: int = 0
    """Train only the top N transformer blocks + head (0 = all): a cheap RM on CPU."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage (0-3)."""
    bf16: bool = False
    """bf16 mixed precision in DeepSpeed."""
    seed: int = 1234
    """Seeds init of the head, shuffling and the held-out split."""

    def validate(self) -> None:
        if not self.clip > 0:
            raise UserError(f"clip must be > 0 (got {self.clip})")
        if self.epochs < 1 or self.groups_per_step < 1 or self.max_len < 8:
            raise UserError("epochs and groups-per-step must be >= 1, max-len >= 8")
        if not self.lr > 0:
            raise UserError(f"lr must be > 0 (got {self.lr})")
        if not 0 <= self.heldout_frac < 1:
            raise UserError(f"heldout-frac must be in [0, 1) (got {self.heldout_frac})")
        if self.loss not in ("kwise", "pairwise"):
            raise UserError(f"loss must be kwise or pairwise (got {self.loss!r})")
        if self.zero_stage not in (0, 1, 2, 3):
            raise UserError(f"zero-stage must be 0, 1, 2 or 3 (got {self.zero_stage})")


@torch.no_grad()
def evaluate(model, tok, groups: list[dict], max_len: int, clip: float) -> dict:
    """Pairwise accuracy (r_i > r_j strictly; a tie counts as wrong) per category, clipped share."""
    from core.stats import mean_ci

    per_cat, every, raws = defaultdict(list), [], []
    for g in groups:
        ids, mask, _ = encode_group(tok, g["prompt"], g["responses"], max_len)
        reward, raw = model(input_ids=ids, attention_mask=mask, return_raw=True)
        raws.extend(raw.tolist())
        for i, j in g["pairs"]:
            ok = float(reward[i] > reward[j])
            per_cat[g["category"]].append(ok)
            every.append(ok)
    return {"acc": mean_ci(every), "per_category": {c: mean_ci(v) for c, v in sorted(per_cat.items())},
            "clipped_share": (sum(abs(x) > clip for x in raws) / len(raws)) if raws else 0.0,
            "n_rewards": len(raws)}


def train_reward_model(cfg: RMConfig) -> Path:
    from tqdm.auto import tqdm

    from trainers.distributed import EngineConfig, make_engine
    from trainers.sft import full_params, save_hf_checkpoint, seed_everything

    cfg.validate()
    t0 = time.time()
    groups = load_labels(cfg.labels, cfg.samples)
    train, held = split_heldout(groups, cfg.heldout_frac, cfg.seed)
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

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)

    rm.backbone.config.use_cache = False
    if cfg.train_layers:
        from trainers.freezing import train_top_layers
        log.info("training %d parameters (top %d blocks + head)", train_top_layers(rm, cfg.train_layers),
                 cfg.train_layers)
    engine = make_engine(rm, EngineConfig(
        lr=cfg.lr, weight_decay=cfg.weight_decay, zero_stage=cfg.zero_stage, micro_batch_size=1,
        grad_accum=cfg.groups_per_step, grad_clip=cfg.grad_clip, bf16=cfg.bf16))
    module = engine.module

    engine.eval()
    with full_params(module):
        init_eval = evaluate(engine, tok, held, cfg.max_len, cfg.clip) if held else None

    total = max(1, cfg.epochs * len(trainable) // cfg.groups_per_step)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    group_loss = kwise_group_loss if cfg.loss == "kwise" else pairwise_group_loss

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
            if cfg.loss == "kwise":
                loss, rewards = kwise_group_loss(engine, g["ids"], g["mask"], g["pairs_t"])
                p = g["pairs_t"]
                correct += int((rewards[p[:, 0]] > rewards[p[:, 1]]).sum())
                n_pairs += len(p)
                rewards_seen.extend(rewards.detach().tolist())
            else:
                loss = group_loss(engine, g["ids"], g["mask"], g["pairs_t"])
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
        bar.set_postfix(loss=f"{last_loss:.4f}")
    bar.close()
    train_forward = {"groups": n_groups_seen, "backbone_calls": module.forward_calls,
                     "sequences": module.sequences_forwarded,
                     "sequences_per_group": module.sequences_forwarded / max(1, n_groups_seen)}

    engine.eval()
    with full_params(module):
        final = evaluate(engine, tok, held if held else trainable, cfg.max_len, cfg.clip)
    save_hf_checkpoint(module, tok, out, save_fn=lambda m, d: m.save_pretrained(d))

    nan = {"score": float("nan"), "n": 0, "ci95": [float("nan"), float("nan")]}
    metrics = {
        "heldout_acc": final["acc"] if held else nan,
        "per_category": final["per_category"] if held else {},
        "clipped_share": final["clipped_share"],
        "clip": cfg.clip,
        "heldout_acc_init": init_eval["acc"] if init_eval else nan,
        "definition": "held-out pairwise accuracy: share of labelled pairs (i preferred to j) of held-out "
                      "prompt ids with r_i > r_j (ties count as wrong); Wilson 95% CI; clipped_share = share "
                      "of scored responses whose raw reward lies outside [-clip, clip]"
                      + ("" if held else " (no held-out ids: clipped_share measured on training groups)"),
        "split": {"train_ids": len({g['id'] for g in train}), "heldout_ids": len({g['id'] for g in held}),
                  "train_pairs": sum(len(g["pairs"]) for g in train),
                  "heldout_pairs": sum(len(g["pairs"]) for g in held),
                  "groups_without_pairs": sum(1 for g in train if not g["pairs"]), "truncated": truncated},
        "train_forward": train_forward,
        "loss": cfg.loss, "last_train_loss": last_loss, "steps": total,
        "base_model": identity, "config": asdict(cfg), "wall_time_s": round(time.time() - t0, 2),
    }
    write_json(out / "rm_metrics.json", metrics)
    return out
