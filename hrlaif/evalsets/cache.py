"""Cache of model outputs per (weights, benchmark, items, settings).

A cached entry holds the per-sample rows, so a re-run of the same checkpoint with the
same config skips the model entirely (it is not even loaded). The key includes the
weights hash: two checkpoints never share outputs (lm-eval's own cache does not do that).
"""
from __future__ import annotations

from pathlib import Path

from hrlaif.core.store import cache_dir, read_json, stable_hash, write_json

CACHE_VERSION = 1


def key(**parts) -> str:
    return stable_hash({"v": CACHE_VERSION, **parts}, n=32)


def _path(k: str) -> Path:
    return cache_dir() / "outputs" / k[:2] / f"{k}.json"


def get(k: str) -> dict | None:
    p = _path(k)
    if not p.exists():
        return None
    try:
        return read_json(p)
    except Exception:  # a corrupt entry is a miss, never an error
        return None


def put(k: str, value: dict) -> None:
    write_json(_path(k), value)
