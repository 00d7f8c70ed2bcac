"""Crash-safe PPO checkpoints.

Layout under `OUT/checkpoints/`:

    step_<N>/actor_hf/        actor as a Hugging Face checkpoint (+ tokenizer)
    step_<N>/ds_actor/        DeepSpeed engine state (weights + optimizer) of the actor
    step_<N>/ds_critic/       same for the critic
    step_<N>/rng_rank<r>.pt   python / numpy / torch RNG states of rank r
    step_<N>/state.json       step, data position, adaptive-KL coefficient, config hash
    latest                    text file "step_<N>", replaced atomically

A checkpoint is first written to `.tmp_step_<N>/`, then renamed to `step_<N>/` and only
then is `latest` switched to it. A `kill -9` at any moment therefore leaves `latest`
pointing at a complete checkpoint; leftover `.tmp_*` directories are deleted on resume.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from harness.errors import UserError
from harness.store import read_json, write_json, write_text

LATEST = "latest"
DS_TAG = "state"


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_hf(engine, tokenizer, out_dir: Path, zero_stage: int) -> None:
    """Save the engine's module as an HF checkpoint on rank 0 (collective under ZeRO-3)."""
    rank, _ = _rank_world()
    model = engine.module
    if zero_stage == 3:
        import deepspeed
        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            if rank == 0:
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                model.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
    elif rank == 0:
        model.save_pretrained(out_dir, safe_serialization=True)
    if rank == 0 and tokenizer is not None:
        tokenizer.save_pretrained(out_dir)


def save_checkpoint(root: Path | str, step: int, *, actor, critic, tokenizer, state: dict,
                    zero_stage: int, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically on every rank; returns its final path."""
    root = Path(root)
    rank, _ = _rank_world()
    name = f"step_{step}"
    tmp, final = root / f".tmp_{name}", root / name
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    _barrier()
    actor.save_checkpoint(str(tmp / "ds_actor"), tag=DS_TAG)
    critic.save_checkpoint(str(tmp / "ds_critic"), tag=DS_TAG)
    save_hf(actor, tokenizer, tmp / "actor_hf", zero_stage)
    torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
    _barrier()
    if rank == 0:
        write_json(tmp / "state.json", {**state, "step": step})
        _fsync_tree(tmp)
        if final.exists():  # re-saving the same step after a resume
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        write_text(root / LATEST, name + "\n")
        _prune(root, keep)
    _barrier()
    return final


def latest_checkpoint(root: Path | str) -> Path | None:
    """The checkpoint `latest` names, or None. Stale temp dirs are left for `clean_partial`."""
    root = Path(root)
    pointer = root / LATEST
    if not pointer.exists():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    path = root / name
    if not (path / "state.json").exists():
        raise UserError(f"{pointer} names {name}, which is missing or incomplete; delete {pointer} to start over")
    return path


def clean_partial(root: Path | str) -> None:
    root = Path(root)
    if root.exists():
        for p in root.glob(".tmp_step_*"):
            shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(path: Path, *, actor, critic) -> dict:
    """Restore engines and this rank's RNG; returns state.json."""
    rank, _ = _rank_world()
    for engine, sub in ((actor, "ds_actor"), (critic, "ds_critic")):
        load_path, _ = engine.load_checkpoint(str(path / sub), tag=DS_TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if load_path is None:
            raise UserError(f"cannot load DeepSpeed state from {path / sub}")
    rng_file = path / f"rng_rank{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return read_json(path / "state.json")


def _prune(root: Path, keep: int) -> None:
    if keep <= 0:
        return
    steps = sorted((int(p.name.split("_")[1]), p) for p in root.glob("step_*") if p.name.split("_")[1].isdigit())
    for _, p in steps[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    # Data must be on disk before the rename makes the checkpoint visible.
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    for d in [path, *[p for p in path.rglob("*") if p.is_dir()]]:
        _fsync_dir(d)
