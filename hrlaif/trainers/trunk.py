"""Shared frozen trunk: run the bottom blocks once per rollout instead of once per model.

With `train_layers = n`, PPO freezes the embeddings and the bottom L-n blocks of the actor
and the critic. The reference is a copy of the initial actor, the critic is built from the
same checkpoint, and a reward model trained from the SFT checkpoint with its own
`train_layers` keeps that checkpoint's bottom blocks as well. Their bottom blocks are then
bit-identical, and so are their outputs. `SharedTrunk` computes those hidden states once
per rollout (no grad) and every model that shares them runs only its own top blocks on
them: in experience making (reference, critic, reward model) and in every PPO epoch (actor
and critic forward and backward). Nothing about the maths changes; only repeated work goes.

How a model runs "from layer d": its decoder's `layers` list is swapped for the slice it
needs and the hidden states go in as `inputs_embeds`; the decoder still builds the causal
mask and rotary embeddings itself. That holds for decoders whose forward does nothing to
`inputs_embeds` before the first block (Llama, Mistral, Qwen, SmolLM...). `SharedTrunk.build`
checks it on a probe batch for each model and shares only where the outputs match, so an
architecture that scales its embeddings (Gemma) or a model with different weights simply
runs its full forward.
"""
from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

from hrlaif.core.tensors import position_ids

log = logging.getLogger(__name__)


def decoder_of(model: nn.Module) -> nn.Module | None:
    """The decoder stack (the module with `embed_tokens`, `layers` and `norm`) inside a model,
    a DeepSpeed engine, a reward model or a value model."""
    for m in model.modules():
        if isinstance(getattr(m, "layers", None), nn.ModuleList) and hasattr(m, "embed_tokens") \
                and hasattr(m, "norm"):
            return m
    return None


@contextlib.contextmanager
def only_blocks(decoder: nn.Module, blocks: nn.ModuleList, final_norm: bool = True):
    """Temporarily make `decoder` run only `blocks` (and skip its final norm)."""
    full, norm = decoder.layers, decoder.norm
    decoder.layers = blocks
    if not final_norm:
        decoder.norm = nn.Identity()
    try:
        yield
    finally:
        decoder.layers, decoder.norm = full, norm


def _same_bottom(a: nn.Module, b: nn.Module, depth: int) -> bool:
    """Bit-identical embeddings and first `depth` blocks (and no trainable weight among them)."""
    if len(a.layers) < depth or len(b.layers) < depth:
        return False
    mods = [(a.embed_tokens, b.embed_tokens)] + [(a.layers[i], b.layers[i]) for i in range(depth)]
    for ma, mb in mods:
        pa, pb = list(ma.parameters()), list(mb.parameters())
        if len(pa) != len(pb):
            return False
        for x, y in zip(pa, pb):
            if x.requires_grad or y.requires_grad or x.shape != y.shape or x.dtype != y.dtype \
                    or not torch.equal(x, y):
                return False
    return True


class SharedTrunk:
    """The reference model's bottom `depth` blocks, shared with the models whose top blocks are in `tops`."""

    def __init__(self, reference: nn.Module, depth: int):
        self.reference = reference
        self.decoder = decoder_of(reference)
        self.depth = depth
        self.blocks = self.decoder.layers[:depth]
        self.tops: dict[int, nn.ModuleList] = {}  # member decoder id -> its blocks above the trunk

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states after the shared blocks, (B, T, H)."""
        with only_blocks(self.decoder, self.blocks, final_norm=False):
            return self.decoder(input_ids=input_ids, attention_mask=attention_mask,
                                position_ids=position_ids(attention_mask), use_cache=False).last_hidden_state

    def shares(self, model: nn.Module) -> bool:
        return id(decoder_of(model)) in self.tops

    @contextlib.contextmanager
    def top(self, model: nn.Module):
        """Inside this context `model(inputs_embeds=trunk_hidden, ...)` runs only its top blocks."""
        dec = decoder_of(model)
        with only_blocks(dec, self.tops[id(dec)]):
            yield

    # ------------------------------------------------------------------------ building
    @classmethod
    def build(cls, reference: nn.Module, depth: int, candidates: dict[str, tuple[nn.Module, callable]],
              vocab_size: int, autocast=contextlib.nullcontext) -> "SharedTrunk | None":
        """A trunk of `depth` blocks shared with every candidate whose bottom matches the reference's.

        `candidates` maps a name to (model, call) where `call(model, input_ids, attention_mask,
        inputs_embeds)` returns the model's output tensor; it is run once with ids and once from
        the trunk on a probe batch (under `autocast`: the run's precision), and the model joins
        only if both agree.
        """
        dec = decoder_of(reference)
        if depth < 1 or dec is None or depth >= len(dec.layers):
            return None
        trunk = cls(reference, depth)
        g = torch.Generator().manual_seed(0)
        device = next(reference.parameters()).device
        ids = torch.randint(0, vocab_size, (2, 12), generator=g).to(device)
        mask = torch.ones_like(ids)
        mask[1, :5] = 0  # a left-padded row, as in rollouts
        joined = []
        for name, (model, call) in candidates.items():
            other = decoder_of(model)
            if other is None or not _same_bottom(dec, other, depth):
                continue
            with torch.no_grad(), autocast():
                full = call(model, ids, mask, None)
                h = trunk(ids, mask)
                with only_blocks(other, other.layers[depth:]):
                    split = call(model, None, mask, h)
            diff, ref = (full - split).float(), full.float()
            if ref.dim() >= 2:  # per-token outputs: padding positions are don't-care
                diff, ref = diff[mask.bool()], ref[mask.bool()]
            err = diff.abs().max().item()
            if err <= 1e-4 * (ref.abs().max().item() + 1e-6):
                trunk.tops[id(other)] = other.layers[depth:]
                joined.append(name)
            else:
                log.info("shared trunk: %s does not reproduce its own forward from the trunk (%.2g); "
                         "it runs in full", name, err)
        if not joined:
            return None
        log.info("shared trunk: %d frozen blocks computed once per rollout for %s", depth, ", ".join(joined))
        return trunk
