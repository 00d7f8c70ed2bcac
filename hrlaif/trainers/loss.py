"""Losses: the reward model's preference losses and PPO's clipped policy and value losses.

Reward model (the O(K) trick): a prompt's K responses go through the backbone in ONE batched
forward; the loss is the mean over every ordered pair (i, j) of the partial order ("i preferred
to j") of -log sigmoid(r_i - r_j) (`kwise_group_loss`). The naive pair expansion forwards both
responses of every pair, 2 * n_pairs = K(K-1) sequences for a full order (`pairwise_group_loss`,
kept for bench/rm_forwards.py and the equality test). Both read the RAW score: clipping is for
scoring (PPO, evaluation); inside the loss it would take the gradient from every outlier.

PPO: token losses summed over the response mask and divided by `n_tok`, the caller's token
count (hrlaif/trainers/ppo.py passes the global count over ranks / W, which makes the engines' gradient
average the global token-mean). Each returns (loss, diagnostics as floats).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# ------------------------------------------------------------------------ reward model

def pair_loss(rewards: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Mean over pairs (i preferred to j) of -log sigmoid(r_i - r_j)."""
    return -F.logsigmoid(rewards[pairs[:, 0]] - rewards[pairs[:, 1]]).mean()


def kwise_group_loss(rm, ids, mask, pairs):
    """ONE forward over the K responses, loss over all pairs. -> (loss, raw rewards)."""
    _, raw = rm(input_ids=ids, attention_mask=mask, return_raw=True)
    return pair_loss(raw, pairs), raw


def pairwise_group_loss(rm, ids, mask, pairs):
    """Naive baseline: forward both responses of every pair (2 sequences per pair)."""
    losses = []
    for i, j in pairs.tolist():
        sub_mask = mask[[i, j]]
        n = int(sub_mask.sum(1).max())  # right padding: trim to this pair's own length
        _, r = rm(input_ids=ids[[i, j], :n], attention_mask=sub_mask[:, :n], return_raw=True)
        losses.append(-F.logsigmoid(r[0] - r[1]))
    return torch.stack(losses).mean()


# -------------------------------------------------------------------------------- PPO

def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, cliprange: float, n_tok: float) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate: max(-A r, -A clip(r, 1 - eps, 1 + eps)), r = pi / pi_old per token."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * ratio.clamp(1 - cliprange, 1 + cliprange)
    loss = (torch.maximum(pg1, pg2) * mask).sum() / n_tok
    with torch.no_grad():
        stats = {"policy_clipfrac": ((pg2 > pg1).float() * mask).sum().item() / n_tok,
                 "approx_kl": ((ratio - 1 - log_ratio) * mask).sum().item() / n_tok}  # k3 of the update
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float, n_tok: float) -> tuple[torch.Tensor, dict]:
    """Clipped value loss: 0.5 max((V - R)^2, (V_old + clip(V - V_old) - R)^2)."""
    v_clip = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    vf1, vf2 = (values - returns) ** 2, (v_clip - returns) ** 2
    loss = 0.5 * (torch.maximum(vf1, vf2) * mask).sum() / n_tok
    with torch.no_grad():
        stats = {"value_clipfrac": ((vf2 > vf1).float() * mask).sum().item() / n_tok}
    return loss, stats
