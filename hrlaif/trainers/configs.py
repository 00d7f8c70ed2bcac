"""The settings of every trainer, declared once (hrlaif.core.settings): the run config's sections, the
flags of `hrlaif sft|sample|label|train-rm|ppo`, their defaults, docs and validation.

Fields marked pipeline=True are filled in by `hrlaif run` (model paths, inputs made by earlier
stages, output dirs, the run's seed); the single-trainer commands take them as flags. Defaults
are for real use; the quickstart's smaller values are in hrlaif/harness/configs/quickstart.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hrlaif.core.hardware import PRECISIONS, check_device
from hrlaif.core.settings import SettingError, Settings, existing_file, greater_than, less_than, redeclare, setting
from hrlaif.core.trackers import report_to_setting
from hrlaif.judges.answers import VERIFIABLE

MODEL_HELP = "HF dir, .gguf file or hub id (none = the embedded SmolLM2-135M-Instruct)"
ZERO_STAGES = (0, 1, 2, 3)
SEED_HELP = "seed of every random choice of this stage (`hrlaif run` passes its own seed)"
AUTO_PRECISION = "auto = bf16 where the device multiplies bf16 natively (CUDA, AMX or AVX512-BF16 CPUs), else fp32"
DEVICE_HELP = "auto = the first CUDA device when there is one, else cpu; or cpu, cuda, cuda:N"


def precision_setting(bf16: str = "mixed precision: fp32 weights and optimizer state, bf16 matmuls, fp32 "
                                  "log-probs and losses"):
    return setting("auto", f"{AUTO_PRECISION}; bf16 = {bf16}", choices=PRECISIONS)


def device_setting():
    return setting("auto", DEVICE_HELP, check=check_device)


@dataclass
class EngineSettings(Settings):
    """What every trainer's DeepSpeed engines share, declared once: the optimiser, ZeRO, precision,
    device and seed. SFTConfig, RMConfig and PPOConfig derive from it (their run-config keys and
    flags are these fields); a trainer may give a field its own default with `redeclare`.
    hrlaif/trainers/distributed.py `EngineConfig` is built from it."""

    lr: float = setting(1e-5, "AdamW learning rate", check=greater_than(0))
    weight_decay: float = setting(0.0, "AdamW weight decay", min=0)
    grad_clip: float = setting(1.0, "global gradient-norm clip, applied by the engines (0 = off)", min=0)
    zero_stage: int = setting(0, "DeepSpeed ZeRO stage (PPO: of actor and critic)", choices=ZERO_STAGES)
    precision: str = precision_setting()
    device: str = device_setting()
    seed: int = setting(1234, SEED_HELP, pipeline=True)


@dataclass
class SFTConfig(EngineSettings):
    """Every knob of `train_sft` (hrlaif/trainers/sft.py); optimiser, ZeRO, precision, device, seed: EngineSettings."""

    lr: float = redeclare(EngineSettings, "lr", 2e-5, help="peak AdamW learning rate")
    model: str | None = setting(None, f"base checkpoint: {MODEL_HELP}", pipeline=True)
    data: str | None = setting(None, "instruction data: alpaca / sharegpt / messages, JSON or JSONL "
                                     "(none = the embedded set, trainers/data/sft_embedded.json)", check=existing_file)
    out: str = setting("out/sft", "output directory: the HF checkpoint, metrics.jsonl, sft_config.json",
                       pipeline=True)
    epochs: int = setting(1, "passes over the data", min=1)
    max_steps: int = setting(0, "stop after this many optimizer steps (0 = all epochs)", min=0)
    warmup_steps: int = setting(0, "linear warmup from 0 to lr over this many optimizer steps", min=0)
    min_lr_ratio: float = setting(0.1, "cosine decay ends at lr * min_lr_ratio (1 = constant lr)", min=0, max=1)
    max_len: int = setting(512, "tokens per sequence; longer ones are cut at the right (counted)", min=1)
    batch_size: int = setting(4, "sequences per micro-batch", min=1)
    grad_accum: int = setting(1, "micro-batches per optimizer step", min=1)
    save_every: int = setting(0, "write the checkpoint every N optimizer steps (0 = at the end); "
                                 "the NaN guard falls back to it", min=0)
    limit: int = setting(0, "use only the first N examples (0 = all)", min=0)
    report_to: list[str] = report_to_setting()


def _two_or_more(k: int) -> str | None:
    return None if k >= 2 else f"must be >= 2: preference labels need two responses per prompt (got {k})"


@dataclass
class SampleConfig(Settings):
    """Every knob of `sample_responses` (hrlaif/trainers/sampling.py)."""

    model: str | None = setting(None, f"checkpoint to sample from: {MODEL_HELP}", pipeline=True)
    prompts: str | None = setting(None, "prompts.jsonl {id, prompt, category, std_answer} (none = the embedded "
                                        "feedback prompts)", check=existing_file)
    out: str = setting("samples.jsonl", "output samples.jsonl", pipeline=True)
    k: int = setting(4, "responses per prompt (>= 2: the labeller ranks them)", check=_two_or_more)
    max_new_tokens: int = setting(256, "tokens per response; a response that hits it has finished=false", min=1)
    temperature: float = setting(1.0, "sampling temperature", check=greater_than(0))
    top_p: float = setting(1.0, "nucleus sampling mass (1 = the full distribution)", check=greater_than(0), max=1)
    seed: int = setting(1234, SEED_HELP, pipeline=True)
    batch_size: int = setting(4, "prompts per generate call (each expands to k sequences)", min=1)
    limit: int = setting(0, "only N prompts, round-robin over categories (0 = all)", min=0)
    precision: str = precision_setting(bf16="the model's weights in bf16 (inference only)")
    device: str = device_setting()


def _hh_file(data_dir: str) -> str | None:
    if (Path(data_dir) / "redteam" / "hh_harmless_test.jsonl").is_file():
        return None
    return f"has no redteam/hh_harmless_test.jsonl: {data_dir}"


@dataclass
class LabelConfig(Settings):
    """Every knob of the label stage (hrlaif/trainers/feedback/label_stage.py); the judge is a JudgeConfig."""

    samples: str = setting("samples.jsonl", "samples.jsonl from `hrlaif sample` (K >= 2 responses per prompt)",
                           pipeline=True)
    mode: str = setting("basic", "basic RLAIF (the judge ranks all responses) or hybrid HRLAIF (verify final "
                                 "answers first, judge only among correct ones)", choices=("basic", "hybrid"),
                        pipeline=True)
    out: str = setting("labels", "output directory: labels.jsonl, pairs.jsonl, summary.json, label_accuracy.json",
                       pipeline=True)
    redteam: bool = setting(True, "AI red teaming of harmlessness prompts in hybrid mode: flag harmful responses, "
                                  "add harmless rewrites (basic RLAIF has none)")
    verifiable: list[str] = setting(default_factory=lambda: list(VERIFIABLE),
                                    help="categories whose final answers hybrid mode verifies against std_answer",
                                    choices=tuple(sorted(VERIFIABLE)))
    hh_limit: int = setting(50, "hh-rlhf harmless pairs used for the label-accuracy table (with data_dir)", min=0)
    accuracy: bool = setting(True, "write the label-accuracy table (both modes on every prompt with ground truth)")
    audit_repeat: int = setting(8, "judge audit: pairwise requests sent a second time past the request cache "
                                   "(repeatability; each costs a call on every run, 0 = not measured)", min=0)
    data_dir: str | None = setting(None, "directory with redteam/hh_harmless_test.jsonl: hh-rlhf ground truth "
                                         "for the accuracy table", pipeline=True, check=_hh_file)
    human_pairs: str | None = setting(None, "human_pairs.jsonl from `hrlaif annotate import`: human preferences "
                                            "between these samples' responses, truth for the label-accuracy table",
                                      check=existing_file)


@dataclass
class RMConfig(EngineSettings):
    """Every knob of `train_reward_model` (hrlaif/trainers/reward_model.py); optimiser, ZeRO, precision, device,
    seed: EngineSettings."""

    lr: float = redeclare(EngineSettings, "lr", 1e-5, help="AdamW learning rate (constant)")

    model: str | None = setting(None, f"backbone checkpoint, usually the SFT model: {MODEL_HELP}", pipeline=True)
    labels: str = setting("labels.jsonl", "labels.jsonl from `hrlaif label`", pipeline=True)
    samples: str | None = setting(None, "samples.jsonl to cross-check the labels against", pipeline=True)
    out: str = setting("out/rm", "reward-model directory (backbone, head, rm_metrics.json, metrics.jsonl)",
                       pipeline=True)
    clip: float = setting(10.0, "scores are clamped to [-clip, clip] when the model scores (PPO, evaluation); "
                                "the training loss reads the raw score", check=greater_than(0))
    epochs: int = setting(1, "passes over the training groups", min=1)
    max_steps: int = setting(0, "stop after this many optimizer steps (0 = all epochs)", min=0)
    groups_per_step: int = setting(4, "prompt groups per optimizer step (one forward of K responses each)", min=1)
    max_len: int = setting(512, "tokens per prompt+response; longer ones lose tokens on the left (counted)", min=8)
    loss: str = setting("kwise", "kwise (one forward per response) or pairwise (two forwards per pair; "
                                 "for comparison)", choices=("kwise", "pairwise"))
    heldout_frac: float = setting(0.2, "share of prompt ids held out for accuracy (split by id, seeded; drawn "
                                       "from the samples file's ids when given, so every variant holds out "
                                       "the same prompts)", min=0, check=less_than(1))
    heldout_pairs: str | None = setting(None, "labels.jsonl-format pairs every reward model of a run is also "
                                              "scored on (rm_metrics.json `shared_heldout_acc`); their prompt "
                                              "ids are never trained on", check=existing_file, pipeline=True)
    train_layers: int = setting(0, "train only the top N blocks + head (0 = all): a cheap RM on a CPU", min=0)
    report_to: list[str] = report_to_setting()


# Settings that do not change the PPO trajectory: a resumed run may change them.
PPO_NOT_TRAJECTORY = frozenset({"steps", "out", "resume", "save_every", "keep_checkpoints", "drift_every",
                                "drift_benchmarks", "drift_limit", "drift_data_dir", "heldout_prompts",
                                "heldout_limit", "report_to"})


@dataclass
class PPOConfig(EngineSettings):
    """Every PPO knob (hrlaif/trainers/ppo.py). Batch sizes are global (summed over ranks). Optimiser (lr: the
    actor's), ZeRO, precision, device, seed: EngineSettings."""

    lr: float = redeclare(EngineSettings, "lr", 1e-6, help="actor learning rate (the critic's: critic_lr)",
                          min=0, check=None)  # 0 = a frozen actor, as before the settings were shared

    model: str | None = setting(None, f"actor checkpoint, also the frozen reference: {MODEL_HELP}", pipeline=True)
    reward_model: str = setting("", "reward model: a harness reward-model directory, or an HF sequence-classification "
                                    "model (directory or hub id); one with another tokenizer reads decoded texts",
                                pipeline=True)
    out: str = setting("out/ppo", "output directory: metrics.jsonl, drift.jsonl, tb/, checkpoints/, final/",
                       pipeline=True)
    prompts: str | None = setting(None, "training prompts.jsonl (none = the embedded feedback prompts; "
                                        "`hrlaif run`: sample.prompts)", check=existing_file)
    heldout_prompts: str | None = setting(
        None, "prompts never trained on (removed from the training set, drift on or off), whose greedy responses "
              "the drift log scores (none = hrlaif/trainers/data/heldout_prompts.jsonl)", check=existing_file)
    steps: int = setting(20, "PPO steps (one rollout batch and its update each)", min=1)
    batch_size: int = setting(8, "prompts per step, over all ranks", min=1)
    mini_batch_size: int = setting(4, "sequences per optimizer step, over all ranks (divides batch_size)", min=1)
    ppo_epochs: int = setting(2, "passes over each rollout batch", min=1)
    max_prompt_len: int = setting(256, "prompt tokens kept (the last ones, chat template included)", min=1)
    max_new_tokens: int = setting(64, "response length cap; a response cut here has no EOS", min=1)
    temperature: float = setting(1.0, "sampling temperature (the PPO log-probs use it too)", check=greater_than(0))
    top_k: int = setting(0, "top-k sampling (0 = the full distribution, the on-policy choice)", min=0)
    greedy: bool = setting(False, "greedy decoding instead of sampling (deterministic tests only)")
    critic_lr: float = setting(1e-5, "critic learning rate", min=0)
    gamma: float = setting(1.0, "discount", min=0, max=1)
    lam: float = setting(0.95, "GAE lambda", min=0, max=1)
    cliprange: float = setting(0.2, "policy ratio clip epsilon", check=greater_than(0))
    cliprange_value: float = setting(0.2, "value clip around the rollout-time value", check=greater_than(0))
    kl_coef: float = setting(0.05, "per-token KL penalty coefficient (the start value when adaptive); the "
                                   "penalty is k1 = log(pi/ref) of the sampled token, whose policy gradient is "
                                   "KL's (k3 is logged too, as kl_k3)", min=0)
    adaptive_kl: bool = setting(False, "Ziegler et al. 2019 controller: steer kl_coef so that the sequence KL "
                                       "tracks target_kl")
    target_kl: float = setting(6.0, "target sequence KL (nats) of the adaptive controller", check=greater_than(0))
    kl_horizon: int = setting(10000, "adaptive controller horizon, in samples", min=1)
    reward_clip: float = setting(10.0, "clamp the sequence reward to [-reward_clip, reward_clip] (0 = off)", min=0)
    missing_eos_reward: float | None = setting(None, "reward of a response cut at max_new_tokens (none = keep the "
                                                     "reward model's score; the count is logged as `truncated`)")
    whiten_advantages: bool = setting(True, "normalise advantages over the global batch")
    critic_init: str = setting("actor", "critic backbone: the actor's, or the reward model's backbone and head",
                               choices=("actor", "reward"))
    recompute_old_logprobs: bool = setting(False, "re-run the actor for the old log-probs instead of keeping the "
                                                  "sampler's (they agree to ~1e-6 in fp32; bf16 always re-runs, "
                                                  "and one minibatch per step takes them from the update's forward)")
    padding_free: bool = setting(True, "run the actor, critic and reference forwards (and the update's backwards) "
                                       "on each batch's real tokens only, rows end to end, each attending to "
                                       "itself (hrlaif/core/packed_attention.py; models on eager or SDPA)")
    train_layers: int = setting(0, "train only the top N blocks of actor and critic (0 = all)", min=0)
    share_trunk: bool = setting(True, "with train_layers, run the frozen bottom blocks the four models share once "
                                      "per rollout (hrlaif/trainers/trunk.py; not under ZeRO-3)")
    save_every: int = setting(10, "checkpoint every N steps (0 = never; --resume continues from the last one)",
                              min=0)
    keep_checkpoints: int = setting(2, "checkpoints kept on disk (the oldest are deleted)", min=1)
    resume: bool = setting(False, "continue from OUT/checkpoints/latest", pipeline=True)
    drift_every: int = setting(10, "drift log every N steps and at step 0: held-out reward and benchmarks "
                                   "(0 = never); the over-optimisation alarms read it", min=0)
    drift_benchmarks: list[str] = setting(default_factory=lambda: ["gsm8k", "mmlu"],
                                          help="benchmarks of the drift log ('' = held-out reward only)")
    drift_limit: int = setting(20, "items per drift benchmark", min=1)
    drift_data_dir: str | None = setting(None, "benchmark data of the drift log (none = the embedded sets)",
                                         pipeline=True)
    heldout_limit: int = setting(32, "held-out prompts scored per drift evaluation", min=0)
    report_to: list[str] = report_to_setting("tensorboard")

    def validate(self) -> None:
        if self.batch_size % self.mini_batch_size:
            raise SettingError("mini_batch_size", f"must divide batch_size {self.batch_size} "
                                                  f"(got {self.mini_batch_size})")

    def trajectory_hash(self) -> str:
        """Knobs that shape the training trajectory; a resume must not change them."""
        from dataclasses import asdict

        from hrlaif.core.store import stable_hash
        return stable_hash({k: v for k, v in asdict(self).items() if k not in PPO_NOT_TRAJECTORY})



@dataclass
class RMEvalConfig(Settings):
    """Every knob of `hrlaif eval-rm` (hrlaif/trainers/reward_eval.py)."""

    reward_model: str = setting("", "the reward model: a harness reward-model directory, or an HF "
                                    "sequence-classification model (directory or hub id)")
    pairs: str = setting("", "preference pairs: hh-rlhf {chosen, rejected} transcripts, {prompt, chosen, rejected} "
                             "rows, or labels.jsonl-format groups (a run's shared held-out pairs "
                             "RUN/heldout/pairs.jsonl, or one reward model's RUN/rm_<mode>/model/heldout_pairs.jsonl)",
                         check=existing_file)
    out: str | None = setting(None, "also write the result here (JSON)")
    limit: int = setting(0, "score only the first N pairs (0 = all)", min=0)
    max_len: int = setting(1024, "tokens per prompt+response; longer ones lose tokens on the left", min=8)
    batch_size: int = setting(8, "sequences per forward", min=1)
    precision: str = precision_setting(bf16="bf16 matmuls under autocast (the model stays fp32)")
    device: str = device_setting()
