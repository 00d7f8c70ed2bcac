"""The `hrlaif run` config: one YAML file, validated up front, one typed section per stage.

Sections reuse the trainers' own config dataclasses (every knob documented there); the
pipeline fills in what it owns (model paths, data produced by earlier stages, output
dirs). Validation is strict: an unknown key, a wrong type or a missing file is a one-line
error naming the key (`ppo.kl_coef: expected float, got 'high'`), before any work starts.

With no config file, `RunConfig()` is the quickstart: embedded model, data and judge,
sized to finish on a 2-core CPU in minutes.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError
from trainers.distributed import EngineConfig  # noqa: F401  (documented knobs live with the trainers)


@dataclass
class JudgeSection:
    url: str | None = None
    """OpenAI-compatible base URL (OpenAI, vLLM, llama.cpp). None = the embedded llama.cpp judge."""
    model: str | None = None
    """Model name at the endpoint."""
    key_env: str | None = "OPENAI_API_KEY"
    """NAME of the environment variable holding the API key. Never put the key in the config."""
    workers: int = 2
    """Concurrent judge requests."""


@dataclass
class SFTSection:
    data: str | None = None
    """Instruction data (alpaca or chat format). None = the embedded 12-category set."""
    epochs: int = 1
    max_steps: int = 3
    """Optimizer steps (0 = all epochs). The quickstart keeps SFT short: the comparison is RLAIF vs HRLAIF."""
    lr: float = 2e-5
    max_len: int = 192
    batch_size: int = 4
    grad_accum: int = 1
    zero_stage: int = 0


@dataclass
class SampleSection:
    prompts: str | None = None
    """prompts.jsonl ({id, prompt, category, std_answer}). None = the embedded feedback prompts."""
    k: int = 4
    """Responses per prompt; both variants label the same samples. K=4 over 16 prompts is the smallest
    quickstart that reliably yields verifiable pairs for the label-accuracy table."""
    limit: int = 16
    """Use the first N prompts (0 = all)."""
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 0.95
    batch_size: int = 8


@dataclass
class LabelSection:
    redteam: bool = True
    """AI red teaming for harmlessness prompts (HRLAIF only; basic RLAIF has none)."""
    verifiable: list[str] = field(default_factory=lambda: ["math", "multiple_choice"])
    """Categories whose final answers are verified against the standard answer (hybrid)."""
    hh_limit: int = 20
    """hh-rlhf harmless pairs used to audit the judge when data_dir has them."""


@dataclass
class RewardModelSection:
    clip: float = 10.0
    """Rewards are clipped to [-clip, clip] inside the reward model's forward."""
    epochs: int = 1
    max_steps: int = 0
    lr: float = 5e-5
    groups_per_step: int = 4
    max_len: int = 256
    heldout_frac: float = 0.25
    train_layers: int = 4
    """Train only the top N blocks + head (0 = all); the quickstart keeps RM training cheap on CPU."""
    zero_stage: int = 0


@dataclass
class PPOSection:
    steps: int = 8
    batch_size: int = 4
    mini_batch_size: int = 2
    ppo_epochs: int = 1
    max_new_tokens: int = 48
    lr: float = 1e-5
    """Large for PPO, on purpose: 8 quickstart steps must move the policy far enough to see KL grow."""
    critic_lr: float = 1e-5
    kl_coef: float = 0.05
    kl_estimator: str = "k3"
    """k3 is non-negative per token, so the drift plot's sqrt(KL) axis is always defined."""
    adaptive_kl: bool = False
    target_kl: float = 6.0
    zero_stage: int = 0
    train_layers: int = 8
    """Train only the top N blocks of actor and critic (0 = all): keeps the quickstart's PPO update cheap."""
    missing_eos_reward: float = -1.0
    """Reward for a response cut at max_new_tokens (no EOS)."""
    save_every: int = 4
    prompts: str | None = None
    """Training prompts (None = the labelled prompts' source)."""
    heldout_prompts: str | None = None
    """Prompts never trained on, for held-out reward (None = embedded held-out set)."""
    drift_every: int = 4
    """Evaluate the actor every N steps, and at step 0, for the drift log (0 = never)."""
    drift_benchmarks: list[str] = field(default_factory=lambda: ["mmlu"])
    """Log-likelihood benchmarks are cheap and informative for a 135M model (GSM8K sits at 0)."""
    drift_limit: int = 12
    heldout_limit: int = 8


@dataclass
class EvalSection:
    benchmarks: list[str] = field(default_factory=lambda: ["ceval", "mmlu", "gsm8k", "humaneval", "toxigen",
                                                           "satisfaction"])
    limit: int | None = 12
    """Items per benchmark (None = all). The quickstart keeps it small; CIs say how small."""
    max_gen_toks: dict[str, int] = field(default_factory=lambda: {"gsm8k": 128, "humaneval": 160,
                                                                   "satisfaction": 64, "toxigen": 32})
    toxicity_classifier: str = "judge"
    batch_size: int = 8


@dataclass
class RunConfig:
    model: str | None = None
    """Base model: HF dir, .gguf, hub id, or None for the embedded SmolLM2-135M-Instruct."""
    data_dir: str | None = None
    """Benchmark / red-team data in the official layouts (None = embedded sets)."""
    seed: int = 1234
    """One seed for every stage; both variants share it."""
    judge: JudgeSection = field(default_factory=JudgeSection)
    sft: SFTSection = field(default_factory=SFTSection)
    sample: SampleSection = field(default_factory=SampleSection)
    label: LabelSection = field(default_factory=LabelSection)
    reward_model: RewardModelSection = field(default_factory=RewardModelSection)
    ppo: PPOSection = field(default_factory=PPOSection)
    eval: EvalSection = field(default_factory=EvalSection)


# ------------------------------------------------------------------ strict loading

def _type_name(tp) -> str:
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, key: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except UserError as e:
                errors.append(e)
        raise UserError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UserError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp in (int, str) and (not isinstance(value, tp) or isinstance(value, bool)):
        raise UserError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else k
            raise UserError(f"unknown config key {where!r} (allowed here: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def load_config(path: str | Path | None) -> RunConfig:
    if path is None:
        cfg = RunConfig()
    else:
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
        cfg = from_dict(RunConfig, data)
    validate(cfg)
    return cfg


def _need_file(key: str, value: str | None) -> None:
    if value is not None and not Path(value).expanduser().exists():
        raise UserError(f"{key}: file not found: {value}")


def validate(cfg: RunConfig) -> None:
    """Semantic checks that need no model: files exist, values in range, benchmarks known."""
    from evalsets.registry import parse_benchmarks

    _need_file("sft.data", cfg.sft.data)
    _need_file("sample.prompts", cfg.sample.prompts)
    _need_file("ppo.prompts", cfg.ppo.prompts)
    _need_file("ppo.heldout_prompts", cfg.ppo.heldout_prompts)
    if cfg.data_dir is not None and not Path(cfg.data_dir).is_dir():
        raise UserError(f"data_dir: directory not found: {cfg.data_dir}")
    if cfg.model and not (Path(cfg.model).exists() or "/" in cfg.model):
        raise UserError(f"model: path not found: {cfg.model}")
    if cfg.sample.k < 2:
        raise UserError(f"sample.k: must be >= 2 (got {cfg.sample.k})")
    for key, stage in (("sft.zero_stage", cfg.sft.zero_stage), ("reward_model.zero_stage", cfg.reward_model.zero_stage),
                       ("ppo.zero_stage", cfg.ppo.zero_stage)):
        if stage not in (0, 1, 2, 3):
            raise UserError(f"{key}: must be one of 0, 1, 2, 3 (got {stage})")
    if cfg.ppo.kl_estimator not in ("k1", "k3"):
        raise UserError(f"ppo.kl_estimator: must be k1 or k3 (got {cfg.ppo.kl_estimator!r})")
    if cfg.ppo.batch_size % cfg.ppo.mini_batch_size:
        raise UserError("ppo.mini_batch_size: must divide ppo.batch_size")
    if cfg.eval.limit is not None and cfg.eval.limit < 1:
        raise UserError(f"eval.limit: must be >= 1 (got {cfg.eval.limit})")
    try:
        parse_benchmarks(cfg.eval.benchmarks)
        parse_benchmarks(cfg.ppo.drift_benchmarks) if cfg.ppo.drift_benchmarks else None
    except UserError as e:
        raise UserError(f"eval.benchmarks / ppo.drift_benchmarks: {e}")


def check_judge(cfg: RunConfig) -> None:
    """An unreachable judge is a config error: fail before hours of training, not after."""
    if cfg.judge.url is None:
        return  # the embedded judge is started (and checked) by each stage that needs it
    from judges.client import Judge, JudgeConfig

    try:
        Judge(JudgeConfig(base_url=cfg.judge.url, model=cfg.judge.model or "default",
                          api_key_env=cfg.judge.key_env, max_retries=1, timeout_s=10)).check()
    except UserError as e:
        raise UserError(f"judge.url: {e}")


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)
