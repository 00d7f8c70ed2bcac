"""Where the trainers compute and at what precision: `device` and `precision` resolved per host.

`precision: auto` is bf16 where the device multiplies bf16 natively (CUDA; AMX or AVX512-BF16
CPUs), fp32 elsewhere; `device: auto` is the first CUDA device when there is one (both decided by
hrlaif.core.hardware, once, and recorded next to each trainer's outputs).

Training in bf16 is mixed precision through `torch.autocast`: the weights and the optimizer state
stay fp32 (checkpoints, resume and ZeRO sharding are exactly the fp32 ones), the matmuls of the
forward passes run in bf16, and log-probs, KL, advantages and losses are computed in fp32 from
`.float()` outputs. autocast works alike on CPU and CUDA; DeepSpeed's own bf16 mode would hold
bf16 weights in the module (fp32 masters only inside its optimizer), which is what the frozen
reference/reward models and the shared trunk must not see. Inference-only stages (sampling) load
bf16 weights instead.

autocast casts an fp32 weight to bf16 on every use, except that it caches the cast of a weight
that requires grad for the life of the outermost autocast block; frozen models (the reference,
the reward model) therefore get bf16 copies of their matmul weights once (`cast_frozen`), which
computes exactly what autocast computes from the fp32 weights.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from hrlaif.core import hardware


@dataclass(frozen=True)
class Placement:
    device: str     # cpu | cuda | cuda:N
    precision: str  # fp32 | bf16

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def autocast(self):
        """The forward passes' context: bf16 matmuls over fp32 weights, or nothing in fp32.
        Leave it before backward and optimizer steps (its weight-cast cache must not outlive a step)."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16)

    def record(self) -> dict:
        """What ran, for the stage's outputs: device, precision and the host facts behind `auto`."""
        return hardware.describe(self.device, self.precision)


def resolve(cfg) -> Placement:
    """A config's `device` / `precision` settings (auto or explicit) -> what this host will use."""
    device = hardware.resolve_device(cfg.device)
    return Placement(device, hardware.resolve_precision(cfg.precision, device))


@torch.no_grad()
def cast_frozen(model: nn.Module, place: Placement) -> nn.Module:
    """bf16 copies of the Linear weights of a model that is never trained or saved (in bf16 only).

    Under autocast a Linear multiplies in bf16 anyway; holding its weight in bf16 spares the
    cast on every forward (uncached for weights without grad) and computes the same numbers.
    Embeddings, norms and scalar (reward, value) heads stay fp32; an LM head tied to the embedding
    gets its own bf16 copy so the embedding lookup keeps its fp32 values.
    """
    if not place.bf16:
        return model
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for m in model.modules():
        if isinstance(m, nn.Linear) and not m.weight.requires_grad and m.weight.dtype == torch.float32 \
                and m.out_features > 1:  # scalar heads stay fp32 (hrlaif.trainers.models.fp32_linear)
            if id(m.weight) in embeddings:  # tied: untie before casting
                m.weight = nn.Parameter(m.weight.detach().to(torch.bfloat16), requires_grad=False)
            else:
                m.weight.data = m.weight.data.to(torch.bfloat16)
            if m.bias is not None:
                m.bias.data = m.bias.data.to(torch.bfloat16)
    return model
