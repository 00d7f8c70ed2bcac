"""`kill -9` mid-run, `--resume`, and the metrics equal an uninterrupted run's (CPU, fixed seed)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir, tmp_path_factory) -> Path:
    from trainers.reward_model import RewardModel
    out = tmp_path_factory.mktemp("resume_rm") / "rm"
    torch.manual_seed(3)
    rm, tok, _ = RewardModel.from_backbone(str(tiny_model_dir), clip=5.0)
    rm.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _cmd(model, rm, prompts, out, *extra):
    return [sys.executable, "-m", "harness.cli", "ppo", "--model", str(model), "--reward-model", str(rm),
            "--prompts", str(prompts), "--out", str(out), "--steps", "6", "--batch-size", "4",
            "--mini-batch-size", "2", "--ppo-epochs", "2", "--max-new-tokens", "6", "--lr", "1e-3",
            "--critic-lr", "1e-3", "--adaptive-kl", "--target-kl", "0.01", "--save-every", "2", "--seed", "7",
            *extra]


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DS_ACCELERATOR="cpu",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):  # a fresh single-rank process
        env.pop(k, None)
    return env


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


def _without_times(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rows]


def test_kill_9_then_resume_matches_uninterrupted_run(tiny_model_dir, rm_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Tell me about {i} cats."}) + "\n"
                               for i in range(7)))
    full, killed = tmp_path / "full", tmp_path / "killed"

    t0 = time.time()
    r = subprocess.run(_cmd(tiny_model_dir, rm_dir, prompts, full), env=_env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    t_full = time.time() - t0

    proc = subprocess.Popen(_cmd(tiny_model_dir, rm_dir, prompts, killed), env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "checkpoints" / "latest"
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if latest.exists() and latest.read_text().strip() == "step_2":
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    steps_at_kill = [row["step"] for row in _rows(killed)]
    assert steps_at_kill[:2] == [1, 2] and len(steps_at_kill) < 6

    r = subprocess.run(_cmd(tiny_model_dir, rm_dir, prompts, killed, "--resume"), env=_env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]

    a, b = _rows(full), _rows(killed)
    assert [x["step"] for x in b] == [1, 2, 3, 4, 5, 6]  # rows after the checkpoint rewritten, no duplicates
    assert _without_times(b) == _without_times(a)       # same seed, same CPU maths: identical numbers
    from transformers import AutoModelForCausalLM
    wa = AutoModelForCausalLM.from_pretrained(full / "final").state_dict()
    wb = AutoModelForCausalLM.from_pretrained(killed / "final").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (killed / "checkpoints" / "latest").read_text().strip() == "step_6"
    assert not list((killed / "checkpoints").glob(".tmp_*"))
    print(f"uninterrupted run: {t_full:.1f}s; killed after steps {steps_at_kill}")
