"""PPO experience making: score, KL penalty, GAE. No optimiser in here.

One rollout batch goes through four passes, each batched over every sequence at once:

1. `generate` (hrlaif/trainers/generation.py): the actor samples responses with a KV cache from
   left-padded prompts, returning the sampled tokens' log-probs as PPO's "old" log-probs
   (`recompute_old_logprobs` runs the actor over the rollout instead).
2. `score`: the frozen reward model reads prompt + response (EOS stripped, right-padded:
   the same sequence `hrlaif.trainers.data_formats.encode_prompt_response` builds for RM training).
   A reward model with another tokenizer reads the decoded texts instead (`TextBridge`).
3. reference log-probs and critic values: one forward each over the whole batch; the
   reference computes its LM head only on response positions (`logits_to_keep`).
   With a `SharedTrunk` (hrlaif/trainers/trunk.py) the frozen bottom blocks that actor, reference,
   critic and reward model have in common run once, and steps 2-3 and every PPO epoch run
   only each model's own top blocks on the cached hidden states (`Rollout.hidden`).
4. advantages: per-token KL penalty (k1 = log pi - log ref of the sampled token: as a reward its
   policy gradient is exactly KL's; k3 would add a bias, so it is only logged) + final score,
   GAE(gamma, lambda), whitening. Everything from log-probs on is fp32, also under bf16 autocast.

The batch of a step is `global_batch` (epochs of seeded permutations) and prompt j of it samples
with the generator seeded by `sample_seed(seed, step, j)`, whatever rank it lands on.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from hrlaif.core.tensors import last_token_index, right_pad
from hrlaif.trainers.generation import Generation, generate
from hrlaif.trainers.models import RewardModel, logprobs_from_logits, policy_logits, rm_inputs, run_model

# ----------------------------------------------------------------------- batch order

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


# ---------------------------------------------------------------------------- scoring

def reward_inputs(gen: Generation, eos_ids: list[int], pad_id: int):
    """Right-padded prompt + response without the final EOS: what the RM was trained on."""
    seqs = []
    eos = set(int(e) for e in eos_ids)
    for row, m in zip(gen.sequences.tolist(), gen.attention_mask.tolist()):
        toks = [t for t, keep in zip(row, m) if keep]
        if toks and toks[-1] in eos:
            toks = toks[:-1]
        seqs.append(toks)
    return right_pad(seqs, pad_id)


class TextBridge:
    """Rollout tokens -> texts -> a reward model whose tokenizer is not the actor's.

    The response is decoded from the actor's tokens (final EOS dropped, special tokens skipped)
    and re-encoded with the prompt's text as that reward model reads pairs (`rm_inputs`)."""

    def __init__(self, reward_model, rm_tok, actor_tok, eos_ids: list[int]):
        self.rm, self.rm_tok, self.actor_tok = reward_model, rm_tok, actor_tok
        self.eos = set(int(e) for e in eos_ids)

    def __call__(self, prompts: list[str], gen: Generation):
        seqs = []
        for prompt, row, keep in zip(prompts, gen.responses.tolist(), gen.response_mask.tolist()):
            toks = [t for t, k in zip(row, keep) if k]
            if toks and toks[-1] in self.eos:
                toks = toks[:-1]
            seqs.append(rm_inputs(self.rm, self.rm_tok, prompt, self.actor_tok.decode(toks, skip_special_tokens=True)))
        return right_pad(seqs, self.rm_tok.pad_token_id)


def without_final_eos(gen: Generation, eos_ids: list[int]) -> torch.Tensor:
    """The rollout's attention mask with each row's final EOS dropped (left padding kept)."""
    mask = gen.attention_mask.clone()
    last = last_token_index(mask)
    rows = torch.arange(mask.shape[0], device=mask.device)
    is_eos = torch.isin(gen.sequences[rows, last], torch.tensor(eos_ids, device=mask.device))
    mask[rows[is_eos], last[is_eos]] = 0
    return mask


@torch.no_grad()
def score(reward_model, gen: Generation, eos_ids: list[int], pad_id: int, trunk=None, hidden=None,
          bridge: TextBridge | None = None, prompts: list[str] | None = None,
          packed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(reward, raw): the RM's clipped reward and its unclipped score, shape (B,) each.
    `bridge` (with the prompts' texts): the reward model reads re-tokenised texts. `packed`: the
    harness's RewardModel runs padding-free (`RewardModel.forward`)."""
    kw = {"packed": True} if packed and isinstance(reward_model, RewardModel) else {}
    if bridge is None and hidden is not None and trunk is not None and trunk.shares(reward_model):
        # Same tokens as reward_inputs, left-padded: the RM reads its last unmasked token, and a
        # dropped trailing EOS cannot change what causal attention gave the tokens before it.
        with trunk.top(reward_model):  # (not run_model's packing: the RM packs itself and reads one token a row)
            reward, raw = reward_model(inputs_embeds=hidden, attention_mask=without_final_eos(gen, eos_ids),
                                       return_raw=True, **kw)
        return reward.float().reshape(-1), raw.float().reshape(-1)
    device = next(reward_model.parameters()).device
    ids, mask = bridge(prompts, gen) if bridge is not None else reward_inputs(gen, eos_ids, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    try:
        reward, raw = reward_model(ids, mask, return_raw=True, **kw)
    except TypeError:  # a reward model without `return_raw` reports only its (clipped) reward
        reward = raw = reward_model(ids, mask)
    return reward.float().reshape(-1), raw.float().reshape(-1)


@torch.no_grad()
def ref_logprobs(ref_model, gen: Generation, temperature: float, trunk=None, hidden=None,
                 packed: bool = False) -> torch.Tensor:
    logits = policy_logits(ref_model, gen.sequences, gen.attention_mask, gen.prompt_width, temperature,
                           trunk, hidden, packed=packed)
    return logprobs_from_logits(logits.float(), gen.responses) * gen.response_mask


@torch.no_grad()
def critic_values(critic, gen: Generation, trunk=None, hidden=None, packed: bool = False) -> torch.Tensor:
    v = run_model(critic, gen.sequences, gen.attention_mask, trunk, hidden, packed=packed)
    # The value of the state before each response token = output at the previous position.
    return v[:, gen.prompt_width - 1:-1].float() * gen.response_mask


# ------------------------------------------------------------------- KL and advantages

def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL(actor || reference) estimate from sampled tokens.

    k1 = log p - log q (unbiased, can be negative per token);
    k3 = (q/p - 1) - log(q/p) (unbiased, always >= 0, lower variance; Schulman 2020).
    """
    log_ratio = logp - ref_logp
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}")


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, mask: torch.Tensor) -> torch.Tensor:
    """-kl_coef * KL on every response token, plus the sequence score on its last token."""
    r = -kl_coef * kl * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)
    r[torch.arange(len(scores)), last] += scores
    return r


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation; positions after EOS have zero value and reward."""
    values = values * mask
    rewards = rewards * mask
    R = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(R)):
        next_v = values[:, t + 1] if t + 1 < R else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    returns = adv + values
    return adv * mask, returns * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, all_reduce=None) -> torch.Tensor:
    """Zero-mean unit-variance over masked tokens, statistics taken over all ranks."""
    stats = torch.stack([(x * mask).sum(), (x * x * mask).sum(), mask.sum()]).double()
    if all_reduce is not None:
        stats = all_reduce(stats)
    s, ss, n = stats.tolist()
    n = max(n, 1.0)
    mean = s / n
    var = max(ss / n - mean * mean, 0.0) * n / max(n - 1, 1.0)
    return (x - mean) * torch.rsqrt(torch.tensor(var + 1e-8, dtype=x.dtype)) * mask


# ------------------------------------------------------------------------ the rollout

@dataclass
class Rollout:
    """Everything the optimisation step needs, one row per sequence (this rank's shard).

    A deferred rollout (`make_rollout(defer=True)`) has no old log-probs, values, KL or
    advantages yet: the update's first forward, which covers the whole batch, supplies the
    log-probs and values, and `finish_rollout` the rest (hrlaif/trainers/ppo.py)."""
    sequences: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor | None       # old (behaviour) log-probs of the response tokens
    ref_logprobs: torch.Tensor
    values: torch.Tensor | None
    advantages: torch.Tensor | None
    returns: torch.Tensor | None
    kl: torch.Tensor | None     # per-token k1 KL estimate (the reward's penalty)
    reward_raw: torch.Tensor    # (B,) reward-model score before any clipping
    reward: torch.Tensor        # (B,) reward used: RM-clipped, missing-EOS rule (if set), reward_clip
    finished: torch.Tensor      # (B,) bool
    prompt_width: int
    hidden: torch.Tensor | None = None  # (B, P+R, H) shared-trunk output, when there is a trunk
    adv_std: float | None = None  # spread of this shard's advantages before whitening (an early-warning signal)

    def __len__(self) -> int:
        return self.sequences.shape[0]

    @property
    def deferred(self) -> bool:
        return self.advantages is None

    def select(self, idx: torch.Tensor) -> "Rollout":
        """A minibatch, trimmed of columns that are padding in every selected row."""
        kw = {}
        am = self.attention_mask[idx]
        lead = int((am[:, :self.prompt_width].sum(0) == 0).sum())  # all-pad prompt columns
        rm = self.response_mask[idx]
        resp_len = max(1, int((rm.sum(0) > 0).sum()))
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, torch.Tensor):
                if v is None:
                    kw[f.name] = None
                continue
            v = v[idx]
            if v.dim() >= 2 and v.shape[1] == self.sequences.shape[1]:  # token-aligned (and hidden)
                v = v[:, lead:self.prompt_width + resp_len]
            elif v.dim() == 2:
                v = v[:, :resp_len]
            kw[f.name] = v
        return Rollout(**kw, prompt_width=self.prompt_width - lead)


def finish_rollout(ro: Rollout, logprobs: torch.Tensor, values: torch.Tensor, kl_coef: float, cfg,
                   all_reduce=None) -> Rollout:
    """The rest of the experience from old log-probs and values (B, R): KL penalty, GAE, whitening."""
    mask = ro.response_mask
    logprobs, values = logprobs.float() * mask, values.float() * mask
    kl = kl_penalty(logprobs, ro.ref_logprobs, "k1") * mask
    adv, returns = gae(token_rewards(ro.reward, kl, kl_coef, mask), values, mask, cfg.gamma, cfg.lam)
    n = mask.sum().clamp(min=1)
    spread = float(((adv - (adv * mask).sum() / n) ** 2 * mask).sum().div(n).sqrt())
    if cfg.whiten_advantages:
        adv = whiten(adv, mask, all_reduce)
    return replace(ro, logprobs=logprobs, values=values, advantages=adv, returns=returns, kl=kl, adv_std=spread)


def make_rollout(*, actor, ref, critic, reward_model, prompts: list[list[int]], seeds: list[int],
                 cfg, kl_coef: float, eos_ids: list[int], pad_id: int, all_reduce=None,
                 timer=None, trunk=None, bridge=None, prompt_texts=None, recompute: bool = False,
                 defer: bool = False) -> Rollout:
    """Generate + score one batch. `cfg` is a PPOConfig; `timer(name)` is a context manager;
    `trunk` an optional `SharedTrunk` whose hidden states the rollout keeps for the update;
    `bridge` + `prompt_texts`: a reward model with another tokenizer (`TextBridge`).

    Old log-probs are the sampler's, or with `recompute` a full forward's (in bf16 the decoding
    kernels round differently from the forward the update runs). `defer`: leave old log-probs,
    values and advantages to the update's first forward (one minibatch holds the whole batch)."""
    timer = timer or (lambda name: contextlib.nullcontext())
    with timer("gen"):
        was_training = actor.training
        actor.eval()
        # The actor's frozen bottom is the trunk: collect its output while decoding.
        depth = trunk.depth if trunk is not None and trunk.shares(actor) else 0
        gen = generate(actor, prompts, max_new_tokens=cfg.max_new_tokens, eos_ids=eos_ids,
                       pad_id=pad_id, temperature=cfg.temperature, top_k=cfg.top_k,
                       greedy=cfg.greedy, seeds=seeds, trunk_depth=depth)
        actor.train(was_training)
    with timer("score"):
        hidden = gen.hidden
        if trunk is not None and hidden is None:
            hidden = trunk(gen.sequences, gen.attention_mask)
        if recompute and not defer:
            with torch.no_grad():
                actor.eval()
                logits = policy_logits(actor, gen.sequences, gen.attention_mask, gen.prompt_width,
                                       cfg.temperature, trunk, hidden, packed=cfg.padding_free)
                gen.logprobs = logprobs_from_logits(logits.float(), gen.responses) * gen.response_mask
                actor.train(was_training)
        reward, raw = score(reward_model, gen, eos_ids, pad_id, trunk, hidden, bridge, prompt_texts,
                            packed=cfg.padding_free)
        if cfg.missing_eos_reward is not None:
            reward = torch.where(gen.finished, reward, torch.full_like(reward, cfg.missing_eos_reward))
        if cfg.reward_clip:
            reward = reward.clamp(-cfg.reward_clip, cfg.reward_clip)
        ref_lp = ref_logprobs(ref, gen, cfg.temperature, trunk, hidden, packed=cfg.padding_free)
        ro = Rollout(gen.sequences, gen.attention_mask, gen.response_mask, None, ref_lp, None, None, None, None,
                     raw, reward, gen.finished, gen.prompt_width, hidden)
        if defer:
            return ro
        critic_was_training = critic.training
        critic.eval()
        values = critic_values(critic, gen, trunk, hidden, packed=cfg.padding_free)
        critic.train(critic_was_training)
        return finish_rollout(ro, gen.logprobs, values, kl_coef, cfg, all_reduce)
