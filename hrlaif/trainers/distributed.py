"""DeepSpeed on any machine: CPU accelerator here, GPUs on a user's cluster.

Every trainer (SFT, reward model, PPO) builds its engines through `make_engine`, so the
ZeRO stage, batch sizes and gradient clipping are configured in exactly one place.
A plain `python` process gets single-rank env defaults; `torchrun` / the `deepspeed`
launcher provide RANK/WORLD_SIZE themselves. The resolved `device` (hrlaif/trainers/precision.py)
picks DeepSpeed's accelerator: `cpu` -> DS_ACCELERATOR=cpu and gloo; `cuda[:N]` -> CUDA and
NCCL, a single process on device N. Mixed precision is torch.autocast around the forwards,
not DeepSpeed's bf16 mode (why: hrlaif/trainers/precision.py), so the engines hold fp32 weights.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hrlaif.core.errors import UserError
from hrlaif.trainers.configs import EngineSettings

if TYPE_CHECKING:
    import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_env(device: str | None = None) -> None:
    """Defaults that make DeepSpeed usable from a plain single process, on `device` (resolved:
    cpu, cuda or cuda:N; None = CUDA when there is one)."""
    if device is None:
        try:
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        except Exception:  # pragma: no cover
            device = "cpu"
    if device == "cpu":
        os.environ["DS_ACCELERATOR"] = "cpu"  # also on a GPU host: the user asked for the CPU
    elif os.environ.get("DS_ACCELERATOR", "cpu") == "cpu":  # another accelerator named by the user stands
        os.environ["DS_ACCELERATOR"] = "cuda"
    if "RANK" not in os.environ:  # not under torchrun / deepspeed launcher
        os.environ.setdefault("RANK", "0")
        # DeepSpeed puts a rank's engine on device LOCAL_RANK: cuda:N for a single process is rank 0 on N.
        os.environ.setdefault("LOCAL_RANK", device.split(":")[1] if ":" in device else "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))


def init_distributed(device: str | None = None) -> tuple[int, int]:
    """Initialise torch.distributed through DeepSpeed once; return (rank, world_size)."""
    setup_env(device)
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "gloo" if os.environ.get("DS_ACCELERATOR") == "cpu" else None
        if backend == "gloo" and os.environ.get("WORLD_SIZE") == "1":
            skip_shm_comm_build()
        deepspeed.init_distributed(dist_backend=backend) if backend else deepspeed.init_distributed()
    return dist.get_rank(), dist.get_world_size()


def skip_shm_comm_build() -> None:
    """One CPU rank has no peer to share memory with, so DeepSpeed's shared-memory all-reduce op
    is useless there, yet its first use JIT-compiles it (about 70 s on a fresh machine, the
    quickstart's first minute). Marking it incompatible makes DeepSpeed fall back to plain gloo,
    which it does anyway on hosts without the op's ISA."""
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) when torch.distributed is not initialised."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over ranks (a new tensor); `t` itself on one rank."""
    if rank_world()[1] == 1:
        return t
    import torch
    import torch.distributed as dist
    # NCCL reduces CUDA tensors only; the small CPU tensors of metrics travel through the GPU.
    dev = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else t.device
    via = t.to(dev, copy=True)
    dist.all_reduce(via)
    return via.to(t.device)


def gather_objects(obj) -> list | None:
    """Every rank's `obj` on rank 0 (in rank order), None elsewhere; [obj] on one rank."""
    rank, world = rank_world()
    if world == 1:
        return [obj]
    import torch.distributed as dist
    out = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if rank_world()[1] > 1:
        import torch.distributed as dist
        dist.barrier()


@dataclass(frozen=True)
class EngineConfig:
    """One DeepSpeed engine: its trainer's EngineSettings (optimiser, ZeRO stage, gradient clip:
    hrlaif/trainers/configs.py, checked there) and what the trainer decides per engine."""

    settings: EngineSettings
    micro_batch_size: int
    """Sequences per rank per forward/backward."""
    grad_accum: int
    """Micro-batches accumulated before each optimizer step."""
    device: str | None
    """Resolved device (cpu, cuda, cuda:N) that picks DeepSpeed's accelerator; None = CUDA if present."""
    lr: float | None = None
    """This engine's learning rate when it is not settings.lr (PPO's critic: critic_lr)."""

    def __post_init__(self) -> None:
        if self.micro_batch_size < 1 or self.grad_accum < 1:
            raise UserError(f"micro_batch_size and grad_accum must be >= 1 (got {self.micro_batch_size} "
                            f"and {self.grad_accum})")

    @property
    def learning_rate(self) -> float:
        return self.settings.lr if self.lr is None else self.lr


def ds_config(cfg: EngineConfig, world_size: int) -> dict:
    conf = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum * world_size,
        "zero_optimization": {"stage": cfg.settings.zero_stage},
        "steps_per_print": 10**9,  # we log ourselves
        "wall_clock_breakdown": False,
    }
    if cfg.settings.grad_clip > 0:
        conf["gradient_clipping"] = cfg.settings.grad_clip
    return conf


def allocate_adam_state(optimizer) -> None:
    """Create Adam's moments now, as its first `step()` would (zeros, step 0), not lazily.

    Lazily they are allocated in the middle of the first update, between that step's activations,
    so the next update cannot reuse the activations' freed memory and grows the heap by as much
    again: on a CPU every fresh page is a fault (PPO on SmolLM2 at batch 8: 0.7M faults, update
    17.6 -> 11.9 s in the second step). Created first, they sit below everything the updates
    allocate. Same numbers: tests/test_optimizer_state.py compares the trained weights bit for bit."""
    import torch
    for group in optimizer.param_groups:
        scalar_on_device = group.get("fused") or group.get("capturable")
        for p in group["params"]:
            state = optimizer.state[p]
            if state:  # already created (or loaded from a checkpoint)
                continue
            dtype = torch.float32 if group.get("fused") or torch.get_default_dtype() != torch.float64 else torch.float64
            state["step"] = (torch.zeros((), dtype=dtype, device=p.device) if scalar_on_device
                             else torch.tensor(0.0, dtype=dtype))
            for name in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group.get("amsgrad") else ()):
                state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)


def make_engine(model, cfg: EngineConfig):
    """Wrap a model in a DeepSpeed engine with AdamW (torch's, which runs on any accelerator)."""
    import deepspeed
    import torch

    from hrlaif.core.allocator import keep_freed_memory
    keep_freed_memory()  # also for library callers that bypass the CLI
    rank, world = init_distributed(cfg.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = {"lr": cfg.learning_rate, "weight_decay": cfg.settings.weight_decay}
    try:  # the fused kernel (CPU and GPU) is 4x faster than the per-tensor loop on a CPU
        optimizer = torch.optim.AdamW(params, **opt, fused=True)
    except (RuntimeError, TypeError):  # dtypes/devices without a fused kernel
        optimizer = torch.optim.AdamW(params, **opt)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config(cfg, world))
    if engine.optimizer is optimizer:  # not when ZeRO or a mixed-precision wrapper steps flat copies instead
        allocate_adam_state(optimizer)
    if world == 1 and cfg.settings.zero_stage == 0:
        # One rank has nothing to all-reduce, yet DeepSpeed would still flatten and copy every
        # gradient after each backward (about 0.5 s per backward for a 135M model on a CPU).
        engine.enable_backward_allreduce = False
    return engine
