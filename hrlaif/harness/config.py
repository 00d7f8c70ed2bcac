"""The `hrlaif run` config: one YAML file, validated up front, one section per stage.

Each section IS the stage's own settings dataclass (hrlaif/trainers/configs.py, hrlaif/evalsets/config.py,
hrlaif/judges/config.py), so every setting a trainer has can be written here, with the same default,
doc and validation as its `hrlaif <command>` flag. The pipeline fills in what it owns (model
paths, data produced by earlier stages, output dirs, the seed): a config that sets one of those
gets an error saying so. Loading is strict: an unknown key, a wrong type, a value out of range
or a missing file is a one-line error naming the key (`ppo.kl_coef: expected a number, got
'high'`), before any work starts.

Judges: `judge` labels the training data; `eval_judge` grades the trained models (satisfaction,
the win ratios, the ToxiGen judge classifier, PPO's gold verdicts) with the evaluation prompts;
`harm_judge` flags and rewrites in red teaming. The two others inherit every key they do not set
from `judge` (so one endpoint serves all three unless told otherwise); the run records when the
grader is the labeller, which the report says in its first lines.

`RunConfig()` holds the defaults for real use. With no config file, `hrlaif run` loads
hrlaif/harness/configs/quickstart.yaml: the embedded model, data and judge, sized to finish on a
2-core CPU in minutes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from hrlaif.core.errors import UserError
from hrlaif.core.settings import SettingError, Settings, existing_dir, from_mapping, setting
from hrlaif.evalsets.config import EvalConfig
from hrlaif.judges.config import JudgeConfig
from hrlaif.trainers.configs import LabelConfig, PPOConfig, RMConfig, SampleConfig, SFTConfig
from hrlaif.trainers.feedback.redteam_stage import RedteamConfig

SHIPPED = Path(__file__).resolve().parent / "configs"  # package data: a pip-installed wheel has them too
QUICKSTART = SHIPPED / "quickstart.yaml"


def _model_path(spec: str) -> str | None:
    return None if Path(spec).expanduser().exists() or "/" in spec else f"path not found: {spec}"


def _distinct(seeds: list[int]) -> str | None:
    return None if len(set(seeds)) == len(seeds) else f"seeds must be distinct (got {seeds})"


@dataclass
class RunConfig(Settings):
    model: str | None = setting(None, "base model: HF dir, .gguf file, hub id (none = the embedded "
                                      "SmolLM2-135M-Instruct)", check=_model_path)
    data_dir: str | None = setting(None, "benchmark and red-team data in the official layouts "
                                         "(none = the embedded sets)", check=existing_dir)
    seed: int = setting(1234, "seed of the shared stages (SFT, sampling, red teaming, held-out split, evaluation) "
                              "and, without `seeds`, of the reward models and PPO; both variants share it")
    seeds: list[int] = setting(default_factory=list,
                               help="training seeds: a reward model and PPO per seed and variant, each evaluated; "
                                    "the report gives each seed's score, their mean and sd and seed-level CIs "
                                    "(empty = one training seed, `seed`)", check=_distinct)
    allow_self_graded: bool = setting(
        False, "count judge-graded verdicts (satisfaction, win ratios, the ToxiGen judge classifier, gold) in the "
               "alarms and a gate even when the evaluation judge is the labelling judge or the policy's base model "
               "(default: their cells say self-graded and the alarms leave them out)")
    judge: JudgeConfig = setting(default_factory=JudgeConfig, help="the AI judge that labels the training data")
    eval_judge: JudgeConfig = setting(default_factory=JudgeConfig,
                                      help="the judge that grades the trained models (unset keys: judge's)")
    harm_judge: JudgeConfig = setting(default_factory=JudgeConfig,
                                      help="the harmlessness judge of red teaming (unset keys: judge's)")
    sft: SFTConfig = setting(default_factory=SFTConfig, help="supervised fine-tuning")
    sample: SampleConfig = setting(default_factory=SampleConfig, help="K responses per prompt from the SFT model")
    label: LabelConfig = setting(default_factory=LabelConfig, help="basic and hybrid labelling")
    redteam: RedteamConfig = setting(default_factory=RedteamConfig,
                                     help="red teaming: SFT answers to harmful prompts, flagged, rewritten, re-judged")
    reward_model: RMConfig = setting(default_factory=RMConfig, help="the K-wise reward models")
    ppo: PPOConfig = setting(default_factory=PPOConfig, help="PPO of RLAIF and HRLAIF")
    eval: EvalConfig = setting(default_factory=EvalConfig, help="evaluation of SFT, RLAIF and HRLAIF")

    def validate(self) -> None:
        check_drift_benchmarks(self.ppo, "ppo.drift_benchmarks")


def check_drift_benchmarks(ppo: PPOConfig, where: str) -> None:
    """Trainers know no benchmarks (they never import evalsets): the harness checks the names."""
    from hrlaif.evalsets.registry import parse_benchmarks

    if ppo.drift_benchmarks:
        try:
            parse_benchmarks(ppo.drift_benchmarks)
        except UserError as e:
            raise SettingError(where, str(e)) from None


def read_yaml(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if not p.exists():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise UserError(f"config {path} is not UTF-8 text")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"config {path} is not valid YAML{where}")
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of sections")
    return data


INHERITING_JUDGES = ("eval_judge", "harm_judge")


def inherit_judges(data: dict) -> dict:
    """eval_judge / harm_judge = the `judge` section, overridden by their own keys."""
    base = data.get("judge")
    if not isinstance(base, dict):
        return data
    out = {"judge": base} | data  # `judge` first: its own errors are reported under its name
    for name in INHERITING_JUDGES:
        own = data.get(name)
        out[name] = base | own if isinstance(own, dict) else base if own is None else own
    return out


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def config_path(name: str | Path | None) -> Path:
    """A config file, or the name of a shipped one (`quickstart`, `paper-7b`); None = the quickstart."""
    if name is None:
        return QUICKSTART
    p = Path(name).expanduser()
    if p.exists() or p.suffix in (".yaml", ".yml") or "/" in str(name):
        if not p.exists():
            raise UserError(f"config file not found: {name} (shipped configs: {', '.join(shipped_configs())})")
        return p
    if (SHIPPED / f"{name}.yaml").exists():
        return SHIPPED / f"{name}.yaml"
    raise UserError(f"config not found: {name} is neither a file nor a shipped config "
                    f"({', '.join(shipped_configs())})")


def load_config(path: str | Path | None) -> RunConfig:
    """The run config at `path` (or a shipped config's name) over the defaults; None = the quickstart."""
    return from_mapping(RunConfig, inherit_judges(read_yaml(config_path(path))))


def with_seeds(cfg: RunConfig, text: str) -> RunConfig:
    """`--seeds 1,2,3` over the config's `seeds`."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds: expected integers separated by commas, got {text!r}") from None
    problem = _distinct(seeds) or (None if seeds else "--seeds: give at least one seed")
    if problem:
        raise UserError(problem if problem.startswith("--") else f"--seeds: {problem}")
    return dataclasses.replace(cfg, seeds=seeds)


def check_judge(cfg: RunConfig) -> None:
    """An unreachable judge is a config error: fail before hours of training, not after."""
    from hrlaif.judges.client import Judge

    seen: list[JudgeConfig] = []
    for name in ("judge", *INHERITING_JUDGES):
        jc = getattr(cfg, name)
        if jc.url is None or any(jc.same_judge(s) for s in seen):
            continue  # the embedded judge is started (and checked) by each stage that needs it
        seen.append(jc)
        try:
            Judge(dataclasses.replace(jc, retries=1, timeout=10.0)).check()
        except UserError as e:
            raise UserError(f"{name}.url: {e}")


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)
