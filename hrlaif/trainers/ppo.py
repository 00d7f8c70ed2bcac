"""PPO against a frozen reward model, on DeepSpeed engines (CPU or GPU, 1..N ranks): the loop.

Four models: the actor (causal LM, DeepSpeed engine), the critic (`hrlaif.trainers.models.ValueModel`,
DeepSpeed engine), the frozen reference (a copy of the initial actor) and the frozen reward
model (`hrlaif.trainers.models.RewardModel`).

One step = `make_rollout` (hrlaif/trainers/experience.py: generate, score, KL, GAE) followed by
`ppo_update` (hrlaif/trainers/loss.py's clipped policy and value losses, several epochs over
minibatches). Batches are global: with W ranks each rank takes every W-th prompt of the global
batch (DistributedSampler-style) and losses are normalised by the global token count, so W
ranks compute the same update as one rank on the whole batch.

With `train_layers`, the frozen bottom blocks that all four models share run once per rollout
(`hrlaif/trainers/trunk.py`): collected while the actor decodes, then only each model's top blocks run.
Drift (held-out reward and gold verdicts, optional benchmarks through a passed-in `evaluate_fn`)
is hrlaif/trainers/drift.py; checkpoints and resume are hrlaif/trainers/checkpointing.py. `device` and
`precision` resolve per host (hrlaif/trainers/precision.py): in bf16 the forwards run under autocast
over fp32 weights, and log-probs, KL, advantages and losses are fp32. The reward model is the
harness's own or an HF sequence classifier; one with another tokenizer reads decoded texts.

Usage: `hrlaif ppo --model ACTOR --reward-model RM --out DIR` (harness/commands/ppo.py), or `train(PPOConfig(...),
evaluate_fn=...)` from Python; `torchrun --nproc_per_node 2 -m hrlaif.harness.cli ppo ...` for two ranks.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
import uuid
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from hrlaif.core.errors import UserError
from hrlaif.core.models import eos_ids, load_model
from hrlaif.core.seeding import seed_everything
from hrlaif.core.store import append_jsonl
from hrlaif.core.tensors import position_ids
from hrlaif.core.trackers import Trackers
from hrlaif.trainers import checkpointing as ckpt
from hrlaif.trainers import drift
from hrlaif.trainers.configs import PPOConfig
from hrlaif.trainers.data_formats import ensure_chat_template, load_prompts, tokenize_prompts
from hrlaif.trainers.distributed import EngineConfig, all_reduce, barrier, gather_objects, init_distributed, make_engine
from hrlaif.trainers.experience import (
    Rollout,
    TextBridge,
    finish_rollout,
    global_batch,
    kl_penalty,
    make_rollout,
    sample_seed,
)
from hrlaif.trainers.freezing import train_top_layers
from hrlaif.trainers.loss import policy_loss, value_loss
from hrlaif.trainers.models import (
    RewardModel,
    ValueModel,
    contiguous_args,
    load_reward_model,
    logprobs_and_entropy,
    policy_logits,
    prefer_eager_attention,
    run_model,
    same_vocabulary,
)
from hrlaif.trainers.precision import cast_frozen, resolve
from hrlaif.trainers.trunk import SharedTrunk, decoder_of

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- trainer

class KLController:
    """Fixed or adaptive (Ziegler et al. 2019) KL coefficient."""

    def __init__(self, cfg: PPOConfig):
        self.value = cfg.kl_coef
        self.cfg = cfg

    def update(self, kl: float, n_samples: int) -> None:
        if not self.cfg.adaptive_kl:
            return
        err = float(np.clip(kl / self.cfg.target_kl - 1.0, -0.2, 0.2))
        self.value *= 1.0 + err * n_samples / self.cfg.kl_horizon


class PPOTrainer:
    def __init__(self, cfg: PPOConfig, reward_model: nn.Module | None = None,
                 evaluate_fn: Callable | None = None, gold_fn: Callable | None = None):
        """`reward_model`: an in-memory RM instead of loading cfg.reward_model; `evaluate_fn` and
        `gold_fn`: the drift benchmarks' evaluator and the held-out responses' gold verdicts
        (hrlaif/trainers/drift.py; None = without them)."""
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.evaluate_fn, self.gold_fn = evaluate_fn, gold_fn
        self.place = resolve(cfg)
        self.rank, self.world = init_distributed(self.place.device)
        if cfg.batch_size % self.world or cfg.mini_batch_size % self.world:
            raise UserError(f"batch_size and mini_batch_size must be multiples of the {self.world} ranks")
        ckpt.check_run_dir(self.out, cfg.resume)
        seed_everything(cfg.seed)

        actor, self.tok, actor_id = load_model(cfg.model or None, "causal_lm")
        self.start_weights = actor_id.get("weights_sha")  # what step 0's drift point runs on
        ensure_chat_template(self.tok)
        self.pad_id = self.tok.pad_token_id
        self.eos_ids = eos_ids(actor, self.tok)

        # Data: held-out prompts are removed from the training set by id and by text.
        self.prompts, self.heldout = drift.split_prompts(load_prompts(cfg.prompts), cfg)
        if not self.prompts:
            raise UserError("no training prompts left (empty prompt set, or all of them are held out)")
        self.prompt_ids, cut = tokenize_prompts(self.tok, self.prompts, cfg.max_prompt_len)
        self.heldout_ids, _ = tokenize_prompts(self.tok, self.heldout, cfg.max_prompt_len)
        if cut and self.rank == 0:
            log.warning("%d of %d prompts are longer than %d tokens and were cut from the left",
                        cut, len(self.prompts), cfg.max_prompt_len)

        # Models. The reference is a frozen copy of the initial actor (no second disk read).
        self.bridge = None
        if reward_model is None:
            reward_model, rm_tok = load_reward_model(cfg.reward_model)
            # Same vocabulary: the rollout's token ids go to the RM as they are; else it reads texts.
            if not same_vocabulary(rm_tok, self.tok):
                self.bridge = TextBridge(reward_model, rm_tok, self.tok, self.eos_ids)
        self.reward_model = reward_model.eval().requires_grad_(False)
        self.ref = copy.deepcopy(actor).eval().requires_grad_(False)
        critic = (ValueModel.from_checkpoint(actor_id["path"], actor_id["spec"]) if cfg.critic_init == "actor"
                  else ValueModel.from_reward_model(self.reward_model))
        critic.requires_grad_(True)
        if cfg.train_layers:
            train_top_layers(actor, cfg.train_layers)
            train_top_layers(critic, cfg.train_layers)
        actor.config.use_cache = False
        longest = max(len(p) for p in self.prompt_ids + self.heldout_ids) + cfg.max_new_tokens
        for m in (actor, self.ref, critic, self.reward_model):
            prefer_eager_attention(m, longest, self.place.device)
        for m in (actor, self.ref):  # logits_to_keep hands the LM head a strided slice: 1.4x slower
            head = m.get_output_embeddings()
            if head is not None:
                head.register_forward_pre_hook(contiguous_args)
        mb = cfg.mini_batch_size // self.world
        ec = EngineConfig(cfg, micro_batch_size=mb, grad_accum=1, device=self.place.device)
        self.actor = make_engine(actor, ec)
        self.critic = make_engine(critic, replace(ec, lr=cfg.critic_lr))
        dev = self.actor.device
        self.ref.to(dev)
        self.reward_model.to(dev)
        self.trunk = self._build_trunk() if cfg.share_trunk and cfg.train_layers and cfg.zero_stage < 3 else None
        for m in (self.ref, self.reward_model):  # never trained or saved: bf16 matmul weights once
            cast_frozen(m, self.place)

        self.kl = KLController(cfg)
        self.start_step = 0
        self.truncated_total = 0
        # Names the process that computed each metrics row, so a resume is visible in the log.
        self.session = uuid.uuid4().hex[:12]
        self.resumed_from: Path | None = None
        if cfg.resume:
            self._resume()

    def _build_trunk(self):
        dec = decoder_of(self.ref)
        if dec is None:
            return None
        lm = lambda m, ids, mask, h: m(input_ids=ids, inputs_embeds=h, attention_mask=mask,  # noqa: E731
                                       position_ids=position_ids(mask), use_cache=False).logits
        value = lambda m, ids, mask, h: m(input_ids=ids, attention_mask=mask, inputs_embeds=h)  # noqa: E731
        reward = lambda m, ids, mask, h: m(ids, mask, inputs_embeds=h)  # noqa: E731
        return SharedTrunk.build(self.ref, len(dec.layers) - self.cfg.train_layers,
                                 {"reference": (self.ref, lm), "actor": (self.actor.module, lm),
                                  "critic": (self.critic.module, value),
                                  **({"reward model": (self.reward_model, reward)}
                                     if isinstance(self.reward_model, RewardModel) and self.bridge is None else {})},
                                 vocab_size=min(len(self.tok), self.ref.config.vocab_size),
                                 autocast=self.place.autocast)

    # ------------------------------------------------------------------- run directory
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def _resume(self) -> None:
        state, path = ckpt.resume_run(self.out, actor=self.actor, critic=self.critic,
                                      config_hash=self.cfg.trajectory_hash())
        self.start_step = int(state["step"])
        self.kl.value = float(state["kl_coef"])
        self.truncated_total = int(state.get("truncated_total", 0))
        self.resumed_from = path
        if self.rank == 0:
            print(f"ppo: resumed_from_step {self.start_step} ({path}); session {self.session}", flush=True)
        barrier()

    def _log_session(self) -> None:
        """One sessions.jsonl row per process that trained in OUT (a resume adds one)."""
        append_jsonl(self.out / "sessions.jsonl", {
            "session": self.session, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid(),
            "world_size": self.world, "resumed_from_step": self.start_step if self.resumed_from else None,
            "checkpoint": str(self.resumed_from) if self.resumed_from else None, **self.place.record()})

    def save(self, step: int) -> None:
        state = {"data_position": (step) * self.cfg.batch_size, "kl_coef": self.kl.value,
                 "config_hash": self.cfg.trajectory_hash(), "truncated_total": self.truncated_total,
                 "seed": self.cfg.seed, "world_size": self.world}
        ckpt.save_checkpoint(self.ckpt_dir, step, actor=self.actor, critic=self.critic, tokenizer=self.tok,
                             state=state, zero_stage=self.cfg.zero_stage, keep=self.cfg.keep_checkpoints)

    # ------------------------------------------------------------------------ one step
    def rollout(self, step: int, timer) -> Rollout:
        cfg = self.cfg
        gidx = global_batch(step, cfg.batch_size, len(self.prompt_ids), cfg.seed)
        mine = list(range(self.rank, cfg.batch_size, self.world))  # DistributedSampler-style shard
        with self.place.autocast():
            return make_rollout(actor=self.actor.module, ref=self.ref, critic=self.critic.module,
                                reward_model=self.reward_model, prompts=[self.prompt_ids[gidx[j]] for j in mine],
                                seeds=[sample_seed(cfg.seed, step, j) for j in mine], cfg=cfg,
                                kl_coef=self.kl.value, eos_ids=self.eos_ids, pad_id=self.pad_id,
                                all_reduce=all_reduce, timer=timer, trunk=self.trunk, bridge=self.bridge,
                                prompt_texts=[self.prompts[gidx[j]]["prompt"] for j in mine],
                                recompute=cfg.recompute_old_logprobs or self.place.bf16, defer=self.fused)

    @property
    def fused(self) -> bool:
        """One minibatch holds this rank's whole batch: the update's first forward (with grad) also
        gives the old log-probs and values, so experience making skips those two forwards."""
        return self.cfg.mini_batch_size == self.cfg.batch_size

    def ppo_update(self, ro: Rollout, step: int) -> tuple[Rollout, dict]:
        """Clipped PPO on one rollout -> (the rollout, finished if it was deferred; per-minibatch
        means of the losses and diagnostics)."""
        cfg = self.cfg
        mb = cfg.mini_batch_size // self.world
        g = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, step, 11]).integers(0, 2**62)))
        stats = defaultdict(list)
        self.actor.train()
        self.critic.train()
        for epoch in range(cfg.ppo_epochs):
            perm = torch.randperm(len(ro), generator=g)
            for k in range(0, len(ro), mb):
                b = ro.select(perm[k:k + mb])
                mask = b.response_mask
                # Sum over this rank's tokens / (global tokens / W): the engines average gradients
                # over W ranks, which makes the update the global token-mean.
                n_tok = all_reduce(mask.sum().double()).item() / self.world
                P = b.prompt_width
                with self.place.autocast():  # forwards only: backward and step run outside
                    logits = policy_logits(self.actor, b.sequences, b.attention_mask, P, cfg.temperature,
                                           self.trunk, b.hidden, packed=cfg.padding_free).float()
                    v = run_model(self.critic, b.sequences, b.attention_mask, self.trunk, b.hidden,
                                  packed=cfg.padding_free)[:, P - 1:-1]
                # the entropy of the rollout policy (epoch 0), not of the updated one
                logp, ent = logprobs_and_entropy(logits, b.sequences[:, P:], entropy=epoch == 0)
                if ro.deferred:  # the first forward covers the batch: finish its experience
                    inv = torch.argsort(perm)
                    ro = finish_rollout(ro, logp.detach()[inv], v.detach()[inv], self.kl.value, cfg, all_reduce)
                    b = ro.select(perm)
                pg_loss, pg_stats = policy_loss(logp, b.logprobs, b.advantages, mask, cfg.cliprange, n_tok)
                vf_loss, vf_stats = value_loss(v.float(), b.values, b.returns, mask, cfg.cliprange_value, n_tok)

                finite = torch.tensor([float(torch.isfinite(pg_loss) and torch.isfinite(vf_loss))])
                if all_reduce(finite).item() < self.world:
                    last = ckpt.latest_checkpoint(self.ckpt_dir) if (self.ckpt_dir / ckpt.LATEST).exists() else None
                    raise UserError(f"non-finite PPO loss at step {step + 1} (policy {pg_loss.item()}, "
                                    f"value {vf_loss.item()}); last good checkpoint: {last or 'none'}")
                self.actor.backward(pg_loss)
                self.actor.step()
                self.critic.backward(vf_loss)
                self.critic.step()

                stats["policy_loss"].append(pg_loss.item())
                stats["value_loss"].append(vf_loss.item())
                for k2, v2 in {**pg_stats, **vf_stats}.items():
                    stats[k2].append(v2)
                if ent is not None:
                    stats["entropy"].append((ent * mask).sum().item() / n_tok)
        return ro, {k: float(np.mean(v)) for k, v in stats.items()}

    def step_metrics(self, step: int, ro: Rollout, upd: dict, times: dict) -> dict:
        mask = ro.response_mask
        k3 = (kl_penalty(ro.logprobs, ro.ref_logprobs, "k3") * mask).sum()  # logged only: >= 0 per token
        local = torch.tensor([ro.reward_raw.sum().item(), ro.reward.sum().item(), ro.kl.sum().item(),
                              mask.sum().item(), float(len(ro)), float((~ro.finished).sum().item()), k3.item(),
                              *[upd[k] for k in _UPD_KEYS]], dtype=torch.float64)
        s = all_reduce(local).tolist()
        n, u = s[4], 7
        row = {"step": step + 1, "reward_raw": s[0] / n, "reward_clipped": s[1] / n, "kl": s[2] / n,
               "kl_k1": s[2] / n, "kl_k3": s[6] / n,
               "entropy": s[u + _UPD_KEYS.index("entropy")] / self.world, "response_len": s[3] / n}
        for i, k in enumerate(_UPD_KEYS):
            if k != "entropy":
                row[k] = s[u + i] / self.world
        row["kl_coef"] = self.kl.value
        if ro.adv_std is not None:  # raw advantages' spread, averaged over ranks (whitening hides it)
            row["adv_std"] = all_reduce(torch.tensor([ro.adv_std], dtype=torch.float64)).item() / self.world
        row.update({f"time_{k}": round(times.get(k, 0.0), 4) for k in ("gen", "score", "train")})
        row["truncated"] = int(s[5])
        row["session"] = self.session
        return row

    def drift(self, step: int, row: dict) -> dict | None:
        """Held-out responses on every rank, benchmarks and gold verdicts on rank 0; rank 0 writes."""
        model = self.actor.module
        model.eval()
        t0 = time.perf_counter()
        with self.place.autocast(), torch.no_grad():
            mine = drift.heldout_rows(
                model, self.reward_model, self.tok, self.heldout[self.rank::self.world],
                self.heldout_ids[self.rank::self.world], max_new_tokens=self.cfg.max_new_tokens, eos_ids=self.eos_ids,
                pad_id=self.pad_id, bridge=self.bridge, batch_size=drift.heldout_batch(self.cfg.batch_size, self.world),
                weights_id=self.start_weights if step < 0 else None)  # step 0: the loaded checkpoint's weights
        with torch.no_grad():  # the evaluator runs at its own precision (the pipeline passes the eval stage's)
            t1 = time.perf_counter()
            benchmarks = drift.benchmark_scores(self.evaluate_fn, model, self.tok, self.cfg) if self.rank == 0 else {}
        times = {"heldout": t1 - t0, "benchmarks": time.perf_counter() - t1}
        shares = gather_objects(mine)  # rank r scored prompts r, r + W, ...: interleave back
        model.train()
        barrier()
        if self.rank != 0:
            return None
        heldout = [shares[i % self.world][i // self.world] for i in range(sum(len(x) for x in shares))]
        rec = drift.log_drift(self.out, step, row, heldout, benchmarks, self.gold_fn, times)
        self.tracker.log(rec, rec["step"], prefix="drift/")  # held-out reward and gold, KL
        self.tracker.results(rec["benchmarks"], "drift", rec["step"])  # each benchmark's score, CI, n
        return rec

    # -------------------------------------------------------------------------- loop
    def run(self) -> list[dict]:
        cfg = self.cfg
        writer = None
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            from dataclasses import asdict
            writer = self.tracker = Trackers(cfg.report_to, self.out, self.out.name, asdict(cfg), "ppo",
                                             purge_step=self.start_step + 1 if cfg.resume else None)
            self._log_session()
        from tqdm import tqdm
        rows = []
        bar = tqdm(range(self.start_step, cfg.steps), initial=self.start_step, total=cfg.steps,
                   desc="ppo", disable=self.rank != 0)
        for step in bar:
            times: dict[str, float] = defaultdict(float)

            @contextlib.contextmanager
            def timer(name):
                t0 = time.perf_counter()
                yield
                times[name] += time.perf_counter() - t0

            ro = self.rollout(step, timer)              # experience: generate + score
            if step == 0 and cfg.drift_every:
                # Drift baseline at step 0: the weights before any update, with the training
                # reward of this first rollout (which those same weights generated).
                tot = all_reduce(torch.tensor([ro.reward_raw.sum().item(), float(len(ro))], dtype=torch.float64))
                self.drift(-1, {"kl": 0.0, "kl_k3": 0.0, "reward_raw": tot[0].item() / tot[1].item()})
            with timer("train"):
                ro, upd = self.ppo_update(ro, step)     # optimisation
            row = self.step_metrics(step, ro, upd, times)
            self.kl.update(row["kl"], cfg.batch_size)
            self.truncated_total += row["truncated"]
            if self.rank == 0:
                append_jsonl(self.out / "metrics.jsonl", row)
                writer.log({k: v for k, v in row.items() if k != "step"}, row["step"], prefix="ppo/")
                bar.set_postfix(reward=f"{row['reward_raw']:.3f}", kl=f"{row['kl']:.3f}")
            rows.append(row)
            if cfg.drift_every and (step + 1) % cfg.drift_every == 0:
                self.drift(step, row)
            if cfg.save_every and (step + 1) % cfg.save_every == 0:
                self.save(step + 1)
        if self.truncated_total and self.rank == 0:
            fate = ("kept the reward model's score" if cfg.missing_eos_reward is None
                    else f"reward set to {cfg.missing_eos_reward}")
            log.warning("%d responses hit max_new_tokens=%d without EOS (truncated; %s)",
                        self.truncated_total, cfg.max_new_tokens, fate)
        ckpt.save_hf(self.actor, self.tok, self.out / "final", cfg.zero_stage, remember=True)
        barrier()
        if writer is not None:
            writer.close()
        return rows


_UPD_KEYS = ["policy_loss", "value_loss", "policy_clipfrac", "value_clipfrac", "approx_kl", "entropy"]


def train(cfg: PPOConfig, reward_model: nn.Module | None = None, evaluate_fn: Callable | None = None,
          gold_fn: Callable | None = None) -> list[dict]:
    """Run PPO; returns this process's per-step metric rows (also in OUT/metrics.jsonl).

    `evaluate_fn(model, tokenizer, benchmarks, limit, data_dir) -> {bench: {score, ci95, n, items}}`
    scores the drift benchmarks; `gold_fn(prompts, responses) -> [1 | 0 | None]` grades the held-out
    responses (hrlaif/trainers/drift.py); None = without them."""
    return PPOTrainer(cfg, reward_model=reward_model, evaluate_fn=evaluate_fn, gold_fn=gold_fn).run()
