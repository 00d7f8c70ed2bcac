"""The HRLAIF experiment, stage by stage (read this file top to bottom):

    sft -> sample -> red teaming -> shared held-out pairs -> label (basic | hybrid + red teaming)
        -> reward model (basic | hybrid) -> PPO (RLAIF | HRLAIF) -> evaluate (SFT, RLAIF, HRLAIF)
        -> report

Both variants share the SFT model, the sampled responses, the seeds, the held-out pairs their
reward models are scored on, and the evaluation sets; they differ only in the labels (hybrid's
include the red-team pairs). Three judges: `judge` labels, `harm_judge` red-teams, `eval_judge`
grades (harness/judging.py; by default all three are the same model, which results.json records). Each stage is a function with typed inputs and its
artifacts in RUN/<stage>/, next to a manifest (status, fingerprint, inputs, wall time, versions).

Re-running on the same RUN directory (the manifest's fingerprint = the stage's config and
the identity of the outputs it consumes):
  * a stage that finished with the same fingerprint is reused (a cache, with or without
    --resume); a stage that re-ran gives its consumers new inputs, so they re-run too;
  * a stage that was interrupted (manifest status "running": crash, `kill -9`) continues from
    its own partial state only with --resume, if it has any (`resumable=`: labelling keeps its
    appended labels.jsonl rows, PPO its last checkpoint); otherwise it is wiped and restarts;
  * a stage whose fingerprint changed (finished or interrupted) is wiped and restarts;
  * --from STAGE re-runs STAGE and every later stage; --only STAGE runs just that one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from harness.config import RunConfig, to_dict
from harness.judging import heldout_stage, hh_file, redteam_stage
from core.errors import UserError
from core.store import read_json, stable_hash, write_json

STAGES = ["sft", "sample", "redteam", "heldout", "label_basic", "label_hybrid", "rm_basic", "rm_hybrid",
          "ppo_rlaif", "ppo_hrlaif", "eval_sft", "eval_rlaif", "eval_hrlaif", "report"]
VARIANTS = {"rlaif": "basic", "hrlaif": "hybrid"}  # PPO variant -> label mode


# ------------------------------------------------------------------ the stages
# Each stage runs its section of the run config with what the pipeline owns filled in
# (dataclasses.replace): model paths, the outputs of earlier stages, its output dir, the seed.

def sft(cfg: RunConfig, out: Path) -> Path:
    """Supervised fine-tuning of the base model; returns the checkpoint dir."""
    from trainers.sft import train_sft

    return Path(train_sft(replace(cfg.sft, model=cfg.model, out=str(out / "model"), seed=cfg.seed)))


def sample(cfg: RunConfig, sft_model: Path, out: Path) -> Path:
    """K responses per prompt from the SFT model: the one sample set both variants label."""
    from trainers.sampling import sample_responses

    return Path(sample_responses(replace(cfg.sample, model=str(sft_model), out=str(out / "samples.jsonl"),
                                         seed=cfg.seed)))


def label(cfg: RunConfig, samples: Path, mode: str, out: Path) -> Path:
    """basic: the judge ranks all K responses. hybrid: verify final answers first, judge only
    among correct ones, plus AI red teaming of harmful responses."""
    from trainers.feedback.label_stage import label_samples

    hh = cfg.data_dir if hh_file(cfg) else None
    label_samples(replace(cfg.label, samples=str(samples), mode=mode, out=str(out), data_dir=hh), cfg.judge,
                  cfg.harm_judge)
    return out / "labels.jsonl"


def reward_model(cfg: RunConfig, sft_model: Path, labels: Path, samples: Path, out: Path,
                 heldout: Path | None = None, redteam: Path | None = None) -> Path:
    """K-wise reward model on the partial orders: one forward per response, clipped reward. Both
    hold out the shared ids and are scored on their truth pairs; hybrid's data adds the red-team pairs."""
    from harness.judging import rm_config, rm_training_data
    from trainers.reward_model import train_reward_model

    labels, samples = rm_training_data(labels, samples, redteam, out)
    return Path(train_reward_model(rm_config(cfg, sft_model, labels, samples, heldout, out / "model")))


def ppo(cfg: RunConfig, sft_model: Path, rm: Path, out: Path) -> Path:
    """PPO of the SFT model against one reward model, logging reward-vs-benchmark drift.
    Continues from OUT/checkpoints/latest when the runner kept this stage's partial state."""
    from evalsets.runner import evaluate_in_process
    from harness.judging import gold_judge
    from trainers.ppo import train

    pcfg = replace(cfg.ppo, model=str(sft_model), reward_model=str(rm), out=str(out), seed=cfg.seed,
                   prompts=cfg.ppo.prompts or cfg.sample.prompts, drift_data_dir=cfg.data_dir)
    pcfg = replace(pcfg, resume=_ppo_can_continue(pcfg, out))
    if not pcfg.resume:
        _clear_stage_dir(out)  # a partial run without a usable checkpoint: start at step 0
    # The drift log's generation lengths and precision are the eval stage's; gold verdicts are the
    # evaluation judge's.
    with gold_judge(cfg, out) as gold_fn:
        train(pcfg, evaluate_fn=functools.partial(evaluate_in_process, max_gen_toks=dict(cfg.eval.max_gen_toks),
                                                  precision=cfg.eval.precision, judge=cfg.eval_judge),
              gold_fn=gold_fn)
    return out / "final"


def evaluate(cfg: RunConfig, model: Path, out: Path, baseline: Path | None, versus: Path | None = None) -> Path:
    """Every benchmark on one variant, graded by the evaluation judge; the win ratio is against the
    SFT model; with `versus` (RLAIF's eval dir) also the HRLAIF-vs-RLAIF head-to-head."""
    from evalsets.runner import evaluate_to_dir
    from harness.judging import eval_audit, head_to_head

    ecfg = replace(cfg.eval, model=str(model), out=str(out), data_dir=cfg.data_dir, seed=cfg.seed,
                   baseline_model=str(baseline) if baseline else None)
    evaluate_to_dir(ecfg.model, ecfg.out, ecfg, judge=cfg.eval_judge, labeller=cfg.judge)
    if versus is not None:
        head_to_head(cfg, out, versus)  # writes the judge audit with the head-to-head pairs
    else:
        eval_audit(cfg, out, baseline_dir=out.parent / "eval_sft")  # OUT/judge_audit.json (judges/audit.py)
    return out / "results.json"


def report(run_dir: Path) -> Path:
    from harness.judging import write_judge_usage
    from reports.build import build_report

    write_judge_usage(run_dir)  # the real judge counts of this run, for the report
    return Path(build_report(run_dir))


# ------------------------------------------------------------------ orchestration

def run_pipeline(cfg: RunConfig, run_dir: Path, *, resume: bool = False, from_stage: str | None = None,
                 only: str | None = None) -> Path:
    run_dir = Path(run_dir)
    runner = StageRunner(cfg, run_dir, resume=resume, from_stage=from_stage, only=only)
    with _run_lock(run_dir):
        try:
            rep = _stages(cfg, run_dir, runner)
        except _OnlyDone as done:
            return done.result
    runner.summary(rep)
    return rep


def _stages(cfg: RunConfig, run_dir: Path, runner: StageRunner) -> Path:
    d = runner.dir
    # Run-level settings enter the fingerprint of the stages that use them.
    seed, data = {"seed": cfg.seed}, {"data_dir": cfg.data_dir}
    sft_model = runner.stage("sft", lambda: sft(cfg, d("sft")), (cfg.sft, seed), cfg.model)
    samples = runner.stage("sample", lambda: sample(cfg, sft_model, d("sample")), (cfg.sample, seed), sft_model)
    redteam = None
    if cfg.label.redteam:  # red teaming feeds the hybrid RM (label.redteam false: no red teaming at all)
        redteam = runner.stage("redteam", lambda: redteam_stage(cfg, sft_model, d("redteam")),
                               (cfg.redteam, cfg.harm_judge, seed, data, {"hh_limit": cfg.label.hh_limit}), sft_model)
    held = {"heldout_frac": cfg.reward_model.heldout_frac, "hh_limit": cfg.label.hh_limit,
            "human_pairs": cfg.label.human_pairs}
    heldout = runner.stage("heldout", lambda: heldout_stage(cfg, samples, d("heldout")), (held, seed, data), samples)
    labels, rms, actors = {}, {}, {}
    for variant, mode in VARIANTS.items():  # labelling continues from its appended labels.jsonl rows
        labels[mode] = runner.stage(f"label_{mode}", lambda m=mode: label(cfg, samples, m, d(f"label_{m}")),
                                    (cfg.label, cfg.judge, cfg.harm_judge, data), samples, resumable=True)
    for variant, mode in VARIANTS.items():
        extra = redteam if mode == "hybrid" else None
        rms[mode] = runner.stage(f"rm_{mode}", lambda m=mode, x=extra: reward_model(
            cfg, sft_model, labels[m], samples, d(f"rm_{m}"), heldout, x),
            (cfg.reward_model, seed), sft_model, labels[mode], heldout, extra)
    ppo_prompts = {"prompts": cfg.ppo.prompts or cfg.sample.prompts}
    for variant, mode in VARIANTS.items():  # PPO continues from its last checkpoint
        actors[variant] = runner.stage(f"ppo_{variant}", lambda v=variant, m=mode: ppo(
            cfg, sft_model, rms[m], d(f"ppo_{v}")), (cfg.ppo, cfg.eval_judge, seed, data, ppo_prompts), sft_model,
            rms[mode], resumable=True)
    # The labeller's identity is recorded in results.json (is the grader the labeller?).
    graders = (cfg.eval, cfg.eval_judge, {"labeller": cfg.judge.identity()}, seed, data)
    runner.stage("eval_sft", lambda: evaluate(cfg, sft_model, d("eval_sft"), None), graders, sft_model)
    evals = {}
    for variant in VARIANTS:  # HRLAIF's stage also judges it head to head against RLAIF
        versus = d("eval_rlaif") if variant == "hrlaif" else None
        evals[variant] = runner.stage(
            f"eval_{variant}", lambda v=variant, vs=versus: evaluate(cfg, actors[v], d(f"eval_{v}"), sft_model, vs),
            graders, actors[variant], sft_model, evals.get("rlaif") if variant == "hrlaif" else None)
    return runner.stage("report", lambda: report(run_dir), None, *[d(f"eval_{v}") for v in ("sft", *VARIANTS)],
                        always=True)


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

    def __post_init__(self):
        for s in (self.from_stage, self.only):
            if s is not None and s not in STAGES:
                raise UserError(f"unknown stage {s!r} (stages: {', '.join(STAGES)})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()
        self.timings: dict[str, float] = {}
        self.output_ids: dict[str, str] = {}  # output path -> id of the stage run that wrote it
        self.only_result: Path | None = None

    def dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def _forced(self, name: str) -> bool:
        return self.from_stage is not None and STAGES.index(name) >= STAGES.index(self.from_stage)

    def _selected(self, name: str) -> bool:
        return self.only is None or self.only == name

    def _say(self, name: str, text: str) -> None:
        print(f"[{STAGES.index(name) + 1:2d}/{len(STAGES)}] {name:<12} {text}", flush=True)

    def stage(self, name: str, fn: Callable[[], Path], section, *inputs, resumable: bool = False,
              always: bool = False) -> Path:
        """Run `fn` unless RUN/<name>/manifest.json says it finished with the same fingerprint.

        resumable: `fn` continues from the partial state it finds in RUN/<name>/ (kept only for
        an interrupted run of the same fingerprint under --resume; otherwise the dir is wiped).
        always: rebuilt on every run, in place (the report)."""
        if self.only is not None and STAGES.index(name) > STAGES.index(self.only):
            raise _OnlyDone(self.only_result)
        out = self.dir(name)
        config_hash = stable_hash(_plain(section))
        # An input is known by the run that produced it: a stage that re-ran invalidates its consumers.
        input_ids = {str(x): self.output_ids.get(str(x), str(x)) for x in inputs if x is not None}
        fingerprint = stable_hash([name, config_hash, input_ids])
        manifest_path = out / "manifest.json"
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
            "config": _plain(section), "inputs": input_ids, "output": str(result), "output_id": output_id,
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
        write_json(self.run_dir / "run_summary.json", {"wall_time_s": round(total, 1), "stages_s": self.timings,
                                                       "report": str(report_dir), "config": to_dict(self.cfg)})


# ------------------------------------------------------------------ helpers

def _plain(section) -> object:
    if section is None or isinstance(section, dict):
        return section
    if isinstance(section, tuple):
        return [_plain(s) for s in section]
    return dataclasses.asdict(section)


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


def _clear_stage_dir(out: Path) -> None:
    """Delete a stage's partial artifacts, keeping its manifest (the runner's record)."""
    for p in out.iterdir() if out.exists() else ():
        if p.name != "manifest.json":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _ppo_can_continue(pcfg, out: Path) -> bool:
    """True if OUT holds a checkpoint of this very training configuration."""
    from trainers import checkpointing as ckpt

    root = out / "checkpoints"
    try:
        path = ckpt.latest_checkpoint(root)
    except UserError as e:  # a broken pointer: nothing trustworthy to continue from
        print(f"ppo: {e}; starting at step 0", flush=True)
        return False
    if path is None:
        if (out / "metrics.jsonl").exists():
            print("ppo: no checkpoint was written before the interruption; starting at step 0", flush=True)
        return False
    if read_json(path / "state.json").get("config_hash") != pcfg.trajectory_hash():
        print(f"ppo: {path} was written with other training settings; starting at step 0", flush=True)
        return False
    return True


def _versions() -> dict:
    from evalsets.runner import versions as v
    return v()
