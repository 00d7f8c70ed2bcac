"""The harness's documents for lm-eval's own CLI: a task YAML whose `custom_dataset` is
`harness_dataset` scores exactly the items `hrlaif eval` scores (same `doc_id`, same lm-eval
`doc_hash`), so `hrlaif compare` and `hrlaif gate` pair its output with `hrlaif eval` output."""
from __future__ import annotations

from hrlaif.core.errors import UserError
from hrlaif.evalsets import registry
from hrlaif.evalsets.loaders import load


def harness_dataset(benchmark: str, group: str | None = None, data_dir: str | None = None, **_):
    """The documents `hrlaif eval` scores, for an lm-eval task YAML's `custom_dataset` (lm-eval calls it
    with the YAML's `dataset_kwargs` and `metadata`): a DatasetDict with `test` (the group's eval docs,
    each with its harness `doc_id` and `group`) and `dev` (its few-shot docs). An lm-eval run on these
    documents pairs with `hrlaif eval` output in compare and gate (same ids, same `doc_hash`):

        task: hrlaif_mmlu_abstract_algebra        # hrlaif_<benchmark>_<group> maps back to the benchmark
        custom_dataset: !function glue.harness_dataset  # glue.py imports it from hrlaif.evalsets.lmeval_docs
        dataset_kwargs: {benchmark: mmlu, group: abstract_algebra, data_dir: /data}
        test_split: test
    """
    import datasets

    data = load(registry.spec(benchmark), data_dir)
    group = group or (next(iter(data.groups)) if len(data.groups) == 1 else None)
    if group not in data.groups:
        raise UserError(f"{benchmark}: name one group of {', '.join(sorted(data.groups))} (got {group!r})")
    splits = {"test": datasets.Dataset.from_list(data.groups[group])}
    if data.fewshot.get(group):
        splits["dev"] = datasets.Dataset.from_list(data.fewshot[group])
    return datasets.DatasetDict(splits)
