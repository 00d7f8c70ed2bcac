"""The run directory's layout, named once: every stage directory and artifact `hrlaif run` writes.

    layout = RunLayout(run_dir)
    layout.eval("sft").results          # RUN/eval_sft/results.json
    layout.ppo("rlaif", seed_suffix).drift   # RUN/ppo_rlaif[_s<seed>]/drift.jsonl
    layout.label("hybrid").accuracy     # RUN/label_hybrid/label_accuracy.json
    layout.rm("basic").metrics_candidates, layout.heldout.pairs, layout.judge_usage, layout.report.dir

Stage *names* (the records in hrlaif/harness/stages.py) and directory names are the same strings; the
helpers below build both (`eval_name`, `ppo_name`, ...), so a rename happens here only.

A stage's own writer knows only its out dir, not the run: it takes that dir's class here instead
(`PPODir(out).drift`, `EvalDir(out).results`, `LabelDir(out).accuracy`), or a file name constant when
the dir is not a stage dir (`RM_METRICS` in `hrlaif train-rm --out`). Either way each artifact's name
is declared once, in this file; tests/test_run_layout.py fails on a module elsewhere that spells one
(only the report writer, hrlaif/reports/build.py, names the files of its own output dir).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# The three compared models, in report order, and the PPO variants with their label mode.
VARIANTS = ("sft", "rlaif", "hrlaif")
MODES = {"rlaif": "basic", "hrlaif": "hybrid"}
PPO_VARIANTS = tuple(MODES)

# The artifacts' file names. Constants for those a module needs as a bare name (a stage record's usage
# file, a file kept when a stage dir is wiped, a trainer's out dir that is not a stage dir).
MANIFEST = "manifest.json"          # every stage dir: the runner's record (fingerprint, resolved config)
SUMMARY = "summary.json"            # label_*/ and redteam/: counts and the judges' usage
USAGE_FILE = "judge_usage.json"     # RUN/ (the run's judge usage) and ppo_*/ (the gold judge's)
RESULTS = "results.json"            # eval_*/ (`hrlaif eval --out`)
DRIFT = "drift.jsonl"               # ppo_*/: reward vs benchmarks, one row per drift checkpoint
METRICS = "metrics.jsonl"           # a trainer's per-step log (ppo_*/, the reward model dir)
LABEL_ACCURACY = "label_accuracy.json"
RM_METRICS = "rm_metrics.json"      # the reward model dir (`hrlaif train-rm --out`; RUN/rm_<mode>/model)
RUN_SUMMARY = "run_summary.json"
REPORT_HTML = "report.html"
ALARMS = "alarms.json"
SEED_SUFFIX = "_s"                  # eval_rlaif_s2: the stages of a training seed other than the first


def seed_suffix(seed: int) -> str:
    """The suffix of a training seed's stage names other than the first seed's (which have none)."""
    return f"{SEED_SUFFIX}{seed}"


def eval_name(variant: str, suffix: str = "") -> str:
    return f"eval_{variant}{suffix}"


def ppo_name(variant: str, suffix: str = "") -> str:
    return f"ppo_{variant}{suffix}"


def label_name(mode: str) -> str:
    return f"label_{mode}"


def rm_name(mode: str, suffix: str = "") -> str:
    return f"rm_{mode}{suffix}"


def export_name(variant: str, suffix: str = "") -> str:
    return f"export_{variant}{suffix}"


@dataclass(frozen=True)
class StageDir:
    """One stage's directory and the files every stage may hold."""
    dir: Path

    @property
    def manifest(self) -> Path:
        return self.dir / MANIFEST

    @property
    def summary(self) -> Path:
        return self.dir / SUMMARY

    @property
    def judge_usage(self) -> Path:
        return self.dir / USAGE_FILE

    def exists(self) -> bool:
        return self.dir.exists()


@dataclass(frozen=True)
class EvalDir(StageDir):
    @property
    def results(self) -> Path:
        return self.dir / RESULTS

    @property
    def samples(self) -> Path:
        """One file of per-item rows per benchmark: what paired comparisons and the seed CIs resample."""
        return self.dir / "samples"

    def sample_file(self, benchmark: str) -> Path:
        return self.samples / f"{benchmark}.jsonl"

    @property
    def judge_audit(self) -> Path:
        return self.dir / "judge_audit.json"


@dataclass(frozen=True)
class PPODir(StageDir):
    @property
    def drift(self) -> Path:
        return self.dir / DRIFT

    @property
    def metrics(self) -> Path:
        return self.dir / METRICS

    @property
    def checkpoints(self) -> Path:
        """The resumable checkpoints (their own layout: hrlaif/trainers/checkpointing.py)."""
        return self.dir / "checkpoints"


@dataclass(frozen=True)
class LabelDir(StageDir):
    @property
    def labels(self) -> Path:
        return self.dir / "labels.jsonl"

    @property
    def accuracy(self) -> Path:
        return self.dir / LABEL_ACCURACY


@dataclass(frozen=True)
class RMDir(StageDir):
    @property
    def model(self) -> Path:
        return self.dir / "model"

    @property
    def metrics_candidates(self) -> tuple[Path, Path]:
        """rm_metrics.json beside the model dir, else inside it (where the RM stage's trainer writes it:
        its out dir is the model dir); the first that exists is the one."""
        return self.dir / RM_METRICS, self.model / RM_METRICS

    @property
    def train_labels(self) -> Path:
        return self.dir / "train_labels.jsonl"

    @property
    def train_samples(self) -> Path:
        return self.dir / "train_samples.jsonl"


@dataclass(frozen=True)
class SampleDir(StageDir):
    @property
    def samples(self) -> Path:
        return self.dir / "samples.jsonl"


@dataclass(frozen=True)
class HeldoutDir(StageDir):
    @property
    def pairs(self) -> Path:
        return self.dir / "pairs.jsonl"


@dataclass(frozen=True)
class ReportDir(StageDir):
    @property
    def html(self) -> Path:
        return self.dir / REPORT_HTML

    @property
    def alarms(self) -> Path:
        return self.dir / ALARMS


@dataclass(frozen=True)
class RunLayout:
    """Every stage directory and artifact of one run directory (`suffix` = the seed suffix, '' for the
    first training seed, `_s<seed>` for the others; hrlaif/harness/stages.py decides it)."""
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def stage(self, name: str) -> StageDir:
        return StageDir(self.root / name)

    @property
    def sft(self) -> StageDir:
        return StageDir(self.root / "sft")

    @property
    def sample(self) -> SampleDir:
        return SampleDir(self.root / "sample")

    @property
    def redteam(self) -> SampleDir:
        return SampleDir(self.root / "redteam")

    @property
    def heldout(self) -> HeldoutDir:
        return HeldoutDir(self.root / "heldout")

    def label(self, mode: str) -> LabelDir:
        return LabelDir(self.root / label_name(mode))

    def rm(self, mode: str, suffix: str = "") -> RMDir:
        return RMDir(self.root / rm_name(mode, suffix))

    def ppo(self, variant: str, suffix: str = "") -> PPODir:
        return PPODir(self.root / ppo_name(variant, suffix))

    def eval(self, variant: str, suffix: str = "") -> EvalDir:
        return EvalDir(self.root / eval_name(variant, suffix))

    def seed_evals(self, variant: str) -> list[tuple[int, EvalDir]]:
        """The evaluations of `variant` by the training seeds after the first (eval_<v>_s<seed>), by seed:
        the report finds a run's seeds from its directories, so a partly finished run still reports."""
        stem = eval_name(variant, SEED_SUFFIX)
        seed = re.compile(re.escape(stem) + r"(\d+)")
        found = [(int(m.group(1)), p) for p in self.root.glob(f"{stem}*") if (m := seed.fullmatch(p.name))]
        return [(s, EvalDir(p)) for s, p in sorted(found)]

    @property
    def report(self) -> ReportDir:
        return ReportDir(self.root / "report")

    @property
    def judge_usage(self) -> Path:
        return self.root / USAGE_FILE

    @property
    def run_summary(self) -> Path:
        return self.root / RUN_SUMMARY

    def manifests(self) -> list[Path]:
        """Every stage's manifest.json present in the run directory."""
        return sorted(self.root.glob(f"*/{MANIFEST}"))

    def has_results(self) -> bool:
        """True when the dir holds an evaluation of any compared model (what makes it a run dir)."""
        return any(self.eval(v).results.exists() for v in VARIANTS)
