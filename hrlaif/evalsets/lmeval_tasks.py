"""lm-eval task configs for a spec: the official YAML definition with only the data swapped, or
a task built from the spec's own prompt template, or a plain generation task.

We take the official config (prompt template, choices, target, filters, generation
settings), point it at our in-memory documents through `custom_dataset`, and let
`lm_eval.simple_evaluate` do prompting, batching and scoring with an in-memory HFLM.

What we deliberately do NOT take from lm-eval:
- its request cache (`use_cache`): its key ignores which model is loaded, so two
  checkpoints would share answers. Our own cache (hrlaif/evalsets/cache.py) keys on weights;
- HumanEval's metric: it fetches `code_eval` from the hub at import time and runs code
  in-process. We only take the prompting and stop sequences and execute in our sandbox.
"""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

from hrlaif.evalsets.benchdata import BenchData


@lru_cache(maxsize=8)
def task_index(dirs: tuple[str, ...] = ()):
    """lm-eval's TaskManager over the named folders of lm_eval/tasks only: indexing all of
    lm-eval's ~14k YAML files takes 30-45 s on a 2-core CPU, longer than scoring the embedded set."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    root = Path(lm_eval.tasks.__file__).parent
    return TaskManager(include_defaults=False, include_path=[str(root / d) for d in dirs])


def spec_dirs(sp) -> tuple[str, ...]:
    return (sp.lm_eval_dir,) if sp.lm_eval_dir else ()


def official_config(sp, task: str, resolve_functions: bool = True) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = task_index(spec_dirs(sp)).task_index.get(task)
    if entry is None or not entry.yaml_path:
        raise KeyError(task)
    return copy.deepcopy(load_yaml(entry.yaml_path, resolve_func=resolve_functions))


def official_subjects(sp) -> list[str]:
    """Subjects of a per-subject official task (`mmlu_{subject}`), from lm-eval's own list; only
    tasks in the folder of the spec's fallback task count (lm-eval's variants live elsewhere)."""
    prefix, _, suffix = sp.lm_eval_task.partition("{subject}")
    tm = task_index(spec_dirs(sp))
    home = sp.lm_eval_fallback
    folder = Path(tm.task_index[home].yaml_path).parent if home in tm.task_index else None
    names = []
    for t in tm.all_subtasks:
        if t.startswith(prefix) and t.endswith(suffix) and len(t) > len(prefix) + len(suffix):
            if folder is None or Path(tm.task_index[t].yaml_path).parent == folder:
                names.append(t[len(prefix): len(t) - len(suffix)])
    return sorted(set(names))


def task_name(sp, chat: bool) -> str | None:
    """The spec's lm-eval task: `lm_eval_task_chat` when prompting through a chat template."""
    if chat and sp.lm_eval_task_chat:
        return sp.lm_eval_task_chat
    return sp.lm_eval_task


def template_config(sp) -> dict:
    """A task config from the spec's own prompt template (no official lm-eval task)."""
    cfg = {"output_type": "multiple_choice", "test_split": "test", "fewshot_split": "dev",
           "fewshot_config": {"sampler": "first_n"},
           "metric_list": [{"metric": sp.metric, "aggregation": "mean", "higher_is_better": sp.higher_is_better}],
           "metadata": {"version": 1.0}}
    cfg.update(copy.deepcopy(sp.prompt.task_fields()))
    return cfg


def _with_data(cfg: dict, name: str, group: str, docs: list[dict], fs_docs: list[dict]) -> dict:
    """Point a task config at in-memory docs (eval split, and few-shot split when there are any)."""
    import datasets

    for k in ("dataset_path", "dataset_name", "tag", "group", "task_alias", "dataset_kwargs"):
        cfg.pop(k, None)
    eval_split = cfg.get("test_split") or cfg.get("validation_split")
    fs_split = cfg.get("fewshot_split") or cfg.get("training_split")
    splits = {eval_split: datasets.Dataset.from_list(docs)}
    if fs_split and fs_docs:
        splits[fs_split] = datasets.Dataset.from_list(fs_docs)
    elif fs_split:
        cfg.pop("fewshot_split", None)
        cfg.pop("training_split", None)
    dsdict = datasets.DatasetDict(splits)
    cfg["custom_dataset"] = lambda _d=dsdict, **_: _d
    cfg["task"] = f"hrlaif_{name}_{group}"
    return cfg


def task_configs(data: BenchData, sp, gen_overrides: dict | None = None, chat: bool = False,
                 resolve_functions: bool = True) -> list[dict]:
    """One lm-eval task config per group (subject): the official definition (`lm_eval_task_chat`
    instead of `lm_eval_task` when prompting through a chat template), else the spec's template."""
    configs = []
    for group, docs in sorted(data.groups.items()):
        official = task_name(sp, chat)
        described = False
        if official:
            try:
                cfg = official_config(sp, official.format(subject=group), resolve_functions)
                described = True
            except KeyError:  # a subject lm-eval does not list: reuse a sibling's template
                cfg = official_config(sp, sp.lm_eval_fallback)
        else:
            cfg = template_config(sp)
        description = (sp.prompt.description if sp.prompt else None) or sp.description
        if description and (not described or "description" not in cfg):
            cfg["description"] = description.format(subject_words=group.replace("_", " "))
        cfg = _with_data(cfg, data.name, group, docs, data.fewshot.get(group) or [])
        if gen_overrides and cfg.get("output_type") == "generate_until":
            cfg.setdefault("generation_kwargs", {}).update(gen_overrides)
        configs.append(cfg)
    return configs


def generation_configs(data: BenchData, until: list[str], max_gen_toks: int) -> list[dict]:
    """Our own greedy generation task (no official lm-eval task): continue or answer each doc's
    `prompt`, stopping at `until` (the kind section's stop strings)."""
    configs = []
    for group, docs in sorted(data.groups.items()):
        cfg = {"output_type": "generate_until", "test_split": "test", "doc_to_text": "{{prompt}}",
               "doc_to_target": "", "num_fewshot": 0, "metric_list": [{"metric": "bypass"}],
               "metadata": {"version": 1.0},
               "generation_kwargs": {"until": list(until), "do_sample": False,
                                     "max_gen_toks": max_gen_toks}}
        rows = [{k: d[k] for k in ("prompt", "doc_id", "group")} for d in docs]
        configs.append(_with_data(cfg, data.name, group, rows, []))
    return configs
