"""Batched KV-cache sampling for PPO rollouts and drift evaluation (`generate`).

Prompts are left-padded token ids (computed once per run, never per step). `generate` also
returns the log-probabilities of the sampled tokens, which serve as PPO's "old" log-probs, so
the actor is not run a second time over the rollout.

Sampling draws from one `torch.Generator` per prompt, seeded from (seed, step, global prompt
index) by the caller. A prompt's response therefore does not depend on which rank or batch it
lands in, which is what lets a 2-rank run reproduce a 1-rank run and a resumed run reproduce an
uninterrupted one.

With `trunk_depth`, the hidden states after the shared frozen blocks (hrlaif/trainers/trunk.py) are
collected while decoding, so the rollout need not recompute them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hrlaif.core.decode_step import decoding
from hrlaif.core.decoding import cache_kwarg, growing_cache
from hrlaif.core.tensors import left_pad, position_ids
from hrlaif.trainers.trunk import decoder_of, only_blocks


def sample_rows(probs: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
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
        decoder = decoder_of(model)
        hook = decoder.layers[trunk_depth - 1].register_forward_hook(
            lambda _m, _i, o: states.append(o[0] if isinstance(o, tuple) else o))
    try:
        with decoding(model, B):
            out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                        use_cache=True, logits_to_keep=1, **growing_cache(model, max_new_tokens + 1))
            tokens, logps, resp_mask, alive, past = _decode(model, out, mask, B, max_new_tokens, eos, pad_id,
                                                            temperature, top_k, greedy, gens)
        if trunk_depth:
            # The last sampled token is never fed back for logits; run it through the trunk only.
            mask = torch.cat([mask, torch.stack(resp_mask, 1).long()], 1)
            with only_blocks(decoder, decoder.layers[:trunk_depth], final_norm=False):
                decoder(input_ids=tokens[-1][:, None], attention_mask=mask,
                        position_ids=position_ids(mask)[:, -1:], use_cache=True, **cache_kwarg(decoder, past))
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
    past = _cache_of(out)
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
            tok = sample_rows(probs, gens)
        tok = torch.where(alive, tok, torch.full_like(tok, pad_id))
        tokens.append(tok)
        logps.append(logp_all.gather(-1, tok[:, None]).squeeze(-1) * alive)
        resp_mask.append(alive.clone())
        alive = alive & ~torch.isin(tok, eos)
        if not alive.any() or len(tokens) == max_new_tokens:
            break  # no logits needed after the last token
        mask = torch.cat([mask, resp_mask[-1].long()[:, None]], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, use_cache=True,
                    **cache_kwarg(model, past))
        past = _cache_of(out)
        next_pos = next_pos + 1
    return tokens, logps, resp_mask, alive, past


def _cache_of(out):
    return out["cache"] if "cache" in out else out.past_key_values
