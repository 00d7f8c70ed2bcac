"""Crash-safe checkpoints: PPO's resumable ones, and the HF checkpoint SFT and the RM write.

Layout under `OUT/checkpoints/`:

    step_<N>/actor_hf/        actor as a Hugging Face checkpoint (+ tokenizer)
    step_<N>/ds_actor/        DeepSpeed engine state (trained weights + optimizer) of the actor; frozen
                              blocks are left out (ZeRO 0-2) and come back from the base model
    step_<N>/ds_critic/       same for the critic
    step_<N>/rng_rank<r>.pt   python / numpy / torch RNG states of rank r
    step_<N>/state.json       step, data position, adaptive-KL coefficient, config hash, trained set
    latest                    text file "step_<N>", replaced atomically

A checkpoint is first written to `.tmp_step_<N>/` and fsynced (files, then directories),
then renamed to `step_<N>/` (the parent fsynced), and only then is `latest` replaced (a temp
file, fsync, rename, parent fsync). A `kill -9` (or power loss) at any moment therefore leaves
`latest` pointing at a complete checkpoint; on resume, leftover `.tmp_*` directories and
`step_<N>/` directories newer than `latest` are deleted.

Fault injection for tests: HRLAIF_FAULT=kill_in_checkpoint_write:<N> makes the process SIGKILL
itself while checkpoint N is half written (DeepSpeed actor state on disk, the rest not).
"""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
from pathlib import Path

import numpy as np
import torch

from hrlaif.core.errors import UserError
from hrlaif.core.layout import PPODir
from hrlaif.core.store import read_json, read_jsonl, write_json, write_jsonl, write_text
from hrlaif.trainers.distributed import barrier, rank_world

LATEST = "latest"
DS_TAG = "state"


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_hf(engine, tokenizer, out_dir: Path, zero_stage: int, remember: bool = False) -> None:
    """Save the engine's module as an HF checkpoint on rank 0 (collective under ZeRO-3); `remember`:
    its in-memory weights hash becomes the directory's identity (hrlaif.core.models.remember_weights_hash)."""
    rank, _ = rank_world()
    model = engine.module
    if zero_stage == 3:
        import deepspeed
        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            if rank == 0:
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                model.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
    elif rank == 0:
        model.save_pretrained(out_dir, safe_serialization=True)
        if remember:
            from hrlaif.core.models import remember_weights_hash, weights_hash
            remember_weights_hash(out_dir, weights_hash(model))
    if rank == 0 and tokenizer is not None:
        tokenizer.save_pretrained(out_dir)


@contextlib.contextmanager
def full_params(module):
    """Under ZeRO-3 parameters are partitioned; gather them (read-only) for saving/eval."""
    params = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if not params:
        yield
        return
    import deepspeed
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def save_hf_checkpoint(module, tok, out_dir: Path, save_fn=None, remember: bool = False) -> None:
    """Write an HF checkpoint into out_dir file by file via os.replace (SFT, reward model).

    We save into a hidden sibling dir first, so a crash mid-save never leaves a torn
    weights file next to the previous good one. `save_fn(module, dir)` defaults to
    `module.save_pretrained`. `remember`: the module's in-memory weights hash becomes the
    directory's identity (hrlaif.core.models.remember_weights_hash).
    """
    from hrlaif.core.models import remember_weights_hash, weights_hash

    out_dir = Path(out_dir)
    tmp = out_dir / ".checkpoint.partial"
    with full_params(module):
        if rank_world()[0] != 0:
            return
        shutil.rmtree(tmp, ignore_errors=True)
        (save_fn or (lambda m, d: m.save_pretrained(d, safe_serialization=True)))(module, tmp)
        digest = weights_hash(module) if remember else None
    tok.save_pretrained(tmp)
    for f in sorted(tmp.iterdir()):
        os.replace(f, out_dir / f.name)
    if digest is not None:
        remember_weights_hash(out_dir, digest)
    tmp.rmdir()


def save_checkpoint(root: Path | str, step: int, *, actor, critic, tokenizer, state: dict,
                    zero_stage: int, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically on every rank; returns its final path."""
    root = Path(root)
    rank, _ = rank_world()
    name = f"step_{step}"
    tmp, final = root / f".tmp_{name}", root / name
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    # Frozen blocks never change: they come back from the base model at load (`load_checkpoint`), so
    # the module states hold only what trains (SmolLM2, top 8 of 30 blocks: 1.1 GB less per checkpoint).
    lean = zero_stage < 3
    actor.save_checkpoint(str(tmp / "ds_actor"), tag=DS_TAG, exclude_frozen_parameters=lean)
    _fault("kill_in_checkpoint_write", step)
    critic.save_checkpoint(str(tmp / "ds_critic"), tag=DS_TAG, exclude_frozen_parameters=lean)
    save_hf(actor, tokenizer, tmp / "actor_hf", zero_stage)
    torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
    barrier()
    if rank == 0:
        write_json(tmp / "state.json", {**state, "step": step,
                                        "trained_params": {"actor": _trained(actor), "critic": _trained(critic)}
                                        if lean else None})
        _fsync_tree(tmp)
        if final.exists():  # left by a run killed before it switched `latest`, which names an older step
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        write_text(root / LATEST, name + "\n")
        _fsync_dir(root)  # the pointer's rename itself must reach the disk
        _prune(root, keep, step)
    barrier()
    return final


def check_run_dir(out: Path, resume: bool) -> None:
    """A new run (no --resume) must not write over an earlier run's log and checkpoints."""
    if not resume and (PPODir(out).metrics.exists() or (PPODir(out).checkpoints / LATEST).exists()):
        raise UserError(f"{out} already holds a PPO run: pass --resume or choose another --out")


def resume_run(out: Path, *, actor, critic, config_hash: str) -> tuple[dict, Path]:
    """Restore OUT/checkpoints/latest into the engines -> (state.json, checkpoint path).

    Rank 0 then deletes newer or half-written checkpoints and drops the log rows written after
    the checkpoint (the resumed run replays those steps); the caller syncs the ranks after.
    """
    root = PPODir(out).checkpoints
    path = latest_checkpoint(root)
    if path is None:
        raise UserError(f"--resume: no checkpoint in {root}")
    state = load_checkpoint(path, actor=actor, critic=critic)
    if state.get("config_hash") != config_hash:
        raise UserError(f"--resume: the training settings differ from the checkpointed run in {out}")
    step = int(state["step"])
    if rank_world()[0] == 0:
        clean_partial(root, latest_step=step)
        for f in (PPODir(out).metrics, PPODir(out).drift):
            if f.exists():  # a last line cut short by the kill is dropped: it is replayed anyway
                write_jsonl(f, [r for r in read_jsonl(f, torn_tail_ok=True) if int(r["step"]) <= step])
        for n, d in _steps(out / "drift"):  # per-item drift files of the steps the resumed run replays
            if n > step:
                shutil.rmtree(d, ignore_errors=True)
    return state, path


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


def clean_partial(root: Path | str, latest_step: int | None = None) -> None:
    """Delete half-written `.tmp_*` checkpoints and, given the step `latest` names, complete
    checkpoints newer than it (renamed just before a kill; the resumed run rewrites them)."""
    root = Path(root)
    if not root.exists():
        return
    for p in root.glob(".tmp_step_*"):
        shutil.rmtree(p, ignore_errors=True)
    if latest_step is not None:
        for step, p in _steps(root):
            if step > latest_step:
                shutil.rmtree(p, ignore_errors=True)


def _trained(engine) -> str:
    """Names of the parameters that train, hashed: a checkpoint without its frozen ones restores only
    into engines that train exactly these (the rest is the base model's, unchanged)."""
    from hrlaif.core.store import stable_hash
    return stable_hash(sorted(n for n, p in engine.module.named_parameters() if p.requires_grad))


def load_checkpoint(path: Path, *, actor, critic) -> dict:
    """Restore engines and this rank's RNG; returns state.json."""
    rank, _ = rank_world()
    state = read_json(path / "state.json")
    trained = state.get("trained_params")
    for engine, sub in ((actor, "ds_actor"), (critic, "ds_critic")):
        if trained is not None and trained[sub[3:]] != _trained(engine):
            raise UserError(f"cannot resume from {path}: it trained other parameters of the {sub[3:]} than this run "
                            f"(the frozen ones were left out of it)")
        load_path, _ = engine.load_checkpoint(str(path / sub), tag=DS_TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=True, load_module_strict=trained is None)
        if load_path is None:
            raise UserError(f"cannot load DeepSpeed state from {path / sub}")
    rng_file = path / f"rng_rank{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return state


def _steps(root: Path) -> list[tuple[int, Path]]:
    return sorted((int(p.name.split("_")[1]), p) for p in root.glob("step_*") if p.name.split("_")[1].isdigit())


def _prune(root: Path, keep: int, current: int) -> None:
    """Keep the `keep` newest checkpoints up to `current` (the one `latest` names)."""
    if keep <= 0:
        return
    for _, p in [sp for sp in _steps(root) if sp[0] <= current][:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def _fault(point: str, step: int) -> None:
    """Test hook (see the module docstring): die here, as `kill -9` would, if HRLAIF_FAULT asks."""
    if os.environ.get("HRLAIF_FAULT") == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


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
