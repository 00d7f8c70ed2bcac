"""Evaluation settings: the run config's `eval:` section and the flags of `hrlaif eval`, declared
once (hrlaif.core.settings). The judge is not here: evaluation takes a hrlaif.judges.config.JudgeConfig."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hrlaif.core import hardware
from hrlaif.core.errors import UserError
from hrlaif.core.settings import SettingError, Settings, existing_file, setting
from hrlaif.core.trackers import report_to_setting
from hrlaif.evalsets import registry
from hrlaif.evalsets.engine import BACKENDS


def _positive_lengths(lengths: dict) -> str | None:
    bad = next(((k, v) for k, v in lengths.items() if v < 1), None)
    return None if bad is None else f"must be >= 1 (got {bad[0]}={bad[1]})"


def _classifier(name: str) -> str | None:
    if name == "judge" or (name.startswith("hf:") and len(name) > 3):
        return None
    return f"must be 'judge' or 'hf:<model dir or hub id>' (got {name!r})"


@dataclass
class EvalConfig(Settings):
    """Every knob of `hrlaif eval` and of the run's eval stages."""

    model: str | None = setting(None, "model to evaluate: HF dir, .gguf file or hub id (none = the embedded "
                                      "SmolLM2-135M-Instruct)", pipeline=True)
    out: str | None = setting(None, "output directory: results.json, samples/ (none = runs/eval-<time>)",
                              pipeline=True)
    benchmarks: list[str] = setting(default_factory=registry.defaults,
                                    help="benchmarks (spec names) or 'all'; the default is the specs marked "
                                         "default (satisfaction needs a judge, so it is not among them)")
    data_dir: str | None = setting(None, "directory in the official layouts (README); none = the embedded sets",
                                   pipeline=True)
    hub: bool = setting(False, "load datasets from the Hugging Face hub instead of the embedded sets")
    limit: int | None = setting(None, "items per benchmark, round-robin over subjects (none = all)", min=1)
    batch_size: int = setting(8, "batch size of log-likelihood scoring and generation", min=1)
    precision: str = setting("auto", "auto (bf16 on CUDA and on CPUs with native bf16 matmul: AMX or "
                                     "AVX512-BF16; fp32 elsewhere), fp32 or bf16 (bf16 matmuls, fp32 log-probs); "
                                     "recorded in results.json and part of the output cache key",
                             choices=hardware.PRECISIONS)
    device: str = setting("auto", "auto (the first GPU when there is one, else the CPU), cpu, cuda or cuda:N; "
                                  "under `accelerate launch` each process takes its own GPU",
                          check=hardware.check_device)
    backend: str = setting("hf", "generation engine: hf (transformers through lm-eval) or vllm (lm-eval's vLLM "
                                 "model: pip install 'hrlaif-harness[vllm]', a GPU, a model on disk); "
                                 "log-likelihood benchmarks and PPO's drift evaluation always run on hf",
                           choices=BACKENDS)
    chat_template: bool | None = setting(None, "apply the tokenizer's chat template: on, off, or auto "
                                               "(none: per benchmark spec, when the tokenizer has one)")
    max_gen_toks: dict[str, int] = setting(default_factory=dict, help="generation length per benchmark, e.g. "
                                                                      "gsm8k=128 (others: their spec's)",
                                           check=_positive_lengths)
    toxicity_classifier: str = setting("judge", "'judge' (the judge endpoint) or 'hf:<model dir or hub id>'",
                                       check=_classifier)
    humaneval_samples: int = setting(1, "completions per task of an execute benchmark (pass@k for every k <= n)",
                                     min=1)
    humaneval_temperature: float = setting(0.8, "sampling temperature when humaneval_samples > 1 "
                                                "(1 sample is greedy)", min=0)
    completions: str | None = setting(None, "score a {task_id, completion} jsonl of an execute benchmark "
                                            "(HumanEval) instead of generating: no model is loaded", pipeline=True,
                                      check=existing_file)
    baseline_model: str | None = setting(None, "baseline model of the satisfaction win ratio", pipeline=True)
    category_map: str | None = setting(None, "YAML/JSON file mapping source classes to the 12 satisfaction "
                                             "categories (BELLE / MT-Bench data)", check=existing_file)
    seed: int = setting(1234, "seed of few-shot sampling and any sampling (`hrlaif run` passes its own)",
                        pipeline=True)
    use_cache: bool = setting(True, "reuse cached model outputs for identical (weights, items, settings)",
                              aliases=("--cache",))
    spec_dirs: list[str] = setting(default_factory=list, help="extra directories of benchmark specs (*.yaml), "
                                                              "searched after the shipped specs and $HRLAIF_SPEC_PATH")
    report_to: list[str] = report_to_setting()

    def validate(self) -> None:
        try:
            self.benchmarks = registry.parse_benchmarks(self.benchmarks, self.spec_dirs)
        except UserError as e:
            raise SettingError("benchmarks", str(e)) from None

    def category_mapping(self) -> dict[str, str]:
        """The category_map file as {normalised source class: category}."""
        if not self.category_map:
            return {}
        import yaml

        path = Path(self.category_map)
        try:
            m = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
            raise UserError(f"category map {path} is not valid YAML/JSON: {str(e).splitlines()[0]}")
        if not isinstance(m, dict):
            raise UserError(f"category map {path} must be a mapping of class -> category")
        return {" ".join(str(k).split()).lower(): str(v) for k, v in m.items()}
