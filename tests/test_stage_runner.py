"""StageRunner rerun rules with fake stage functions (no models): reuse what finished, continue an
interrupted resumable stage only with --resume, wipe on interruption without it or on a changed
fingerprint, --from and --only."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from hrlaif.core.errors import UserError
from hrlaif.harness.config import RunConfig
from hrlaif.harness.pipeline import StageRunner, _run_lock


class Killed(BaseException):
    """Stands in for kill -9: the stage stops with its manifest still 'running'."""


@dataclass
class Knobs:
    lr: float = 0.1


def _labeller(out: Path, calls: list, die_after: int | None = None, n: int = 4):
    """A resumable fake stage: appends one row per item, skipping items already on disk."""
    def fn():
        f = out / "rows.txt"
        have = f.read_text().split() if f.exists() else []
        calls.append(list(have))
        for i in range(len(have), n):
            if die_after is not None and i == die_after:
                raise Killed
            with open(f, "a") as h:
                h.write(f"{i}\n")
        return f
    return fn


def _manifest(run: Path, name: str) -> dict:
    return json.loads((run / name / "manifest.json").read_text())


def _runner(run: Path, **kw) -> StageRunner:
    return StageRunner(RunConfig(), run, **kw)


def test_finished_stage_is_reused_with_or_without_resume(tmp_path, capsys):
    calls = []
    out = tmp_path / "label_basic"
    _runner(tmp_path).stage("label_basic", _labeller(out, calls), Knobs(), "samples", resumable=True)
    before = (out / "manifest.json").read_text()
    for resume in (False, True):
        capsys.readouterr()
        result = _runner(tmp_path, resume=resume).stage("label_basic", _labeller(out, calls), Knobs(), "samples",
                                                        resumable=True)
        assert "skipped (unchanged)" in capsys.readouterr().out
        assert result == out / "rows.txt"
    assert len(calls) == 1 and (out / "manifest.json").read_text() == before


def test_interrupted_stage_restarts_without_resume_and_continues_with_it(tmp_path, capsys):
    out = tmp_path / "label_basic"
    calls = []
    with pytest.raises(Killed):
        _runner(tmp_path).stage("label_basic", _labeller(out, calls, die_after=2), Knobs(), "s", resumable=True)
    assert _manifest(tmp_path, "label_basic")["status"] == "running"
    assert (out / "rows.txt").read_text().split() == ["0", "1"]

    # without --resume: wiped, restarted from scratch (and killed again at the same place)
    capsys.readouterr()
    with pytest.raises(Killed):
        _runner(tmp_path).stage("label_basic", _labeller(out, calls, die_after=2), Knobs(), "s", resumable=True)
    assert "restarting from scratch (--resume would continue it)" in capsys.readouterr().out
    assert calls[-1] == []

    # with --resume: continues from the two rows on disk
    _runner(tmp_path, resume=True).stage("label_basic", _labeller(out, calls), Knobs(), "s", resumable=True)
    assert "continuing from its partial state" in capsys.readouterr().out
    assert calls[-1] == ["0", "1"]
    assert (out / "rows.txt").read_text().split() == ["0", "1", "2", "3"]
    assert _manifest(tmp_path, "label_basic")["status"] == "done"


def test_interrupted_stage_that_cannot_continue_restarts_even_with_resume(tmp_path, capsys):
    out = tmp_path / "rm_basic"
    calls = []
    with pytest.raises(Killed):
        _runner(tmp_path).stage("rm_basic", _labeller(out, calls, die_after=1), Knobs(), "labels")
    capsys.readouterr()
    _runner(tmp_path, resume=True).stage("rm_basic", _labeller(out, calls), Knobs(), "labels")
    assert "was interrupted: restarting from scratch" in capsys.readouterr().out
    assert calls[-1] == []


def test_changed_config_or_input_wipes_even_with_resume(tmp_path, capsys):
    out = tmp_path / "label_basic"
    calls = []
    with pytest.raises(Killed):
        _runner(tmp_path).stage("label_basic", _labeller(out, calls, die_after=2), Knobs(), "s", resumable=True)
    capsys.readouterr()
    # interrupted, then the config changes: the partial rows are not reused
    _runner(tmp_path, resume=True).stage("label_basic", _labeller(out, calls), Knobs(lr=0.2), "s", resumable=True)
    assert "config or inputs changed: restarting from scratch" in capsys.readouterr().out
    assert calls[-1] == []
    # finished, then an input changes: restarted from scratch as well
    _runner(tmp_path, resume=True).stage("label_basic", _labeller(out, calls), Knobs(lr=0.2), "other-samples",
                                         resumable=True)
    assert "config or inputs changed" in capsys.readouterr().out
    assert calls[-1] == [] and len(calls) == 3


def test_a_stage_that_reran_invalidates_its_consumers(tmp_path, capsys):
    def two_stages(runner):
        up = runner.stage("sft", lambda: _write(tmp_path / "sft" / "model.txt"), Knobs())
        runner.stage("sample", lambda: _write(tmp_path / "sample" / "samples.txt"), Knobs(), up)

    two_stages(_runner(tmp_path))
    capsys.readouterr()
    two_stages(_runner(tmp_path))
    assert capsys.readouterr().out.count("skipped (unchanged)") == 2
    # sft forced to re-run, then the run stops (killed) before `sample` re-runs: the next plain
    # rerun must not reuse samples made from the old model
    _runner(tmp_path, from_stage="sft").stage("sft", lambda: _write(tmp_path / "sft" / "model.txt"), Knobs())
    capsys.readouterr()
    two_stages(_runner(tmp_path, resume=True))
    out = capsys.readouterr().out
    assert "sft          skipped" in out and "sample       config or inputs changed" in out


def test_from_reruns_later_stages_and_only_runs_one(tmp_path, capsys):
    def chain(runner):
        a = runner.stage("sft", lambda: _write(tmp_path / "sft" / "m.txt"), Knobs())
        b = runner.stage("sample", lambda: _write(tmp_path / "sample" / "s.txt"), Knobs(), a)
        runner.stage("label_basic", lambda: _write(tmp_path / "label_basic" / "l.txt"), Knobs(), b)

    with pytest.raises(UserError, match="stage sft has not finished"):
        chain(_runner(tmp_path, only="sample"))
    chain(_runner(tmp_path))
    capsys.readouterr()
    chain(_runner(tmp_path, from_stage="sample"))
    out = capsys.readouterr().out
    assert "sft          skipped" in out and "re-running (--from sample)" in out
    assert "label_basic  running" in out

    # --only stops after its stage: later unfinished stages are neither run nor required
    import shutil
    shutil.rmtree(tmp_path / "label_basic")
    from hrlaif.harness.pipeline import _OnlyDone
    with pytest.raises(_OnlyDone) as e:
        chain(_runner(tmp_path, only="sample"))
    assert e.value.result == tmp_path / "sample" / "s.txt"
    assert not (tmp_path / "label_basic").exists()


def test_one_run_per_directory(tmp_path):
    with _run_lock(tmp_path):
        with pytest.raises(UserError, match="another `hrlaif run` is using"):
            with _run_lock(tmp_path):
                pass
    with _run_lock(tmp_path):  # released when the first run ends
        pass


def _write(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    return path


def test_ppo_stage_restarts_cleanly_on_a_checkpoint_of_other_settings(tmp_path, capsys):
    """A checkpoint written with other training settings is not resumed (that used to exit 2)."""
    from hrlaif.harness.stages import clear_stage_dir as _clear_stage_dir
    from hrlaif.harness.stages import ppo_can_continue as _ppo_can_continue
    from hrlaif.trainers.ppo import PPOConfig

    cfg = PPOConfig(model="m", reward_model="rm", out=str(tmp_path), lr=1e-5)
    assert not _ppo_can_continue(cfg, tmp_path)  # nothing there yet
    ck = tmp_path / "checkpoints"
    (ck / "step_2").mkdir(parents=True)
    (ck / "latest").write_text("step_2\n")
    (ck / "step_2" / "state.json").write_text(json.dumps({"step": 2, "config_hash": cfg.trajectory_hash()}))
    assert _ppo_can_continue(cfg, tmp_path)
    other = PPOConfig(model="m", reward_model="rm", out=str(tmp_path), lr=3e-5)
    assert not _ppo_can_continue(other, tmp_path)
    assert "other training settings; starting at step 0" in capsys.readouterr().out
    (ck / "latest").write_text("step_4\n")  # names a checkpoint that is not there
    assert not _ppo_can_continue(cfg, tmp_path)

    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    _clear_stage_dir(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
