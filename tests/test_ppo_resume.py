"""`kill -9` mid-run (also in the middle of a checkpoint write), `--resume`, and the metrics
equal an uninterrupted run's (CPU, fixed seed). Randomness is derived from (seed, step), so
equal metrics alone would not tell a resume from a restart: every metrics row names the
session (process) that computed it, and sessions.jsonl records where each session started."""
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
def rm_dir(tiny_rm_dir) -> Path:
    return tiny_rm_dir


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("resume_prompts") / "prompts.jsonl"
    p.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Tell me about {i} cats."}) + "\n" for i in range(7)))
    return p


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, rm_dir, prompts, tmp_path_factory) -> Path:
    full = tmp_path_factory.mktemp("resume_full") / "full"
    t0 = time.time()
    r = subprocess.run(_cmd(tiny_model_dir, rm_dir, prompts, full), env=_env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    print(f"uninterrupted run: {time.time() - t0:.1f}s")
    return full


def _cmd(model, rm, prompts, out, *extra):
    return [sys.executable, "-m", "hrlaif.harness.cli", "ppo", "--model", str(model), "--reward-model", str(rm),
            "--prompts", str(prompts), "--out", str(out), "--steps", "6", "--batch-size", "4",
            "--mini-batch-size", "2", "--ppo-epochs", "2", "--max-new-tokens", "6", "--lr", "1e-3",
            "--critic-lr", "1e-3", "--adaptive-kl", "--target-kl", "0.01", "--save-every", "2", "--seed", "7",
            "--precision", "fp32",  # identical numbers after a resume: fp32 on CPU
            "--train-layers", "1",  # a frozen block: checkpoints leave it out, the resume takes it from the base
            *extra]


def _env(**extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DS_ACCELERATOR="cpu",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT), **extra)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "HRLAIF_FAULT"):  # a fresh single-rank process
        env.pop(k, None)
    env.update(extra)
    return env


def _rows(out: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(x) for x in (out / name).read_text().splitlines() if x.strip()]


def _numbers(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time_") and k != "session"} for r in rows]


def _resume_and_check(model, rm, prompts, out: Path, full: Path, resumed_at: int) -> None:
    """--resume continues at `resumed_at` in a new session and ends where the uninterrupted run did."""
    killed_session = _rows(out, "sessions.jsonl")[-1]["session"]
    r = subprocess.run(_cmd(model, rm, prompts, out, "--resume"), env=_env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resumed_from_step {resumed_at}" in r.stdout

    sessions = _rows(out, "sessions.jsonl")
    assert [s["resumed_from_step"] for s in sessions] == [None, resumed_at]
    assert sessions[1]["checkpoint"].endswith(f"step_{resumed_at}")
    resumed_session = sessions[1]["session"]
    assert sessions[0]["session"] == killed_session != resumed_session

    a, b = _rows(full), _rows(out)
    assert [x["step"] for x in b] == [1, 2, 3, 4, 5, 6]  # rows after the checkpoint rewritten, no duplicates
    # steps up to the checkpoint were computed by the killed process, the rest by the resumed one
    assert [x["session"] for x in b] == [killed_session] * resumed_at + [resumed_session] * (6 - resumed_at)
    assert _numbers(b) == _numbers(a)  # same seed, same CPU maths: identical numbers
    from transformers import AutoModelForCausalLM
    wa = AutoModelForCausalLM.from_pretrained(full / "final").state_dict()
    wb = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_6"
    state = json.loads((out / "checkpoints" / "step_6" / "state.json").read_text())
    assert set(state["trained_params"]) == {"actor", "critic"}  # saved without the frozen parameters
    assert not list((out / "checkpoints").glob(".tmp_*"))


def test_kill_9_then_resume_matches_uninterrupted_run(tiny_model_dir, rm_dir, prompts, uninterrupted, tmp_path):
    killed = tmp_path / "killed"
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
    assert latest.read_text().strip() == "step_2"
    _resume_and_check(tiny_model_dir, rm_dir, prompts, killed, uninterrupted, resumed_at=2)
    print(f"killed after steps {steps_at_kill}")


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(tiny_model_dir, rm_dir, prompts, uninterrupted,
                                                               tmp_path):
    out = tmp_path / "torn"
    r = subprocess.run(_cmd(tiny_model_dir, rm_dir, prompts, out), cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env=_env(HRLAIF_FAULT="kill_in_checkpoint_write:4"))
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    ck = out / "checkpoints"
    # step 4 died half written: the actor's DeepSpeed state is there, the rest is not
    assert (ck / ".tmp_step_4" / "ds_actor").is_dir()
    assert not (ck / ".tmp_step_4" / "ds_critic").exists() and not (ck / ".tmp_step_4" / "state.json").exists()
    assert not (ck / "step_4").exists()
    assert (ck / "latest").read_text().strip() == "step_2" and (ck / "step_2" / "state.json").exists()
    assert [row["step"] for row in _rows(out)] == [1, 2, 3, 4]
    _resume_and_check(tiny_model_dir, rm_dir, prompts, out, uninterrupted, resumed_at=2)
