"""`hrlaif run`: runs the stage records of hrlaif/harness/stages.py in order, each in RUN/<stage>/ next to
a manifest (status, fingerprint, resolved config, inputs, wall time, versions).

Re-running on the same RUN directory (the manifest's fingerprint = the stage's resolved config,
hrlaif/harness/stages.py, and the identity of the outputs it consumes):
  * a stage that finished with the same fingerprint is reused (a cache, with or without
    --resume); a stage that re-ran gives its consumers new inputs, so they re-run too;
  * a stage that was interrupted (manifest status "running": crash, `kill -9`) continues from
    its own partial state only with --resume, if it has any (`resumable`: labelling keeps its
    appended labels.jsonl rows, PPO its last checkpoint); otherwise it is wiped and restarts;
  * a stage whose fingerprint changed (finished or interrupted) is wiped and restarts;
  * --from STAGE re-runs STAGE and every later stage; --only STAGE runs just that one.
"""
from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hrlaif.core.errors import UserError
from hrlaif.core.layout import RunLayout, StageDir
from hrlaif.core.store import read_json, stable_hash, write_json
from hrlaif.harness.config import RunConfig, to_dict
from hrlaif.harness.stages import STAGES, VARIANTS, Stage, View, instances, plain, stage_names  # noqa: F401


def run_pipeline(cfg: RunConfig, run_dir: Path, *, resume: bool = False, from_stage: str | None = None,
                 only: str | None = None, records: tuple[Stage, ...] | None = None) -> Path:
    run_dir = Path(run_dir)
    runner = StageRunner(cfg, run_dir, resume=resume, from_stage=from_stage, only=only,
                         names=[i.name for i in instances(cfg, records)])
    with _run_lock(run_dir):
        try:
            rep = run_stages(cfg, runner, records)
        except _OnlyDone as done:
            return done.result
    runner.summary(rep)
    return rep


def run_stages(cfg: RunConfig, runner: StageRunner, records: tuple[Stage, ...] | None = None) -> Path:
    """Every stage instance in order; a disabled one (`when`) yields no output to its consumers."""
    outputs: dict[str, Path | None] = {}
    result = None
    for inst in instances(cfg, records):
        if not inst.enabled(cfg):
            outputs[inst.name] = None
            continue
        resolved = inst.resolve(cfg)
        ins = [outputs.get(n) if n is not None else None for n in inst.inputs]
        out = runner.dir(inst.name)
        view = View(inst.name, resolved)
        fn = inst.stage.fn
        result = outputs[inst.name] = runner.stage(
            inst.name, lambda fn=fn, view=view, out=out, ins=ins: fn(view, out, *ins), plain(resolved), *ins,
            resumable=inst.stage.resumable, always=inst.stage.always)
    return result


class _OnlyDone(Exception):
    """--only STAGE finished: the later stages are not visited."""

    def __init__(self, result: Path | None):
        super().__init__(str(result))
        self.result = result


@dataclass
class StageRunner:
    """Runs, reuses, continues or wipes each stage (rules in the module docstring)."""

    cfg: RunConfig
    run_dir: Path
    resume: bool = False
    from_stage: str | None = None
    only: str | None = None
    names: list[str] | None = None  # the run's stages in order (default: those of cfg)

    def __post_init__(self):
        self.names = self.names or stage_names(self.cfg)
        for s in (self.from_stage, self.only):
            if s is not None and s not in self.names:
                raise UserError(f"unknown stage {s!r} (stages: {', '.join(self.names)})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()
        self.timings: dict[str, float] = {}
        self.output_ids: dict[str, str] = {}  # output path -> id of the stage run that wrote it
        self.only_result: Path | None = None

    def dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def _forced(self, name: str) -> bool:
        return self.from_stage is not None and self.names.index(name) >= self.names.index(self.from_stage)

    def _selected(self, name: str) -> bool:
        return self.only is None or self.only == name

    def _say(self, name: str, text: str) -> None:
        print(f"[{self.names.index(name) + 1:2d}/{len(self.names)}] {name:<12} {text}", flush=True)

    def stage(self, name: str, fn: Callable[[], Path], section, *inputs, resumable: bool = False,
              always: bool = False) -> Path:
        """Run `fn` unless RUN/<name>/manifest.json says it finished with the same fingerprint.

        resumable: `fn` continues from the partial state it finds in RUN/<name>/ (kept only for
        an interrupted run of the same fingerprint under --resume; otherwise the dir is wiped).
        always: rebuilt on every run, in place (the report)."""
        if self.only is not None and self.names.index(name) > self.names.index(self.only):
            raise _OnlyDone(self.only_result)
        out = self.dir(name)
        config_hash = stable_hash(plain(section))
        # An input is known by the run that produced it: a stage that re-ran invalidates its consumers.
        input_ids = {str(x): self.output_ids.get(str(x), str(x)) for x in inputs if x is not None}
        fingerprint = stable_hash([name, config_hash, input_ids])
        manifest_path = StageDir(out).manifest
        old = read_json(manifest_path) if manifest_path.exists() else None
        status = old.get("status") if old else None
        same = old is not None and old.get("fingerprint") == fingerprint
        if not self._selected(name):
            if status != "done":
                raise UserError(f"--only {self.only}: stage {name} has not finished; run it first")
            return self._reuse(name, old)
        if status == "done" and same and not self._forced(name) and not always:
            return self._reuse(name, old)

        interrupted = status is not None and status != "done" and same
        keep = interrupted and resumable and self.resume
        if keep:
            self._say(name, "was interrupted: continuing from its partial state (--resume)")
        elif interrupted and resumable:
            self._say(name, "was interrupted: restarting from scratch (--resume would continue it)")
        elif interrupted:
            self._say(name, "was interrupted: restarting from scratch")
        elif old is not None and not same:
            self._say(name, "config or inputs changed: restarting from scratch")
        elif status == "done" and self._forced(name):
            self._say(name, f"re-running (--from {self.from_stage})")
        if out.exists() and not keep and not always:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        self._say(name, "running ...")
        write_json(manifest_path, {"stage": name, "status": "running", "fingerprint": fingerprint,
                                   "config_hash": config_hash, "inputs": input_ids,
                                   "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        t = time.time()
        result = Path(fn())
        wall = time.time() - t
        output_id = uuid.uuid4().hex[:16]
        write_json(manifest_path, {
            "stage": name, "status": "done", "fingerprint": fingerprint, "config_hash": config_hash,
            "config": plain(section), "inputs": input_ids, "output": str(result), "output_id": output_id,
            "wall_time_s": round(wall, 1), "versions": _versions(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.timings[name] = wall
        self._say(name, f"done in {wall:.0f}s -> {result}")
        return self._produced(name, result, output_id)

    def _reuse(self, name: str, old: dict) -> Path:
        self._say(name, "skipped (unchanged)")
        # Manifests from before output ids existed: the fingerprint stands in for the run.
        return self._produced(name, Path(old["output"]), old.get("output_id") or old["fingerprint"])

    def _produced(self, name: str, result: Path, output_id: str) -> Path:
        self.output_ids[str(result)] = output_id
        if name == self.only:
            self.only_result = result
        return result

    def summary(self, report_dir: Path) -> None:
        total = time.time() - self.t0
        print(f"\nrun finished in {total / 60:.1f} min; report: {report_dir / 'report.md'} "
              f"(and report.html, comparison.csv, drift_*.png)", flush=True)
        write_json(RunLayout(self.run_dir).run_summary, {"wall_time_s": round(total, 1), "stages_s": self.timings,
                                                       "report": str(report_dir), "config": to_dict(self.cfg)})


# ------------------------------------------------------------------ helpers

@contextlib.contextmanager
def _run_lock(run_dir: Path):
    """One `hrlaif run` per RUN dir: a second one would take the first's running stages for
    interrupted ones. The kernel drops the lock when its process dies, even by kill -9."""
    import fcntl

    with open(run_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `hrlaif run` is using {run_dir}; wait for it or choose another --out")
        yield


def _versions() -> dict:
    from hrlaif.evalsets.runner import versions as v
    return v()
