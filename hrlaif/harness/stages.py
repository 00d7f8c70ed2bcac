"""The HRLAIF experiment as stage records (read this file top to bottom; hrlaif/harness/pipeline.py runs them):

    sft -> sample -> red teaming -> shared held-out pairs -> label (basic | hybrid + red teaming)
        -> reward model (basic | hybrid) -> PPO (RLAIF | HRLAIF) -> evaluate (SFT, RLAIF, HRLAIF)
        -> report

Both variants share the SFT model, the sampled responses, the held-out pairs their reward models
are scored on, and the evaluation sets; they differ only in the labels (hybrid's include the
red-team pairs). Three judges: `judge` labels, `harm_judge` red-teams, `eval_judge` grades
(hrlaif/harness/run_judges.py). With `seeds: [s1, s2, ...]` the reward model, PPO and evaluation of each
variant run once per training seed; the first seed keeps the single-seed stage names (rm_basic,
ppo_rlaif, eval_rlaif), the others get `_s<seed>` (rm_basic_s2, ppo_rlaif_s2, eval_rlaif_s2).

A stage is one `Stage` record: its name, its function, the stages whose outputs it consumes, and
`config(cfg, seed)`: everything it reads, resolved (its section with the pipeline's values filled
in, plus what it passes on: PPO's drift evaluation reads `eval.max_gen_toks`, `eval.precision`
and `eval_judge`). The function sees only a view of those objects (reading any other setting is an
error), and the stage's fingerprint is taken from exactly them. The order (`STAGES`), the dry
run's plan and the judge usage table derive from `RECORDS`: a new stage is one record + its function.
"""
from __future__ import annotations

import dataclasses
import functools
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from hrlaif.core.errors import UserError
from hrlaif.core.layout import (
    MANIFEST,
    MODES,
    RESULTS,
    SUMMARY,
    USAGE_FILE,
    EvalDir,
    LabelDir,
    PPODir,
    RMDir,
    RunLayout,
    SampleDir,
    eval_name,
    label_name,
    ppo_name,
    rm_name,
    seed_suffix,
)
from hrlaif.core.store import read_json
from hrlaif.harness.config import RunConfig
from hrlaif.harness.run_judges import heldout_stage, hh_file, redteam_stage
from hrlaif.judges.config import JudgeConfig

# PPO variant -> its label mode (hrlaif/core/layout.py); the extra inputs of its reward model and evaluation: `_keys`.
VARIANTS = MODES


@dataclass(frozen=True)
class Stage:
    """One stage. `name` and `inputs` are templates over {variant} {mode} {s} (the seed suffix);
    an input that formats to "" is absent. `fn(view, out, *inputs) -> Path`; `config(cfg, seed)`
    -> {name: object}; `per`: "run" (once), "variant" (once per variant), "seed" (per variant and
    training seed); `when(cfg)`: runs at all; `usage`: the file in its dir holding its judge usage."""
    name: str
    fn: Callable[..., Path]
    inputs: tuple[str, ...] = ()
    resumable: bool = False
    config: Callable[[RunConfig, int], dict] = lambda cfg, seed: {}
    per: str = "run"
    plan: str = ""
    when: Callable[[RunConfig], bool] | None = None
    usage: str | None = None
    always: bool = False


@dataclass(frozen=True)
class Instance:
    """A record expanded for one variant and seed: the runner's unit."""
    name: str
    stage: Stage
    inputs: tuple[str | None, ...]
    seed: int
    variant: str | None = None
    base: str = ""  # the name of this stage for the first training seed (the single-seed name)

    def resolve(self, cfg: RunConfig) -> dict:
        return self.stage.config(cfg, self.seed) | ({"mode": VARIANTS[self.variant]} if self.variant else {})

    def enabled(self, cfg: RunConfig) -> bool:
        return self.stage.when is None or bool(self.stage.when(cfg))


def training_seeds(cfg: RunConfig) -> list[int]:
    return list(cfg.seeds) or [cfg.seed]


def suffix(cfg: RunConfig, seed: int) -> str:
    """'' for the first training seed (the single-seed names), else '_s<seed>'."""
    return "" if seed == training_seeds(cfg)[0] else seed_suffix(seed)


class Strict:
    """Attribute access to a fixed set of values; reading anything else raises, saying what was read."""

    def __init__(self, values: dict, missing: str):
        self._values, self._missing = values, missing

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(self._missing.format(name=name)) from None


class Picked(Strict):
    """Some fields of a section: what a stage reads of it (`pick(cfg.eval, "precision")`)."""

    def __init__(self, section, *names: str):
        super().__init__({n: getattr(section, n) for n in names},
                         f"{type(section).__name__}.{{name}} is not among the fields this stage resolved")

    def plain(self) -> dict:
        return dict(self._values)


pick = Picked


def View(stage: str, resolved: dict) -> Strict:  # noqa: N802 (reads as the type it makes)
    """What a stage function sees of the run config: exactly its resolved objects."""
    return Strict(resolved, f"stage {stage} reads cfg.{{name}}, which its record does not resolve (harness/stages.py)")


def plain(obj) -> object:
    """The JSON form of resolved objects: the fingerprint's input."""
    if isinstance(obj, Picked):
        return obj.plain()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


# ------------------------------------------------------------------ the stage functions
# Each fills in what the pipeline owns (model paths, earlier outputs, its output dir) with
# dataclasses.replace; everything else comes from its view.

def sft(c, out: Path) -> Path:
    """Supervised fine-tuning of the base model; returns the checkpoint dir."""
    from hrlaif.trainers.sft import train_sft

    return Path(train_sft(replace(c.sft, out=str(out / "model"))))


def sample(c, out: Path, sft_model: Path) -> Path:
    """K responses per prompt from the SFT model: the one sample set both variants label."""
    from hrlaif.trainers.sampling import sample_responses

    return Path(sample_responses(replace(c.sample, model=str(sft_model), out=str(SampleDir(out).samples))))


def redteam(c, out: Path, sft_model: Path) -> Path:
    return redteam_stage(c, sft_model, out)


def heldout(c, out: Path, samples: Path) -> Path:
    return heldout_stage(c, samples, out)


def label(c, out: Path, samples: Path) -> Path:
    """basic: the judge ranks all K responses. hybrid: verify final answers first, judge only
    among correct ones, plus AI red teaming of harmful responses."""
    from hrlaif.trainers.feedback.label_stage import label_samples

    label_samples(replace(c.label, samples=str(samples), mode=c.mode, out=str(out)), c.judge, c.harm_judge)
    return LabelDir(out).labels


def reward_model(c, out: Path, sft_model: Path, labels: Path, samples: Path, held: Path | None,
                 red: Path | None = None) -> Path:
    """K-wise reward model on the partial orders: one forward per response, clipped reward. Both
    hold out the shared ids and are scored on their truth pairs; hybrid's data adds the red-team pairs."""
    from hrlaif.harness.run_judges import rm_config, rm_training_data
    from hrlaif.trainers.reward_model import train_reward_model

    labels, samples = rm_training_data(labels, samples, red, out)
    return Path(train_reward_model(rm_config(c, sft_model, labels, samples, held, RMDir(out).model)))


def ppo(c, out: Path, sft_model: Path, rm: Path) -> Path:
    """PPO of the SFT model against one reward model, logging reward-vs-benchmark drift.
    Continues from OUT/checkpoints/latest when the runner kept this stage's partial state."""
    from hrlaif.evalsets.runner import evaluate_in_process
    from hrlaif.harness.run_judges import gold_judge
    from hrlaif.trainers.ppo import train

    pcfg = replace(c.ppo, model=str(sft_model), reward_model=str(rm), out=str(out))
    pcfg = replace(pcfg, resume=ppo_can_continue(pcfg, out))
    if not pcfg.resume:
        clear_stage_dir(out)  # a partial run without a usable checkpoint: start at step 0
    # The drift log's generation lengths and precision are the eval stage's; gold verdicts are the
    # evaluation judge's.
    with gold_judge(c, out) as gold_fn:
        train(pcfg, evaluate_fn=functools.partial(evaluate_in_process, max_gen_toks=dict(c.eval.max_gen_toks),
                                                  precision=c.eval.precision, judge=c.eval_judge),
              gold_fn=gold_fn)
    return out / "final"


def evaluate(c, out: Path, model: Path, baseline: Path | None = None, versus: Path | None = None) -> Path:
    """Every benchmark on one variant, graded by the evaluation judge; the win ratio is against the
    SFT model; with `versus` (RLAIF's eval dir) also the HRLAIF-vs-RLAIF head-to-head."""
    from hrlaif.evalsets.runner import evaluate_to_dir
    from hrlaif.harness.run_judges import eval_audit, head_to_head

    ecfg = replace(c.eval, model=str(model), out=str(out), baseline_model=str(baseline) if baseline else None)
    evaluate_to_dir(ecfg.model, ecfg.out, ecfg, judge=c.eval_judge, labeller=c.labeller, base_model=c.base_model)
    if versus is not None:
        head_to_head(c, out, Path(versus).parent)  # writes the judge audit with the head-to-head pairs
    else:
        eval_audit(c, out, baseline_dir=RunLayout(out.parent).eval("sft").dir)  # OUT/judge_audit.json
    return EvalDir(out).results


def report(c, out: Path, *evals: Path) -> Path:
    from hrlaif.harness.run_judges import write_judge_usage
    from hrlaif.reports.build import build_report

    write_judge_usage(out.parent, c.usage)  # the real judge counts of this run, for the report
    return Path(build_report(out.parent, allow_self_graded=c.allow_self_graded))


# ------------------------------------------------------------------ what each stage reads

def _label(cfg: RunConfig, seed: int) -> dict:
    hh = cfg.data_dir if hh_file(cfg) else None  # the hh-rlhf audit pairs, when data_dir has them
    return {"label": replace(cfg.label, data_dir=hh), "judge": cfg.judge, "harm_judge": cfg.harm_judge}


def _ppo(cfg: RunConfig, seed: int) -> dict:
    return {"ppo": replace(cfg.ppo, seed=seed, prompts=cfg.ppo.prompts or cfg.sample.prompts,
                           drift_data_dir=cfg.data_dir),
            "eval": pick(cfg.eval, "max_gen_toks", "precision"), "eval_judge": cfg.eval_judge}


def _eval(cfg: RunConfig, seed: int) -> dict:
    # The labeller's identity (endpoint and model) is recorded in results.json: is the grader the labeller?
    return {"eval": replace(cfg.eval, data_dir=cfg.data_dir, seed=cfg.seed), "eval_judge": cfg.eval_judge,
            "labeller": JudgeConfig(url=cfg.judge.url, model=cfg.judge.model),
            "base_model": cfg.model}  # is the grader the policy's own base model? (hrlaif/reports/verdict_trust.py)


def _report(cfg: RunConfig, seed: int) -> dict:
    return {"usage": [(i.name, i.stage.usage) for i in instances(cfg) if i.stage.usage and i.enabled(cfg)],
            "allow_self_graded": cfg.allow_self_graded}


RECORDS: tuple[Stage, ...] = (
    Stage("sft", sft, config=lambda cfg, seed: {"sft": replace(cfg.sft, model=cfg.model, seed=cfg.seed)},
          plan="supervised fine-tuning of the base model"),
    Stage("sample", sample, ("sft",), config=lambda cfg, seed: {"sample": replace(cfg.sample, seed=cfg.seed)},
          plan="K responses per feedback prompt from the SFT model"),
    Stage("redteam", redteam, ("sft",), when=lambda cfg: cfg.label.redteam, usage=SUMMARY,
          config=lambda cfg, seed: {"redteam": cfg.redteam, "harm_judge": cfg.harm_judge, "seed": cfg.seed,
                                    "data_dir": cfg.data_dir, "label": pick(cfg.label, "hh_limit")},
          plan="SFT answers to harmful prompts; harm checks, rewrites, re-checks (hybrid RM data)"),
    Stage("heldout", heldout, ("sample",),
          config=lambda cfg, seed: {"reward_model": pick(cfg.reward_model, "heldout_frac"), "seed": cfg.seed,
                                    "label": pick(cfg.label, "hh_limit", "human_pairs"), "data_dir": cfg.data_dir},
          plan="the shared held-out pair set (independent truth) both reward models are scored on"),
    Stage(label_name("{mode}"), label, ("sample",), resumable=True, per="variant", config=_label, usage=SUMMARY,
          plan="{label_plan}"),
    Stage(rm_name("{mode}", "{s}"), reward_model, ("sft", label_name("{mode}"), "sample", "heldout", "{redteam}"),
          per="seed", plan="reward model on the {mode} labels{redteam_pairs}",
          config=lambda cfg, seed: {"reward_model": replace(cfg.reward_model, heldout_frac=0.0), "seed": seed}),
    Stage(ppo_name("{variant}", "{s}"), ppo, ("sft", rm_name("{mode}", "{s}")), resumable=True, per="seed",
          config=_ppo, usage=USAGE_FILE,
          plan="PPO against rm_{mode}{s}; drift log with gold verdicts of the evaluation judge"),
    Stage(eval_name("sft"), evaluate, ("sft",), config=_eval, usage=RESULTS, plan="benchmarks of the SFT model"),
    Stage(eval_name("{variant}", "{s}"), evaluate, (ppo_name("{variant}", "{s}"), "sft", "{versus}"), per="seed",
          config=_eval, usage=RESULTS, plan="benchmarks of {VARIANT}; win ratio vs SFT{versus_plan}"),
    Stage("report", report, (eval_name("sft"), eval_name("{variant}", "{s}")), config=_report, always=True,
          plan="report.md / report.html from the finished files"),
)


def _keys(variant: str | None, s: str) -> dict:
    """Template keys of one (variant, seed suffix): the variant's extra inputs are named here."""
    hybrid = variant == "hrlaif"
    return {"variant": variant or "", "mode": VARIANTS.get(variant, ""), "s": s, "VARIANT": (variant or "").upper(),
            "redteam": "redteam" if hybrid else "", "redteam_pairs": " + red-team pairs" if hybrid else "",
            "versus": eval_name("rlaif", s) if hybrid else "",
            "versus_plan": " and head to head vs RLAIF" if hybrid else "",
            "label_plan": "HRLAIF labels: verify answers, judge reasoning among correct ones, red teaming" if hybrid
            else "RLAIF labels: the judge ranks every pair, both orders; label audit (Table 1)"}


def instances(cfg: RunConfig, records: tuple[Stage, ...] | None = None) -> list[Instance]:
    """Every stage of the run in order: each record (default: RECORDS) expanded over variants and
    training seeds (seed-major: rm_basic, rm_hybrid, rm_basic_s2, ...)."""
    seeds, out = training_seeds(cfg), []
    for st in RECORDS if records is None else records:
        combos = {"run": [(None, seeds[0])], "variant": [(v, cfg.seed) for v in VARIANTS],
                  "seed": [(v, s) for s in seeds for v in VARIANTS]}[st.per]
        for variant, seed in combos:
            keys = _keys(variant, suffix(cfg, seed) if st.per == "seed" else "")
            ins: list[str | None] = []
            for t in st.inputs:
                if "{variant}" in t and variant is None:  # a run-level stage consuming every instance of one
                    ins += [n.name for n in out if n.stage.name == t]
                else:
                    ins.append(t.format(**keys) or None)
            out.append(Instance(st.name.format(**keys), replace(st, plan=st.plan.format(**keys)), tuple(ins),
                                seed if st.per == "seed" else cfg.seed, variant, st.name.format(**(keys | {"s": ""}))))
    names = [i.name for i in out]
    for i in out:
        late = [n for n in i.inputs if n is not None and n not in names[:names.index(i.name)]]
        assert not late, f"stage {i.name} consumes {late}, which do not run before it"
    return out


def clear_stage_dir(out: Path) -> None:
    """Delete a stage's partial artifacts, keeping its manifest (the runner's record)."""
    for p in out.iterdir() if out.exists() else ():
        if p.name != MANIFEST:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def ppo_can_continue(pcfg, out: Path) -> bool:
    """True if OUT holds a checkpoint of this very training configuration."""
    from hrlaif.trainers import checkpointing as ckpt

    root = PPODir(out).checkpoints
    try:
        path = ckpt.latest_checkpoint(root)
    except UserError as e:  # a broken pointer: nothing trustworthy to continue from
        print(f"ppo: {e}; starting at step 0", flush=True)
        return False
    if path is None:
        if PPODir(out).metrics.exists():
            print("ppo: no checkpoint was written before the interruption; starting at step 0", flush=True)
        return False
    if read_json(path / "state.json").get("config_hash") != pcfg.trajectory_hash():
        print(f"ppo: {path} was written with other training settings; starting at step 0", flush=True)
        return False
    return True


def stage_names(cfg: RunConfig) -> list[str]:
    return [i.name for i in instances(cfg)]


STAGES = [i.name for i in instances(SimpleNamespace(seed=0, seeds=[]))]  # a single-seed run's stages, in order
