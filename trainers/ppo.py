"""PPO against a frozen reward model, on DeepSpeed engines (CPU or GPU, 1..N ranks).

Four models: the actor (causal LM, DeepSpeed engine), the critic (a causal-LM backbone with
a scalar value head, DeepSpeed engine), the frozen reference (a copy of the initial actor)
and the frozen reward model (`trainers.reward_model.RewardModel`).

One step = `make_rollout` (trainers/experience.py: generate, score, KL, GAE) followed by
`ppo_update` (clipped policy and value losses, several epochs over minibatches). Batches
are global: with W ranks each rank takes every W-th prompt of the global batch
(DistributedSampler-style) and losses are normalised by the global token count, so W ranks
compute the same update as one rank on the whole batch.

With `train_layers`, the frozen bottom blocks that all four models share run once per rollout
(`trainers/trunk.py`): collected while the actor decodes, then only each model's top blocks run.

Usage: `hrlaif ppo --model ACTOR --reward-model RM --out DIR` (harness/commands/ppo.py),
or `train(PPOConfig(...))` from Python; `torchrun --nproc_per_node 2 -m harness.cli ppo ...`
for two ranks.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from core.errors import UserError
from core.store import append_jsonl, write_jsonl
from trainers import checkpointing as ckpt
from trainers.configs import PPOConfig
from trainers.distributed import EngineConfig, init_distributed, make_engine
from trainers.experience import (Rollout, entropy_from_logits, logprobs_from_logits, make_rollout,
                                 generate, policy_logits, position_ids, run_model, score)

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"


# ------------------------------------------------------------------------------ models

class ValueModel(nn.Module):
    """Critic: transformer backbone (no LM head) + a linear value head per position."""

    def __init__(self, backbone: nn.Module, head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.v_head = head if head is not None else nn.Linear(hidden, 1)
        if head is None:
            nn.init.zeros_(self.v_head.weight)  # start at V=0: no random bias in the first advantages
            nn.init.zeros_(self.v_head.bias)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None):
        h = self.backbone(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                          position_ids=position_ids(attention_mask), use_cache=False).last_hidden_state
        return self.v_head(h).squeeze(-1)


def _find_backbone_and_head(rm: nn.Module):
    backbone = next((getattr(rm, n) for n in ("backbone", "model", "transformer") if hasattr(rm, n)), None)
    head = next((getattr(rm, n) for n in ("head", "score", "v_head", "value_head") if
                 isinstance(getattr(rm, n, None), nn.Linear)), None)
    if backbone is not None and hasattr(backbone, "get_decoder") and not hasattr(backbone, "layers"):
        backbone = backbone.get_decoder()  # a *ForCausalLM wrapper: keep the decoder only
    return backbone, head


def load_reward_model(path: str):
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"reward model directory not found: {path}")
    try:
        from trainers.reward_model import RewardModel
    except ImportError as e:
        raise UserError(f"cannot import trainers.reward_model ({e})")
    try:
        return RewardModel.from_pretrained(str(p))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot load reward model {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


def _check_same_tokenizer(tok, rm_dir: str) -> None:
    """The rollout token ids go to the RM as they are: its vocabulary must be the actor's."""
    if not (Path(rm_dir) / "tokenizer_config.json").exists():
        return
    from transformers import AutoTokenizer
    rm_tok = AutoTokenizer.from_pretrained(rm_dir)
    if rm_tok.get_vocab() != tok.get_vocab():
        raise UserError(f"the reward model in {rm_dir} uses a different tokenizer from the actor")


# ------------------------------------------------------------------------------- data

def tokenize_prompts(tok, prompts: list[dict], max_len: int) -> tuple[list[list[int]], int]:
    """Chat template + tokenisation, once per run. Returns (ids, number truncated)."""
    from trainers.data_formats import render_prompt
    out, cut = [], 0
    for p in prompts:
        ids = tok(render_prompt(tok, p["prompt"]), add_special_tokens=False)["input_ids"]
        if len(ids) > max_len:
            ids, cut = ids[-max_len:], cut + 1
        out.append(ids)
    return out, cut


def global_batch(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Prompt indices of step `step` (0-based): epochs of fresh permutations, no drop."""
    idx = []
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, off = divmod(pos, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        idx.append(int(perm[off]))
    return idx


def sample_seed(seed: int, step: int, j: int) -> int:
    """Seed of the generator of position j in step's global batch (rank-independent)."""
    return int(np.random.default_rng([seed, step, j, 7]).integers(0, 2**62))


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
    def __init__(self, cfg: PPOConfig, reward_model: nn.Module | None = None, evaluate_fn: Callable | None = None):
        """evaluate_fn(model, tokenizer, benchmarks, limit, data_dir) -> {bench: {score, ci95, n}}: the drift
        log's benchmark scores (e.g. evalsets.runner.evaluate_in_process)."""
        cfg.validate()
        self.cfg = cfg
        self.evaluate_fn = evaluate_fn
        self.out = Path(cfg.out)
        self.rank, self.world = init_distributed()
        if cfg.batch_size % self.world or cfg.mini_batch_size % self.world:
            raise UserError(f"batch_size and mini_batch_size must be multiples of the {self.world} ranks")
        self._check_out_dir()
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        import random
        random.seed(cfg.seed)

        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
        from core.models import prepare_tokenizer, resolve
        from trainers.data_formats import ensure_chat_template, load_prompts

        actor_path = resolve(cfg.model or None).path
        try:
            self.tok = AutoTokenizer.from_pretrained(actor_path)
            actor = AutoModelForCausalLM.from_pretrained(actor_path, dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load actor {cfg.model}: {str(e).splitlines()[0]}")
        prepare_tokenizer(self.tok)
        ensure_chat_template(self.tok)
        self.pad_id = self.tok.pad_token_id
        eos = {self.tok.eos_token_id}
        gen_eos = getattr(actor.generation_config, "eos_token_id", None)
        eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        self.eos_ids = sorted(e for e in eos if e is not None)

        # Data: held-out prompts are removed from the training set by id and by text.
        train = load_prompts(cfg.prompts)
        hp = cfg.heldout_prompts or (str(DATA_DIR / "heldout_prompts.jsonl")
                                           if (DATA_DIR / "heldout_prompts.jsonl").exists() else None)
        held_all = load_prompts(hp) if hp else []  # excluded from training even with drift off
        self.heldout = held_all[:cfg.heldout_limit] if cfg.drift_every else []
        held_ids = {p["id"] for p in held_all}
        held_text = {p["prompt"] for p in held_all}
        train = [p for p in train if p["id"] not in held_ids and p["prompt"] not in held_text]
        if not train:
            raise UserError("no training prompts left (empty prompt set, or all of them are held out)")
        self.prompts = train
        self.prompt_ids, cut = tokenize_prompts(self.tok, train, cfg.max_prompt_len)
        self.heldout_ids, _ = tokenize_prompts(self.tok, self.heldout, cfg.max_prompt_len)
        if cut and self.rank == 0:
            log.warning("%d of %d prompts are longer than %d tokens and were cut from the left",
                        cut, len(train), cfg.max_prompt_len)

        # Models. The reference is a frozen copy of the initial actor (no second disk read).
        self.reward_model = reward_model if reward_model is not None else load_reward_model(cfg.reward_model)
        if reward_model is None:
            _check_same_tokenizer(self.tok, cfg.reward_model)
        self.reward_model.eval().requires_grad_(False)
        self.ref = copy.deepcopy(actor).eval().requires_grad_(False)
        if cfg.critic_init == "actor":
            critic = ValueModel(AutoModel.from_pretrained(actor_path, dtype=torch.float32))
        else:
            backbone, head = _find_backbone_and_head(self.reward_model)
            if backbone is None:
                raise UserError("critic_init=reward: the reward model exposes no backbone")
            critic = ValueModel(copy.deepcopy(backbone), copy.deepcopy(head) if head is not None else None)
        critic.requires_grad_(True)
        if cfg.train_layers:
            from trainers.freezing import train_top_layers
            train_top_layers(actor, cfg.train_layers)
            train_top_layers(critic, cfg.train_layers)
        actor.config.use_cache = False
        for m in (actor, self.ref):  # logits_to_keep hands the LM head a strided slice: 1.4x slower
            head = m.get_output_embeddings()
            if head is not None:
                head.register_forward_pre_hook(_contiguous_args)
        mb = cfg.mini_batch_size // self.world
        ec = dict(zero_stage=cfg.zero_stage, micro_batch_size=mb, grad_accum=1, grad_clip=cfg.grad_clip,
                  bf16=cfg.bf16)
        self.actor = make_engine(actor, EngineConfig(lr=cfg.lr, **ec))
        self.critic = make_engine(critic, EngineConfig(lr=cfg.critic_lr, **ec))
        dev = self.actor.device
        self.ref.to(dev)
        self.reward_model.to(dev)
        self.trunk = self._build_trunk() if cfg.share_trunk and cfg.train_layers and cfg.zero_stage < 3 else None

        self.kl = KLController(cfg)
        self.start_step = 0
        self.truncated_total = 0
        # Names the process that computed each metrics row, so a resume is visible in the log.
        self.session = uuid.uuid4().hex[:12]
        self.resumed_from: Path | None = None
        if cfg.resume:
            self._resume()

    def _build_trunk(self):
        from trainers.trunk import SharedTrunk, decoder_of
        dec = decoder_of(self.ref)
        if dec is None:
            return None
        lm = lambda m, ids, mask, h: m(input_ids=ids, inputs_embeds=h, attention_mask=mask,  # noqa: E731
                                       position_ids=position_ids(mask), use_cache=False).logits
        value = lambda m, ids, mask, h: m(input_ids=ids, attention_mask=mask, inputs_embeds=h)  # noqa: E731
        reward = lambda m, ids, mask, h: m(ids, mask, inputs_embeds=h)  # noqa: E731
        return SharedTrunk.build(self.ref, len(dec.layers) - self.cfg.train_layers,
                                 {"reference": (self.ref, lm), "actor": (self.actor.module, lm),
                                  "critic": (self.critic.module, value), "reward model": (self.reward_model, reward)},
                                 vocab_size=min(len(self.tok), self.ref.config.vocab_size))

    # -------------------------------------------------------------- distributed helpers
    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return t
        import torch.distributed as dist
        t = t.clone()
        dist.all_reduce(t)
        return t

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()

    # ------------------------------------------------------------------- run directory
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def _check_out_dir(self) -> None:
        if not self.cfg.resume and ((self.out / "metrics.jsonl").exists() or (self.ckpt_dir / ckpt.LATEST).exists()):
            raise UserError(f"{self.out} already holds a PPO run: pass --resume or choose another --out")

    def _resume(self) -> None:
        path = ckpt.latest_checkpoint(self.ckpt_dir)
        if path is None:
            raise UserError(f"--resume: no checkpoint in {self.ckpt_dir}")
        state = ckpt.load_checkpoint(path, actor=self.actor, critic=self.critic)
        if state.get("config_hash") != self.cfg.trajectory_hash():
            raise UserError(f"--resume: the training settings differ from the checkpointed run in {self.out}")
        self.start_step = int(state["step"])
        self.kl.value = float(state["kl_coef"])
        self.truncated_total = int(state.get("truncated_total", 0))
        self.resumed_from = path
        if self.rank == 0:
            ckpt.clean_partial(self.ckpt_dir, latest_step=self.start_step)
            # Rows logged after the checkpoint are replayed by this run: drop them.
            for name in ("metrics.jsonl", "drift.jsonl"):
                f = self.out / name
                if f.exists():
                    write_jsonl(f, [r for r in _read_log(f) if int(r["step"]) <= self.start_step])
            print(f"ppo: resumed_from_step {self.start_step} ({path}); session {self.session}", flush=True)
        self.barrier()

    def _log_session(self) -> None:
        """One sessions.jsonl row per process that trained in OUT (a resume adds one)."""
        append_jsonl(self.out / "sessions.jsonl", {
            "session": self.session, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid(),
            "world_size": self.world, "resumed_from_step": self.start_step if self.resumed_from else None,
            "checkpoint": str(self.resumed_from) if self.resumed_from else None})

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
        return make_rollout(actor=self.actor.module, ref=self.ref, critic=self.critic.module,
                            reward_model=self.reward_model, prompts=[self.prompt_ids[gidx[j]] for j in mine],
                            seeds=[sample_seed(cfg.seed, step, j) for j in mine], cfg=cfg,
                            kl_coef=self.kl.value, eos_ids=self.eos_ids, pad_id=self.pad_id,
                            all_reduce=self.all_reduce, timer=timer, trunk=self.trunk)

    def ppo_update(self, ro: Rollout, step: int) -> dict:
        """Clipped PPO on one rollout; returns per-minibatch means of the losses and diagnostics."""
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
                n_tok = self.all_reduce(mask.sum().double()).item() / self.world
                P = b.prompt_width
                responses = b.sequences[:, P:]

                logits = policy_logits(self.actor, b.sequences, b.attention_mask, P, cfg.temperature,
                                       self.trunk, b.hidden)
                logp = logprobs_from_logits(logits, responses)
                log_ratio = (logp - b.logprobs) * mask
                ratio = torch.exp(log_ratio)
                pg1 = -b.advantages * ratio
                pg2 = -b.advantages * ratio.clamp(1 - cfg.cliprange, 1 + cfg.cliprange)
                pg_loss = (torch.maximum(pg1, pg2) * mask).sum() / n_tok

                v = run_model(self.critic, b.sequences, b.attention_mask, self.trunk, b.hidden)[:, P - 1:-1]
                v_clip = b.values + (v - b.values).clamp(-cfg.cliprange_value, cfg.cliprange_value)
                vf1, vf2 = (v - b.returns) ** 2, (v_clip - b.returns) ** 2
                vf_loss = 0.5 * (torch.maximum(vf1, vf2) * mask).sum() / n_tok

                finite = torch.tensor([float(torch.isfinite(pg_loss) and torch.isfinite(vf_loss))])
                if self.all_reduce(finite).item() < self.world:
                    last = ckpt.latest_checkpoint(self.ckpt_dir) if (self.ckpt_dir / ckpt.LATEST).exists() else None
                    raise UserError(f"non-finite PPO loss at step {step + 1} (policy {pg_loss.item()}, "
                                    f"value {vf_loss.item()}); last good checkpoint: {last or 'none'}")
                self.actor.backward(pg_loss)
                self.actor.step()
                self.critic.backward(vf_loss)
                self.critic.step()

                with torch.no_grad():
                    stats["policy_loss"].append(pg_loss.item())
                    stats["value_loss"].append(vf_loss.item())
                    stats["policy_clipfrac"].append(((pg2 > pg1).float() * mask).sum().item() / n_tok)
                    stats["value_clipfrac"].append(((vf2 > vf1).float() * mask).sum().item() / n_tok)
                    stats["approx_kl"].append(((ratio - 1 - log_ratio) * mask).sum().item() / n_tok)
                    if epoch == 0:  # entropy of the rollout policy, not of the updated one
                        ent = entropy_from_logits(logits.detach().float())
                        stats["entropy"].append((ent * mask).sum().item() / n_tok)
        return {k: float(np.mean(v)) for k, v in stats.items()}

    def step_metrics(self, step: int, ro: Rollout, upd: dict, times: dict) -> dict:
        mask = ro.response_mask
        seq_kl = ro.kl.sum(1)
        local = torch.tensor([ro.reward_raw.sum().item(), ro.reward.sum().item(), seq_kl.sum().item(),
                              mask.sum().item(), float(len(ro)), float((~ro.finished).sum().item()),
                              *[upd[k] for k in _UPD_KEYS]], dtype=torch.float64)
        s = self.all_reduce(local).tolist()
        n = s[4]
        row = {"step": step + 1, "reward_raw": s[0] / n, "reward_clipped": s[1] / n, "kl": s[2] / n,
               "entropy": s[6 + _UPD_KEYS.index("entropy")] / self.world, "response_len": s[3] / n}
        for i, k in enumerate(_UPD_KEYS):
            if k != "entropy":
                row[k] = s[6 + i] / self.world
        row["kl_coef"] = self.kl.value
        row.update({f"time_{k}": round(times.get(k, 0.0), 4) for k in ("gen", "score", "train")})
        row["truncated"] = int(s[5])
        row["session"] = self.session
        return row

    # ------------------------------------------------------------------------- drift
    @torch.no_grad()
    def drift(self, step: int, row: dict) -> dict | None:
        cfg = self.cfg
        model = self.actor.module
        model.eval()
        total = torch.zeros(2, dtype=torch.float64)
        mine = self.heldout_ids[self.rank::self.world]
        bs = max(1, self.cfg.batch_size // self.world)
        for k in range(0, len(mine), bs):
            gen = generate(model, mine[k:k + bs], max_new_tokens=self.cfg.max_new_tokens, eos_ids=self.eos_ids,
                           pad_id=self.pad_id, greedy=True)
            r, _ = score(self.reward_model, gen, self.eos_ids, self.pad_id)
            total += torch.tensor([r.sum().item(), float(len(r))], dtype=torch.float64)
        total = self.all_reduce(total)
        benchmarks = {}
        if self.rank == 0 and cfg.drift_benchmarks:
            fn = self.evaluate_fn
            if fn is None:
                from evalsets.runner import evaluate_in_process as fn
            res = fn(model, self.tok, list(cfg.drift_benchmarks), cfg.drift_limit, cfg.drift_data_dir)
            benchmarks = {b: {"score": r["score"], "ci95": list(r["ci95"]), "n": r["n"]} for b, r in res.items()}
        model.train()
        self.barrier()
        if self.rank != 0:
            return None
        rec = {"step": step + 1, "kl": row["kl"], "reward_train": row["reward_raw"],
               "reward_heldout": total[0].item() / total[1].item() if total[1] > 0 else None,
               "benchmarks": benchmarks}
        append_jsonl(self.out / "drift.jsonl", rec)
        return rec

    # -------------------------------------------------------------------------- loop
    def run(self) -> list[dict]:
        cfg = self.cfg
        writer = None
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(self.out / "tb"), purge_step=self.start_step + 1 if cfg.resume else None)
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
                tot = self.all_reduce(torch.tensor([ro.reward_raw.sum().item(), float(len(ro))], dtype=torch.float64))
                self.drift(-1, {"kl": 0.0, "reward_raw": tot[0].item() / tot[1].item()})
            with timer("train"):
                upd = self.ppo_update(ro, step)         # optimisation
            row = self.step_metrics(step, ro, upd, times)
            self.kl.update(row["kl"], cfg.batch_size)
            self.truncated_total += row["truncated"]
            if self.rank == 0:
                append_jsonl(self.out / "metrics.jsonl", row)
                for k, v in row.items():
                    if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                        writer.add_scalar(f"ppo/{k}", v, row["step"])
                writer.flush()
                bar.set_postfix(reward=f"{row['reward_raw']:.3f}", kl=f"{row['kl']:.3f}")
            rows.append(row)
            if cfg.drift_every and (step + 1) % cfg.drift_every == 0:
                self.drift(step, row)
            if cfg.save_every and (step + 1) % cfg.save_every == 0:
                self.save(step + 1)
        if self.truncated_total and self.rank == 0:
            log.warning("%d responses hit max_new_tokens=%d without EOS (truncated; reward set to %s)",
                        self.truncated_total, cfg.max_new_tokens, cfg.missing_eos_reward)
        ckpt.save_hf(self.actor, self.tok, self.out / "final", cfg.zero_stage)
        self.barrier()
        if writer is not None:
            writer.close()
        return rows


def _read_log(path: Path) -> list[dict]:
    """A JSONL log's rows; a last line cut short by a kill is dropped (it is replayed anyway)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise UserError(f"{path}:{i + 1} is not valid JSON")
    return rows


def _contiguous_args(_module, args):
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)


_UPD_KEYS = ["policy_loss", "value_loss", "policy_clipfrac", "value_clipfrac", "approx_kl", "entropy"]


def train(cfg: PPOConfig, reward_model: nn.Module | None = None, evaluate_fn: Callable | None = None) -> list[dict]:
    """Run PPO; returns this process's per-step metric rows (also in OUT/metrics.jsonl).
    `evaluate_fn` scores the drift log's benchmarks (see PPOTrainer)."""
    return PPOTrainer(cfg, reward_model=reward_model, evaluate_fn=evaluate_fn).run()
