"""Supervised fine-tuning through a DeepSpeed engine, loss on response tokens only.

    cfg = SFTConfig(model=None, data=None, out_dir="runs/x/sft")   # embedded model + data
    out = train_sft(cfg)          # -> HF checkpoint dir, loadable by load_causal_lm(out)

The loop is deliberately plain (nanoGPT style): tokenise everything up front, shuffle
per epoch with a seeded generator, pad each micro-batch on the right, forward, masked
cross-entropy, `engine.backward`, `engine.step`. LR is set by hand each step
(linear warmup, cosine decay to `min_lr_ratio * lr`).

Outputs in out_dir: the HF checkpoint (config, weights, tokenizer), `metrics.jsonl`
(one line per optimizer step) and `sft_config.json` (config, data stats, summary).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import UserError
from core.store import append_jsonl, write_json

log = logging.getLogger(__name__)


@dataclass
class SFTConfig:
    """Every knob of `train_sft`. Defaults suit SmolLM2-135M on a CPU box."""

    model: str | None = None
    """Base checkpoint (`--model` syntax of core.models.resolve; None = embedded SmolLM2)."""
    data: str | None = None
    """Instruction data (alpaca / sharegpt / messages; JSON or JSONL). None = trainers/data/sft_embedded.json."""
    out_dir: str = "out/sft"
    """Where the HF checkpoint, metrics.jsonl and sft_config.json go."""
    epochs: int = 1
    """Passes over the data."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0 = run all epochs)."""
    lr: float = 2e-5
    """Peak AdamW learning rate."""
    warmup_steps: int = 0
    """Linear warmup from 0 to `lr` over this many optimizer steps."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at `lr * min_lr_ratio` (1.0 = constant LR)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_len: int = 512
    """Tokens per sequence; longer ones are cut at the right (counted and reported)."""
    batch_size: int = 4
    """Sequences per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage (0-3)."""
    bf16: bool = False
    """bf16 mixed precision in DeepSpeed."""
    seed: int = 1234
    """Seeds torch/numpy/random and the shuffling order."""
    save_every: int = 0
    """Write the checkpoint every N optimizer steps (0 = only at the end); the NaN guard falls back to it."""
    limit: int = 0
    """Use only the first N examples (0 = all); for smoke runs."""

    def validate(self) -> None:
        for name in ("epochs", "max_len", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if not self.lr > 0:
            raise UserError(f"lr must be > 0 (got {self.lr})")
        if self.max_steps < 0 or self.save_every < 0 or self.limit < 0 or self.warmup_steps < 0:
            raise UserError("max-steps, save-every, limit and warmup-steps must be >= 0")
        if self.zero_stage not in (0, 1, 2, 3):
            raise UserError(f"zero-stage must be 0, 1, 2 or 3 (got {self.zero_stage})")


# ------------------------------------------------------------------ shared helpers

def seed_everything(seed: int) -> None:
    from transformers import set_seed
    set_seed(seed)


@contextlib.contextmanager
def full_params(module):
    """Under ZeRO-3 parameters are partitioned; gather them (read-only) for saving/eval."""
    params = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if not params:
        yield
        return
    import deepspeed
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def _rank() -> int:
    import torch.distributed as dist
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def save_hf_checkpoint(module, tok, out_dir: Path, save_fn=None) -> None:
    """Write an HF checkpoint into out_dir file by file via os.replace.

    We save into a hidden sibling dir first, so a crash mid-save never leaves a torn
    weights file next to the previous good one. `save_fn(module, dir)` defaults to
    `module.save_pretrained`.
    """
    out_dir = Path(out_dir)
    tmp = out_dir / ".checkpoint.partial"
    with full_params(module):
        if _rank() != 0:
            return
        shutil.rmtree(tmp, ignore_errors=True)
        (save_fn or (lambda m, d: m.save_pretrained(d, safe_serialization=True)))(module, tmp)
    tok.save_pretrained(tmp)
    for f in sorted(tmp.iterdir()):
        os.replace(f, out_dir / f.name)
    tmp.rmdir()


# ------------------------------------------------------------------ data

def tokenize_examples(examples: list[dict], tok, max_len: int) -> tuple[list[dict], dict]:
    """-> rows {input_ids, labels}, stats {n, truncated, dropped}. Rows with no response
    token left after truncation are dropped (they would give a 0/0 loss)."""
    from trainers.data_formats import encode_chat

    rows, truncated, dropped = [], 0, 0
    for ex in examples:
        ids, labels, cut = encode_chat(tok, ex["messages"], max_len)
        truncated += cut
        if all(l == -100 for l in labels[1:]):  # position 0 is never a prediction target
            dropped += 1
            continue
        rows.append({"input_ids": ids, "labels": labels})
    return rows, {"n_examples": len(examples), "n_used": len(rows), "truncated": truncated, "dropped": dropped}


def collate(rows: list[dict], pad_id: int):
    """Right-pad a micro-batch -> (input_ids, attention_mask, labels) tensors."""
    import torch

    n = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        ids[i, :k] = torch.tensor(r["input_ids"])
        labels[i, :k] = torch.tensor(r["labels"])
        mask[i, :k] = 1
    return ids, mask, labels


def response_loss(logits, labels):
    """Mean next-token cross-entropy over response positions (labels != -100)."""
    import torch.nn.functional as F

    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100)


def lr_at(step: int, cfg: SFTConfig, total: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ------------------------------------------------------------------ training

def train_sft(cfg: SFTConfig) -> Path:
    import torch
    from tqdm.auto import tqdm

    from core.models import load_causal_lm
    from trainers.data_formats import load_instruction_data
    from trainers.distributed import EngineConfig, make_engine

    cfg.validate()
    t0 = time.time()
    seed_everything(cfg.seed)
    examples = load_instruction_data(cfg.data)
    if cfg.limit:
        examples = examples[: cfg.limit]
    model, tok, identity = load_causal_lm(cfg.model)
    rows, stats = tokenize_examples(examples, tok, cfg.max_len)
    if stats["truncated"]:
        log.warning("%d of %d examples longer than max_len=%d were truncated", stats["truncated"],
                    stats["n_examples"], cfg.max_len)
    if stats["dropped"]:
        log.warning("%d examples dropped: no response token within max_len=%d", stats["dropped"], cfg.max_len)
    if not rows:
        raise UserError(f"no usable SFT examples: all {stats['n_examples']} lose their response at max-len {cfg.max_len}")

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)  # a new run, a new log

    model.config.use_cache = False
    model.train()
    engine = make_engine(model, EngineConfig(
        lr=cfg.lr, weight_decay=cfg.weight_decay, zero_stage=cfg.zero_stage, micro_batch_size=cfg.batch_size,
        grad_accum=cfg.grad_accum, grad_clip=cfg.grad_clip, bf16=cfg.bf16))
    engine.train()

    n_batches = math.ceil(len(rows) / cfg.batch_size)
    total = max(1, cfg.epochs * n_batches // cfg.grad_accum)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)

    def micro_batches():
        g = torch.Generator().manual_seed(cfg.seed)
        epoch = 0
        while True:  # epochs; the step budget decides when to stop
            order = torch.randperm(len(rows), generator=g).tolist()
            for b in range(n_batches):
                yield epoch, [rows[i] for i in order[b * cfg.batch_size:(b + 1) * cfg.batch_size]]
            epoch += 1

    summary = {"steps": 0, "first_loss": None, "last_loss": None, "last_saved_step": None}
    pad_id = tok.pad_token_id
    batches = micro_batches()
    bar = tqdm(range(total), desc="sft", unit="step", dynamic_ncols=True)
    for step in bar:
        lr = lr_at(step, cfg, total)
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        t_step = time.time()
        losses, n_tok = [], 0
        for _ in range(cfg.grad_accum):
            epoch, batch = next(batches)
            ids, mask, labels = collate(batch, pad_id)
            logits = engine(input_ids=ids, attention_mask=mask, use_cache=False).logits
            loss = response_loss(logits, labels)
            if not torch.isfinite(loss):
                # Stop before the bad gradient touches the weights; the checkpoint on disk stays good.
                where = (f"last good checkpoint (step {summary['last_saved_step']}) kept in {out}"
                         if summary["last_saved_step"] is not None else "no checkpoint was written yet")
                raise UserError(f"SFT loss became {loss.item()} at step {step + 1}; stopped, {where}; "
                                f"try a lower --lr")
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
            n_tok += int((labels[:, 1:] != -100).sum())
        step_loss = sum(losses) / len(losses)
        append_jsonl(metrics_path, {"step": step + 1, "epoch": epoch, "loss": step_loss, "lr": lr,
                                    "response_tokens": n_tok, "time": round(time.time() - t_step, 4)})
        summary["steps"] = step + 1
        summary["first_loss"] = step_loss if summary["first_loss"] is None else summary["first_loss"]
        summary["last_loss"] = step_loss
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < total:
            save_hf_checkpoint(engine.module, tok, out)
            summary["last_saved_step"] = step + 1
    bar.close()

    save_hf_checkpoint(engine.module, tok, out)
    summary["last_saved_step"] = summary["steps"]
    summary["wall_time_s"] = round(time.time() - t0, 2)
    write_json(out / "sft_config.json", {"config": asdict(cfg), "base_model": identity, "data": stats,
                                         "summary": summary})
    return out
