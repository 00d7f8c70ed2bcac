"""Supervised fine-tuning through a DeepSpeed engine, loss on response tokens only.

    cfg = SFTConfig(model=None, data=None, out="runs/x/sft")   # embedded model + data
    out = train_sft(cfg)          # -> HF checkpoint dir, loadable by load_causal_lm(out)

The loop is deliberately plain (nanoGPT style): tokenise everything up front, shuffle
per epoch with a seeded generator, pad each micro-batch on the right, forward (under bf16
autocast when `precision` resolves to bf16: hrlaif/trainers/precision.py), masked fp32
cross-entropy, `engine.backward`, `engine.step`. LR is set by hand each step
(linear warmup, cosine decay to `min_lr_ratio * lr`).

Outputs in out: the HF checkpoint (config, weights, tokenizer), `metrics.jsonl`
(one line per optimizer step) and `sft_config.json` (config, data stats, summary, and
`placement`: the device and precision that ran).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

from hrlaif.core.errors import UserError
from hrlaif.core.store import append_jsonl, write_json
from hrlaif.core.trackers import Trackers
from hrlaif.trainers.configs import SFTConfig

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ data

def tokenize_examples(examples: list[dict], tok, max_len: int) -> tuple[list[dict], dict]:
    """-> rows {input_ids, labels}, stats {n, truncated, dropped}. Rows with no response
    token left after truncation are dropped (they would give a 0/0 loss)."""
    from hrlaif.trainers.data_formats import encode_chat

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
    from hrlaif.core.tensors import right_pad

    ids, mask = right_pad([r["input_ids"] for r in rows], pad_id)
    labels, _ = right_pad([r["labels"] for r in rows], -100)  # -100: no loss on padding
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

    from hrlaif.core.models import load_causal_lm
    from hrlaif.core.seeding import seed_everything
    from hrlaif.trainers.checkpointing import save_hf_checkpoint
    from hrlaif.trainers.data_formats import load_instruction_data
    from hrlaif.trainers.distributed import EngineConfig, make_engine
    from hrlaif.trainers.precision import resolve

    place = resolve(cfg)
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
        raise UserError(f"no usable SFT examples: all {stats['n_examples']} lose their response at "
                        f"max-len {cfg.max_len}")

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)  # a new run, a new log
    tracker = Trackers(cfg.report_to, out, out.name, asdict(cfg), "sft")

    model.config.use_cache = False
    model.train()
    engine = make_engine(model, EngineConfig(cfg, micro_batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                                             device=place.device))
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
            ids, mask, labels = (t.to(engine.device) for t in collate(batch, pad_id))
            with place.autocast():
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
        row = {"step": step + 1, "epoch": epoch, "loss": step_loss, "lr": lr, "response_tokens": n_tok,
               "time": round(time.time() - t_step, 4)}
        append_jsonl(metrics_path, row)
        tracker.log(row, step + 1, prefix="sft/")
        summary["steps"] = step + 1
        summary["first_loss"] = step_loss if summary["first_loss"] is None else summary["first_loss"]
        summary["last_loss"] = step_loss
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < total:
            save_hf_checkpoint(engine.module, tok, out)
            summary["last_saved_step"] = step + 1
    bar.close()

    save_hf_checkpoint(engine.module, tok, out, remember=True)  # PPO's step-0 drift evaluates these weights
    summary["last_saved_step"] = summary["steps"]
    summary["wall_time_s"] = round(time.time() - t0, 2)
    write_json(out / "sft_config.json", {"config": asdict(cfg), "base_model": identity, "data": stats,
                                         "summary": summary, "placement": place.record()})
    tracker.close()
    return out
