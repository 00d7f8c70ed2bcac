"""`kill -9` of `hrlaif run` during labelling, reward model, PPO and evaluation in turn; each
rerun with --resume finishes, reuses every stage before the killed one and continues the
killed stage where it can (labels from labels.jsonl, PPO from its last checkpoint).

Tiny model, scripted judge (tests/fake_judge.py): no llama.cpp server."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.pipeline import STAGES
from tests.fake_judge import FakeJudge

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _env(cache: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DS_ACCELERATOR="cpu",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT), HRLAIF_CACHE=str(cache))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "HRLAIF_FAULT"):
        env.pop(k, None)
    return env


class Run:
    def __init__(self, cfg: Path, out: Path, env: dict, logs: Path):
        self.cfg, self.out, self.env, self.logs, self.n = cfg, out, env, logs, 0

    def _cmd(self, *extra):
        return [sys.executable, "-m", "harness.cli", "run", str(self.cfg), "--out", str(self.out), *extra]

    def manifest(self, stage: str) -> dict | None:
        p = self.out / stage / "manifest.json"
        try:
            return json.loads(p.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def manifests(self) -> dict[str, str]:
        return {s: (self.out / s / "manifest.json").read_text() for s in STAGES
                if (self.out / s / "manifest.json").exists()}

    def kill_when(self, ready, *extra) -> None:
        """Start `hrlaif run`, SIGKILL it as soon as `ready()` holds."""
        self.n += 1
        log = open(self.logs / f"run{self.n}.log", "w")
        proc = subprocess.Popen(self._cmd(*extra), env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        try:
            while proc.poll() is None and time.time() < deadline and not ready():
                time.sleep(0.01)
            assert proc.poll() is None, f"run {self.n} ended before the kill:\n" + self.log(self.n)[-3000:]
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()

    def finish(self, *extra) -> str:
        self.n += 1
        r = subprocess.run(self._cmd(*extra), env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        (self.logs / f"run{self.n}.log").write_text(r.stdout + r.stderr)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        assert "run finished" in r.stdout
        return r.stdout

    def log(self, n: int) -> str:
        return (self.logs / f"run{n}.log").read_text()

    def running(self, stage: str) -> bool:
        m = self.manifest(stage)
        return m is not None and m["status"] == "running"


def _check_rerun(run: Run, stdout: str, killed: str, before: dict[str, str]) -> None:
    """Every stage before `killed` was reused untouched; all stages finished."""
    for stage in STAGES[:STAGES.index(killed)]:
        assert f"{stage:<12} skipped (unchanged)" in stdout, stage
        assert run.manifests()[stage] == before[stage], stage
    assert f"{killed:<12} running" in stdout
    assert all(run.manifest(s)["status"] == "done" for s in STAGES)


def test_kill_9_in_each_stage_then_resume(tiny_model_dir, tmp_path):
    t0 = time.time()
    # A slow judge (0.3 s a call, one worker) keeps labelling long enough to be killed mid-way.
    with FakeJudge(mode="hang", hang_s=0.3) as fj:
        cfg = tmp_path / "tiny.yaml"
        cfg.write_text(f"""
model: {tiny_model_dir}
seed: 3
judge: {{url: "{fj.url}", model: fake, key_env: null, workers: 1}}
sft: {{max_steps: 2, batch_size: 2, max_len: 64}}
sample: {{limit: 6, k: 2, max_new_tokens: 8, batch_size: 6}}
label: {{hh_limit: 0}}
redteam: {{limit: 2, max_new_tokens: 8}}
reward_model: {{epochs: 1, max_len: 64, heldout_frac: 0.34, groups_per_step: 2}}
ppo: {{steps: 5, batch_size: 2, mini_batch_size: 2, max_new_tokens: 8, save_every: 1, drift_every: 0,
       train_layers: 0}}
eval: {{benchmarks: [mmlu, gsm8k], limit: 3, max_gen_toks: {{gsm8k: 8}}}}
""")
        (tmp_path / "logs").mkdir()
        run = Run(cfg, tmp_path / "run", _env(tmp_path / "cache"), tmp_path / "logs")
        labels = run.out / "label_basic" / "labels.jsonl"

        # 1. killed while labelling (some rows on disk); the rerun continues the labels, runs to the end
        run.kill_when(lambda: run.running("label_basic") and labels.exists()
                      and len(labels.read_text().splitlines()) >= 2)
        assert run.running("label_basic")
        kept = len(labels.read_text().splitlines())
        before = run.manifests()
        out = run.finish("--resume")
        _check_rerun(run, out, "label_basic", before)
        assert "label_basic  was interrupted: continuing from its partial state" in out
        summary = json.loads((run.out / "label_basic" / "summary.json").read_text())
        assert summary["skipped_already_labelled"] == kept and summary["labelling"]["prompts"] == 6 - kept
        assert len(labels.read_text().splitlines()) == 6

        # 2. --from rm_basic, killed while training the reward model: it restarts (no partial state)
        before = run.manifests()
        run.kill_when(lambda: run.running("rm_basic"), "--from", "rm_basic")
        out = run.finish("--resume")
        _check_rerun(run, out, "rm_basic", before)
        assert "rm_basic     was interrupted: restarting from scratch" in out
        # the reward model re-ran, so the PPO that consumes it re-runs; the other variant is reused
        assert "ppo_rlaif    config or inputs changed" in out and "ppo_hrlaif   skipped (unchanged)" in out

        # 3. --from ppo_rlaif, killed after its first checkpoint: continues from the checkpoint
        before = run.manifests()
        ppo = run.out / "ppo_rlaif"
        run.kill_when(lambda: run.running("ppo_rlaif") and (ppo / "checkpoints" / "latest").exists(),
                      "--from", "ppo_rlaif")
        assert run.running("ppo_rlaif")
        at = int((ppo / "checkpoints" / "latest").read_text().strip().split("_")[1])
        killed_session = json.loads((ppo / "sessions.jsonl").read_text().splitlines()[-1])["session"]
        out = run.finish("--resume")
        _check_rerun(run, out, "ppo_rlaif", before)
        assert "ppo_rlaif    was interrupted: continuing from its partial state" in out
        assert f"resumed_from_step {at}" in out
        sessions = [json.loads(x) for x in (ppo / "sessions.jsonl").read_text().splitlines()]
        assert [s["resumed_from_step"] for s in sessions] == [None, at]
        rows = [json.loads(x) for x in (ppo / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
        assert [r["session"] == killed_session for r in rows] == [s <= at for s in range(1, 6)]
        assert "ppo_hrlaif   skipped (unchanged)" in out and "eval_sft     skipped (unchanged)" in out

        # 4. --from eval_sft, killed while evaluating: it restarts; the other evaluations are reused
        before = run.manifests()
        run.kill_when(lambda: run.running("eval_sft"), "--from", "eval_sft")
        out = run.finish("--resume")
        _check_rerun(run, out, "eval_sft", before)
        assert "eval_sft     was interrupted: restarting from scratch" in out
        for stage in ("eval_rlaif", "eval_hrlaif"):
            assert f"{stage:<12} skipped (unchanged)" in out and run.manifests()[stage] == before[stage]
        assert (run.out / "report" / "report.md").exists()
    print(f"kill/resume scenario: {time.time() - t0:.0f}s over {run.n} `hrlaif run` processes")
