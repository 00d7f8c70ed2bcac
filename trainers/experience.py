"""PPO experience making: generate, score, KL penalty, GAE. No optimiser in here.

One rollout batch goes through four passes, each batched over every sequence at once:

1. `generate`: the actor samples responses with a KV cache from left-padded prompts
   (prompt token ids are computed once per run, never per step). It also returns the
   log-probabilities of the sampled tokens, which serve as the PPO "old" log-probs, so the
   actor is not run a second time over the rollout (`recompute_old_logprobs` turns that on).
2. `score`: the frozen reward model reads prompt + response (EOS stripped, right-padded:
   the same sequence `trainers.data_formats.encode_prompt_response` builds for RM training).
3. reference log-probs and critic values: one forward each over the whole batch; the
   reference computes its LM head only on response positions (`logits_to_keep`).
   With a `SharedTrunk` (trainers/trunk.py) the frozen bottom blocks that actor, reference,
   critic and reward model have in common run once, and steps 2-3 and every PPO epoch run
   only each model's own top blocks on the cached hidden states (`Rollout.hidden`).
4. `compute_advantages`: per-token KL penalty + final score, GAE(gamma, lambda), whitening.

Sampling draws from one `torch.Generator` per prompt, seeded from (seed, step, global prompt
index). A prompt's response therefore does not depend on which rank or batch it lands in,
which is what lets a 2-rank run reproduce a 1-rank run and a resumed run reproduce an
uninterrupted one.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- helpers

def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    # Left padding: real tokens must start at position 0, not at the pad count.
    return (mask.cumsum(-1) - 1).clamp(min=0)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    # gather(logits) - logsumexp(logits) avoids materialising a second (B, T, V) tensor.
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def run_model(model, input_ids, attention_mask, trunk=None, hidden=None, **kw):
    """`model(input_ids, attention_mask, **kw)`, or only its top blocks on the shared trunk's
    hidden states when it shares the trunk (same result, fewer FLOPs)."""
    if hidden is not None and trunk is not None and trunk.shares(model):
        with trunk.top(model):
            return model(inputs_embeds=hidden, attention_mask=attention_mask, **kw)
    return model(input_ids=input_ids, attention_mask=attention_mask, **kw)


def policy_logits(model, sequences, attention_mask, prompt_width: int, temperature: float,
                  trunk=None, hidden=None):
    """Logits that predict each response token, shape (B, R, V), temperature applied.

    Only the last R+1 positions go through the LM head: on a 49k vocabulary the head is a
    fifth of a small model's FLOPs, and prompt positions never need it.
    """
    resp_len = sequences.shape[1] - prompt_width
    out = run_model(model, sequences, attention_mask, trunk, hidden,
                    position_ids=position_ids(attention_mask), use_cache=False, logits_to_keep=resp_len + 1)
    logits = out.logits[:, :-1]
    return logits / temperature if temperature != 1.0 else logits


# ------------------------------------------------------------------------- generation

def _few_rows_linear(self, x):
    """nn.Linear forward for decoding: a few rows computed as (W x^T)^T.

    Same product, but for M <= 8 rows MKL's kernel for a tall left operand streams the
    weight faster than the one for x W^T (decoding SmolLM2 with batch 4: 2.5 -> 1.9 s on
    2 threads; the 49k x 576 LM head alone 23 -> 9.5 ms). More rows take the usual path.
    """
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] > 8 or flat.dtype != torch.float32 or self.weight.dtype != torch.float32:
        return F.linear(x, self.weight, self.bias)
    y = torch.mm(self.weight, flat.T).T
    if self.bias is not None:
        y = y + self.bias
    return y.contiguous().reshape(*x.shape[:-1], -1)


@contextlib.contextmanager
def _decoding_linears(model):
    """Route every plain CPU nn.Linear of `model` through `_few_rows_linear` while decoding.

    Skipped for ZeRO-3 partitioned weights (`ds_id`), whose gather hooks own the forward.
    """
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and "forward" not in vars(m)
               and m.weight.device.type == "cpu" and not hasattr(m.weight, "ds_id")]
    for m in linears:
        m.forward = _few_rows_linear.__get__(m)
    try:
        yield
    finally:
        for m in linears:
            del m.forward


def _sample_rows(probs: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
    """One token per row, row i drawn with its own generator (inverse CDF of one uniform).

    Cheaper than a per-row torch.multinomial, which draws an exponential per vocabulary entry.
    """
    u = torch.cat([torch.rand(1, generator=g, device=probs.device, dtype=torch.float64) for g in gens])
    cdf = probs.double().cumsum(-1)
    tok = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(-1)
    return tok.clamp_(max=probs.shape[-1] - 1)


@dataclass
class Generation:
    sequences: torch.Tensor        # (B, P+R) left-padded prompt + right-padded response
    attention_mask: torch.Tensor   # (B, P+R)
    prompt_width: int              # P
    response_mask: torch.Tensor    # (B, R) float, 1 up to and including EOS
    logprobs: torch.Tensor         # (B, R) log-probs of the sampled tokens (temperature applied)
    finished: torch.Tensor         # (B,) bool: EOS produced within max_new_tokens
    hidden: torch.Tensor | None = None  # (B, P+R, H) output of the bottom `trunk_depth` blocks

    @property
    def responses(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_width:]


@torch.no_grad()
def generate(model, prompts: list[list[int]], *, max_new_tokens: int, eos_ids: list[int], pad_id: int,
             temperature: float = 1.0, top_k: int = 0, greedy: bool = False,
             seeds: list[int] | None = None, trunk_depth: int = 0) -> Generation:
    """Batched KV-cache sampling. `seeds[i]` seeds prompt i's own generator.

    `trunk_depth` > 0 also returns the hidden states after that many blocks for every position
    (`Generation.hidden`), collected while decoding, so a `SharedTrunk` need not recompute
    them. Positions after a row's EOS (and the EOS itself) are padding there: whatever they
    hold, no kept output depends on them under causal attention.
    """
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    B, P = ids.shape
    gens = None
    if not greedy:
        if seeds is None:
            raise ValueError("sampling needs one seed per prompt")
        gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    eos = torch.tensor(eos_ids, device=device)
    states, hook = [], None
    if trunk_depth:
        from trainers.trunk import decoder_of
        decoder = decoder_of(model)
        hook = decoder.layers[trunk_depth - 1].register_forward_hook(
            lambda _m, _i, o: states.append(o[0] if isinstance(o, tuple) else o))
    try:
        with _decoding_linears(model):
            out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                        use_cache=True, logits_to_keep=1)
            tokens, logps, resp_mask, alive, past = _decode(model, out, mask, B, max_new_tokens, eos, pad_id,
                                                            temperature, top_k, greedy, gens)
        if trunk_depth:
            # The last sampled token is never fed back for logits; run it through the trunk only.
            from trainers.trunk import only_blocks
            mask = torch.cat([mask, torch.stack(resp_mask, 1).long()], 1)
            with only_blocks(decoder, decoder.layers[:trunk_depth], final_norm=False):
                decoder(input_ids=tokens[-1][:, None], attention_mask=mask,
                        position_ids=position_ids(mask)[:, -1:], past_key_values=past, use_cache=True)
    finally:
        if hook is not None:
            hook.remove()
    responses = torch.stack(tokens, 1)
    resp_mask_t = torch.stack(resp_mask, 1).float()
    sequences = torch.cat([ids, responses], 1)
    full_mask = torch.cat([mask[:, :P], resp_mask_t.long()], 1)
    hidden = torch.cat(states, 1) if trunk_depth else None
    return Generation(sequences, full_mask, P, resp_mask_t, torch.stack(logps, 1), ~alive, hidden)


def _decode(model, out, mask, B, max_new_tokens, eos, pad_id, temperature, top_k, greedy, gens):
    """The sampling loop after the prompt pass; returns per-step lists and the KV cache."""
    device = mask.device
    past = out.past_key_values
    next_pos = position_ids(mask)[:, -1:] + 1
    alive = torch.ones(B, dtype=torch.bool, device=device)
    tokens, logps, resp_mask = [], [], []
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1].float()
        if temperature != 1.0:
            logits = logits / temperature
        logp_all = torch.log_softmax(logits, dim=-1)
        if greedy:
            tok = logits.argmax(-1)
        else:
            sample_logits = logits
            if top_k and top_k > 0:
                kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                sample_logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(sample_logits, dim=-1)
            tok = _sample_rows(probs, gens)
        tok = torch.where(alive, tok, torch.full_like(tok, pad_id))
        tokens.append(tok)
        logps.append(logp_all.gather(-1, tok[:, None]).squeeze(-1) * alive)
        resp_mask.append(alive.clone())
        alive = alive & ~torch.isin(tok, eos)
        if not alive.any() or len(tokens) == max_new_tokens:
            break  # no logits needed after the last token
        mask = torch.cat([mask, resp_mask[-1].long()[:, None]], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos,
                    past_key_values=past, use_cache=True)
        past = out.past_key_values
        next_pos = next_pos + 1
    return tokens, logps, resp_mask, alive, past


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


def without_final_eos(gen: Generation, eos_ids: list[int]) -> torch.Tensor:
    """The rollout's attention mask with each row's final EOS dropped (left padding kept)."""
    from trainers.reward_model import last_token_index
    mask = gen.attention_mask.clone()
    last = last_token_index(mask)
    rows = torch.arange(mask.shape[0], device=mask.device)
    is_eos = torch.isin(gen.sequences[rows, last], torch.tensor(eos_ids, device=mask.device))
    mask[rows[is_eos], last[is_eos]] = 0
    return mask


@torch.no_grad()
def score(reward_model, gen: Generation, eos_ids: list[int], pad_id: int, trunk=None,
          hidden=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(reward, raw): the RM's clipped reward and its unclipped score, shape (B,) each."""
    if hidden is not None and trunk is not None and trunk.shares(reward_model):
        # Same tokens as reward_inputs, left-padded: the RM reads its last unmasked token, and a
        # dropped trailing EOS cannot change what causal attention gave the tokens before it.
        reward, raw = run_model(reward_model, None, without_final_eos(gen, eos_ids), trunk, hidden,
                                return_raw=True)
        return reward.float().reshape(-1), raw.float().reshape(-1)
    device = next(reward_model.parameters()).device
    ids, mask = reward_inputs(gen, eos_ids, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    try:
        reward, raw = reward_model(ids, mask, return_raw=True)
    except TypeError:  # a reward model without `return_raw` reports only its (clipped) reward
        reward = raw = reward_model(ids, mask)
    return reward.float().reshape(-1), raw.float().reshape(-1)


@torch.no_grad()
def ref_logprobs(ref_model, gen: Generation, temperature: float, trunk=None, hidden=None) -> torch.Tensor:
    logits = policy_logits(ref_model, gen.sequences, gen.attention_mask, gen.prompt_width, temperature,
                           trunk, hidden)
    return logprobs_from_logits(logits.float(), gen.responses) * gen.response_mask


@torch.no_grad()
def critic_values(critic, gen: Generation, trunk=None, hidden=None) -> torch.Tensor:
    v = run_model(critic, gen.sequences, gen.attention_mask, trunk, hidden)
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
    """Everything the optimisation step needs, one row per sequence (this rank's shard)."""
    sequences: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    kl: torch.Tensor            # per-token KL estimate
    reward_raw: torch.Tensor    # (B,) reward-model score before any clipping
    reward: torch.Tensor        # (B,) reward used: RM-clipped, missing-EOS rule, reward_clip
    finished: torch.Tensor      # (B,) bool
    prompt_width: int
    hidden: torch.Tensor | None = None  # (B, P+R, H) shared-trunk output, when there is a trunk

    def __len__(self) -> int:
        return self.sequences.shape[0]

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
                continue
            v = v[idx]
            if v.dim() >= 2 and v.shape[1] == self.sequences.shape[1]:  # token-aligned (and hidden)
                v = v[:, lead:self.prompt_width + resp_len]
            elif v.dim() == 2:
                v = v[:, :resp_len]
            kw[f.name] = v
        return Rollout(**kw, prompt_width=self.prompt_width - lead)


def make_rollout(*, actor, ref, critic, reward_model, prompts: list[list[int]], seeds: list[int],
                 cfg, kl_coef: float, eos_ids: list[int], pad_id: int, all_reduce=None,
                 timer=None, trunk=None) -> Rollout:
    """Generate + score one batch. `cfg` is a PPOConfig; `timer(name)` is a context manager;
    `trunk` an optional `SharedTrunk` whose hidden states the rollout keeps for the update."""
    timer = timer or (lambda name: contextlib.nullcontext())
    with timer("gen"):
        was_training = actor.training
        actor.eval()
        # The actor's frozen bottom is the trunk: collect its output while decoding.
        depth = trunk.depth if trunk is not None and trunk.shares(actor) else 0
        gen = generate(actor, prompts, max_new_tokens=cfg.max_new_tokens, eos_ids=eos_ids,
                       pad_id=pad_id, temperature=cfg.temperature, top_k=cfg.top_k,
                       greedy=cfg.greedy, seeds=seeds, trunk_depth=depth)
        if cfg.recompute_old_logprobs:
            with torch.no_grad():
                logits = policy_logits(actor, gen.sequences, gen.attention_mask, gen.prompt_width,
                                       cfg.temperature)
                gen.logprobs = logprobs_from_logits(logits.float(), gen.responses) * gen.response_mask
        actor.train(was_training)
    with timer("score"):
        hidden = gen.hidden
        if trunk is not None and hidden is None:
            hidden = trunk(gen.sequences, gen.attention_mask)
        reward, raw = score(reward_model, gen, eos_ids, pad_id, trunk, hidden)
        if cfg.missing_eos_reward is not None:
            reward = torch.where(gen.finished, reward, torch.full_like(reward, cfg.missing_eos_reward))
        if cfg.reward_clip:
            reward = reward.clamp(-cfg.reward_clip, cfg.reward_clip)
        ref_lp = ref_logprobs(ref, gen, cfg.temperature, trunk, hidden)
        critic_was_training = critic.training
        critic.eval()
        values = critic_values(critic, gen, trunk, hidden)
        critic.train(critic_was_training)
        mask = gen.response_mask
        kl = kl_penalty(gen.logprobs, ref_lp, cfg.kl_estimator) * mask
        rewards = token_rewards(reward, kl, kl_coef, mask)
        adv, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            adv = whiten(adv, mask, all_reduce)
    return Rollout(gen.sequences, gen.attention_mask, mask, gen.logprobs, ref_lp, values, adv, returns,
                   kl, raw, reward, gen.finished, gen.prompt_width, hidden)
