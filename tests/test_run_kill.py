"""`kill -9` of `hrlaif run` during labelling, reward model, PPO and evaluation in turn, the
labelling and evaluation kills after partial work is on disk; each rerun with --resume finishes,
reuses every stage before the killed one, continues the killed stage where it can (labels from
labels.jsonl, PPO from its last checkpoint) and sends no judgement again that was answered before
the kill. Then kill -9 of the judge server during evaluation and during red teaming: the run stops
with a one-line error and exit 2, finished work stays, and the rerun repeats none of it.

Tiny model; the judge is tests/fake_llama_server.py in its own process (a scripted OpenAI-compatible
server, 0.3 s a request), so it can be killed and restarted at the same URL: no llama.cpp."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hrlaif.harness.pipeline import STAGES
from hrlaif.judges.server import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
FAKE_SERVER = Path(__file__).with_name("fake_llama_server.py")


class JudgeProcess:
    """The run's judge: fake_llama_server.py on a fixed port (the URL is part of every judging
    stage's fingerprint, so a restarted judge must answer at the same one)."""

    def __init__(self, root: Path, delay_s: float):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.file = root / "answered.txt"  # one hash per answered request, in order, across restarts
        self.log = root / "judge.log"
        self.env = dict(os.environ, FAKE_LLAMA_DELAY=str(delay_s), FAKE_LLAMA_ANSWERED=str(self.file),
                        FAKE_LLAMA_OTHER="Yes")  # satisfaction checks: "Yes"
        self.env.pop("FAKE_LLAMA_CRASH_ON", None)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "JudgeProcess":
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([sys.executable, str(FAKE_SERVER), "--port", str(self.port)], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "/models", timeout=1).read()
                return self
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()[-2000:]
                time.sleep(0.05)
        raise AssertionError("the fake judge did not come up")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def answered(self) -> list[str]:
        return self.file.read_text().split() if self.file.exists() else []


def _repeated(before: list[str], after: list[str]) -> set[str]:
    """Requests answered before a kill and sent again after it. Only the last one before the kill
    may repeat: it was in flight (or its answer not yet cached) when the client died."""
    again = set(before) & set(after)
    assert again <= set(before[-1:]), f"{len(again)} finished judgements were sent again"
    return again


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
        return [sys.executable, "-m", "hrlaif.harness.cli", "run", str(self.cfg), "--out", str(self.out), *extra]

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
        deadline = time.time() + 1200  # generous: a busy shared runner is slow
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
        r = subprocess.run(self._cmd(*extra), env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
        (self.logs / f"run{self.n}.log").write_text(r.stdout + r.stderr)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        assert "run finished" in r.stdout
        return r.stdout

    def judge_dies_when(self, ready, judge: JudgeProcess, *extra) -> tuple[int, str, str]:
        """Start `hrlaif run`, kill -9 the judge as soon as `ready()` holds; (exit code, stdout, stderr)."""
        self.n += 1
        proc = subprocess.Popen(self._cmd(*extra), env=self.env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 1200  # generous: a busy shared runner is slow
        try:
            while proc.poll() is None and time.time() < deadline and not ready():
                time.sleep(0.01)
            assert proc.poll() is None, f"run {self.n} ended before the judge was killed"
            judge.kill()
            out, err = proc.communicate(timeout=1200)
        finally:
            if proc.poll() is None:
                proc.kill()
        (self.logs / f"run{self.n}.log").write_text(out + err)
        return proc.returncode, out, err

    def log(self, n: int) -> str:
        return (self.logs / f"run{n}.log").read_text()

    def newer(self, path: Path, stage: str) -> bool:
        """`path` exists and was written after the stage's current manifest (not left from an earlier run)."""
        try:
            return path.stat().st_mtime_ns >= (self.out / stage / "manifest.json").stat().st_mtime_ns
        except FileNotFoundError:
            return False

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


def _one_line_judge_error(code: int, err: str) -> str:
    assert code == 2, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("hrlaif run: error:") and "judge" in last, err[-2000:]
    return last


@pytest.mark.timeout(3600)  # minutes on a quiet 2-core host; a starved shared one takes far longer
def test_kill_9_in_each_stage_then_resume(tiny_model_dir, tmp_path):
    t0 = time.time()
    # A slow judge (0.3 s a call, one worker) keeps labelling and evaluation long enough to be killed mid-way.
    judge = JudgeProcess(tmp_path, delay_s=0.3).start()
    try:
        _scenario(tiny_model_dir, tmp_path, judge)
    finally:
        if judge.proc.poll() is None:
            judge.kill()
    print(f"kill/resume scenario: {time.time() - t0:.0f}s")


def _scenario(tiny_model_dir, tmp_path, judge: JudgeProcess) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"""
model: {tiny_model_dir}
seed: 3
judge: {{url: "{judge.url}", model: fake, key_env: null, workers: 1, retries: 1, backoff: 0.1}}
sft: {{max_steps: 2, batch_size: 2, max_len: 64}}
sample: {{limit: 6, k: 2, max_new_tokens: 8, batch_size: 6}}
label: {{hh_limit: 0}}
redteam: {{limit: 2, max_new_tokens: 8}}
reward_model: {{epochs: 1, max_len: 64, heldout_frac: 0.34, groups_per_step: 2}}
ppo: {{steps: 5, batch_size: 2, mini_batch_size: 2, max_new_tokens: 8, save_every: 1, drift_every: 0,
       train_layers: 0}}
eval: {{benchmarks: [mmlu, satisfaction, gsm8k], limit: 3, max_gen_toks: {{gsm8k: 8, satisfaction: 8}}}}
""")
    (tmp_path / "logs").mkdir()
    cache = tmp_path / "cache"
    run = Run(cfg, tmp_path / "run", _env(cache), tmp_path / "logs")
    labels = run.out / "label_basic" / "labels.jsonl"

    # 1. killed while labelling (some rows on disk); the rerun continues the labels, runs to the end
    run.kill_when(lambda: run.running("label_basic") and labels.exists()
                  and len(labels.read_text().splitlines()) >= 1)
    assert run.running("label_basic")
    kept = len(labels.read_text().splitlines())
    time.sleep(0.6)  # a request in flight at the kill is still answered (and recorded) by the judge
    before, answered = run.manifests(), judge.answered()
    out = run.finish("--resume")
    _check_rerun(run, out, "label_basic", before)
    assert "label_basic  was interrupted: continuing from its partial state" in out
    summary = json.loads((run.out / "label_basic" / "summary.json").read_text())
    assert summary["skipped_already_labelled"] == kept and summary["labelling"]["prompts"] == 6 - kept
    assert len(labels.read_text().splitlines()) == 6
    # the rerun's labelling requests (the first it sent; the judge audit's deliberate re-asks come later)
    labelling = judge.answered()[len(answered):][:summary["labelling"]["http_calls"]]
    assert labelling
    _repeated(answered, labelling)

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
    run.kill_when(lambda: run.running("ppo_rlaif") and run.newer(ppo / "checkpoints" / "latest", "ppo_rlaif"),
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

    # 4. --from eval_sft with empty caches, killed while the judge grades satisfaction (MMLU's samples on
    # disk, some satisfaction verdicts answered): it restarts; nothing answered is asked again
    shutil.rmtree(cache / "judge"), shutil.rmtree(cache / "outputs")
    before, n0 = run.manifests(), len(judge.answered())
    samples = run.out / "eval_sft" / "samples"
    run.kill_when(lambda: run.running("eval_sft") and run.newer(samples / "mmlu.jsonl", "eval_sft")
                  and len(judge.answered()) > n0, "--from", "eval_sft")
    assert run.running("eval_sft")
    time.sleep(0.6)
    answered = judge.answered()
    out = run.finish("--resume")
    _check_rerun(run, out, "eval_sft", before)
    assert "eval_sft     was interrupted: restarting from scratch" in out
    for stage in ("eval_rlaif", "eval_hrlaif"):
        assert f"{stage:<12} skipped (unchanged)" in out and run.manifests()[stage] == before[stage]
    assert (run.out / "report" / "report.md").exists()
    _repeated(answered[n0:], judge.answered()[len(answered):])  # only what was not graded before the kill
    res = json.loads((run.out / "eval_sft" / "results.json").read_text())
    assert res["benchmarks"]["mmlu"]["cached"] and res["benchmarks"]["satisfaction"]["n"] == 3

    # 5. the judge killed during evaluation (MMLU done, satisfaction next): one-line error, exit 2; MMLU stays
    shutil.rmtree(cache / "judge"), shutil.rmtree(cache / "outputs")
    before, n0 = run.manifests(), len(judge.answered())
    mmlu_done = lambda: run.running("eval_sft") and run.newer(samples / "mmlu.jsonl", "eval_sft")  # noqa: E731
    code, out, err = run.judge_dies_when(mmlu_done, judge, "--from", "eval_sft")
    _one_line_judge_error(code, err)
    assert run.running("eval_sft") and "mmlu" in json.loads((run.out / "eval_sft" / "results.json").read_text())[
        "benchmarks"]
    assert (samples / "mmlu.jsonl").exists() and not (samples / "satisfaction.jsonl").exists()
    assert {s: m for s, m in run.manifests().items() if s != "eval_sft"} == \
        {s: m for s, m in before.items() if s != "eval_sft"}  # every other stage untouched
    answered = judge.answered()
    judge.start()
    out = run.finish("--resume")
    _check_rerun(run, out, "eval_sft", before)
    _repeated(answered[n0:], judge.answered()[len(answered):])

    # 6. the judge killed during red teaming (--only: the later stages keep their records)
    shutil.rmtree(cache / "judge")
    before, n0 = run.manifests(), len(judge.answered())
    code, out, err = run.judge_dies_when(lambda: run.running("redteam") and len(judge.answered()) > n0,
                                         judge, "--from", "redteam", "--only", "redteam")
    _one_line_judge_error(code, err)
    assert run.running("redteam")
    assert {s: m for s, m in run.manifests().items() if s != "redteam"} == \
        {s: m for s, m in before.items() if s != "redteam"}
    answered = judge.answered()
    judge.start()
    r = subprocess.run(run._cmd("--only", "redteam", "--resume"), env=run.env, cwd=ROOT, capture_output=True,
                       text=True, timeout=1200)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "redteam      was interrupted: restarting from scratch" in r.stdout
    assert run.manifest("redteam")["status"] == "done"
    again = judge.answered()[len(answered):]
    assert again
    _repeated(answered[n0:], again)
