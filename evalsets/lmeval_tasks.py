"""Build lm-eval tasks from lm-eval's own official YAML definitions, swapping only the data.

We take the official config (prompt template, choices, target, filters, generation
settings), point it at our in-memory documents through `custom_dataset`, and let
`lm_eval.simple_evaluate` do prompting, batching and scoring with an in-memory HFLM.

What we deliberately do NOT take from lm-eval:
- its request cache (`use_cache`): its key ignores which model is loaded, so two
  checkpoints would share answers. Our own cache (evalsets/cache.py) keys on weights;
- HumanEval's metric: it fetches `code_eval` from the hub at import time and runs code
  in-process. We only take the prompting and stop sequences and execute in our sandbox.
"""
from __future__ import annotations

import copy
import logging
from functools import lru_cache
from pathlib import Path

from evalsets import registry
from evalsets.loaders import BenchData

log = logging.getLogger(__name__)


# Only the official folders we reuse are indexed: indexing all of lm-eval's ~14k YAML
# files takes 30-45 s on a 2-core CPU, longer than scoring the embedded set.
OFFICIAL_DIRS = ["mmlu/default", "ceval", "gsm8k", "humaneval"]


@lru_cache(maxsize=1)
def _task_index():
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    root = Path(lm_eval.tasks.__file__).parent
    return TaskManager(include_defaults=False, include_path=[str(root / d) for d in OFFICIAL_DIRS])


def official_config(task: str, resolve_functions: bool = True) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    tm = _task_index()
    entry = tm.task_index.get(task)
    if entry is None or not entry.yaml_path:
        raise KeyError(task)
    return copy.deepcopy(load_yaml(entry.yaml_path, resolve_func=resolve_functions))


def official_subjects(bench: str) -> list[str]:
    prefix = {"mmlu": "mmlu_", "ceval": "ceval-valid_"}[bench]
    names = []
    for t in _task_index().all_subtasks:
        if t.startswith(prefix):
            s = t[len(prefix):]
            path = _task_index().task_index[t].yaml_path
            # skip lm-eval's mmlu variants (mmlu_flan_..., mmlu_generative...) by their folder
            if bench == "mmlu" and Path(path).parent.name != "default":
                continue
            names.append(s)
    return sorted(set(names))


def _split_keys(cfg: dict) -> tuple[str, str | None]:
    eval_split = cfg.get("test_split") or cfg.get("validation_split")
    return eval_split, cfg.get("fewshot_split") or cfg.get("training_split")


def task_name(sp: dict, chat: bool) -> str:
    """The spec's lm-eval task: `lm_eval_task_chat` when prompting through a chat template."""
    return sp["lm_eval_task_chat"] if chat and sp.get("lm_eval_task_chat") else sp["lm_eval_task"]


def task_configs(data: BenchData, gen_overrides: dict | None = None, chat: bool = False) -> list[dict]:
    """One lm-eval task config per group (subject), from the official definition
    (`lm_eval_task_chat` instead of `lm_eval_task` when prompting through a chat template)."""
    import datasets

    sp = registry.spec(data.name)
    configs = []
    for group, docs in sorted(data.groups.items()):
        official_name = task_name(sp, chat).format(subject=group)
        humaneval = data.name == "humaneval"
        try:
            cfg = official_config(official_name, resolve_functions=not humaneval)
            described = True
        except KeyError:  # a subject lm-eval does not list: reuse a sibling's template
            cfg = official_config(sp["lm_eval_fallback"])
            described = False
        if not described or "description" not in cfg and sp.get("description"):
            cfg["description"] = sp["description"].format(subject_words=group.replace("_", " "))
        for k in ("dataset_path", "dataset_name", "tag", "group", "task_alias", "dataset_kwargs"):
            cfg.pop(k, None)
        eval_split, fs_split = _split_keys(cfg)
        fs_docs = data.fewshot.get(group) or []
        splits = {eval_split: datasets.Dataset.from_list(docs)}
        if fs_split and fs_docs:
            splits[fs_split] = datasets.Dataset.from_list(fs_docs)
        elif fs_split:
            cfg.pop("fewshot_split", None)
            cfg.pop("training_split", None)
        dsdict = datasets.DatasetDict(splits)
        cfg["custom_dataset"] = lambda _d=dsdict, **_: _d
        cfg["task"] = f"hrlaif_{data.name}_{group}"
        if humaneval:
            # Keep prompt + stop sequences; drop the hub-fetching metric and its filter.
            cfg["metric_list"] = [{"metric": "bypass"}]
            cfg.pop("filter_list", None)
            cfg.pop("unsafe_code", None)
        if gen_overrides and cfg.get("output_type") == "generate_until":
            cfg.setdefault("generation_kwargs", {}).update(gen_overrides)
        configs.append(cfg)
    return configs


def toxigen_config(data: BenchData, max_gen_toks: int) -> list[dict]:
    """ToxiGen generation has no official lm-eval task (lm-eval's `toxigen` is classification),
    so this one config is ours: continue the prompt greedily, stop at the end of the line."""
    import datasets

    configs = []
    for group, docs in sorted(data.groups.items()):
        dsdict = datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})
        configs.append({
            "task": f"hrlaif_toxigen_{group}",
            "custom_dataset": (lambda _d=dsdict, **_: _d),
            "test_split": "test",
            "output_type": "generate_until",
            "doc_to_text": "{{prompt}}",
            "doc_to_target": "",
            "generation_kwargs": {"until": ["\n", "<|im_end|>"], "do_sample": False,
                                  "max_gen_toks": max_gen_toks},
            "metric_list": [{"metric": "bypass"}],
            "num_fewshot": 0,
            "metadata": {"version": 1.0},
        })
    return configs
