"""Train only the top N transformer blocks (plus final norm and heads).

On a CPU box a full backward through every block dominates RM and PPO step time. Freezing
the bottom blocks keeps the forward exact, skips their backward entirely (autograd does
not track ops whose inputs need no grad) and shrinks optimizer state. 0 = train everything.
"""
from __future__ import annotations

from torch import nn

from hrlaif.core.errors import UserError


def _blocks(model: nn.Module) -> nn.ModuleList:
    for name in ("layers", "h", "blocks"):  # Llama/Mistral/Qwen, GPT-2, others
        for mod in model.modules():
            seq = getattr(mod, name, None)
            if isinstance(seq, nn.ModuleList) and len(seq) > 0:
                return seq
    raise UserError(f"cannot find the transformer blocks of {type(model).__name__} to freeze")


def train_top_layers(model: nn.Module, n: int) -> int:
    """Freeze embeddings and all blocks but the last `n`; returns the trainable parameter count."""
    if n < 0:
        raise UserError(f"train_layers must be >= 0 (got {n})")
    if n == 0:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    blocks = _blocks(model)
    frozen_blocks = set(map(id, blocks[: max(0, len(blocks) - n)]))
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    for m in embeddings:
        m.weight.requires_grad_(False)
    for b in blocks:
        for p in b.parameters():
            p.requires_grad_(id(b) not in frozen_blocks)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
