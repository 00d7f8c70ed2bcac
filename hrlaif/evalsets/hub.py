"""`--hub`: benchmark items from the Hugging Face hub through `datasets.load_dataset`, the call
real users make. The spec's `hub:` names the dataset (`path`, optional config `name`) and the
splits; `path` may equally be a local directory laid out like the hub dataset (its README's
`configs:` and data files), which is how the tests exercise every loader offline.

Layouts (spec format -> hub dataset):
- csv (multiple choice): one config per subject (cais/mmlu: question, choices, answer index;
  ceval/ceval-exam: id, question, A-D, answer letter). Subjects are the dataset's config names,
  restricted to lm-eval's subjects when the spec names an official task (cais/mmlu also has
  `all` and `auxiliary_train`).
- humaneval_jsonl_gz: openai/openai_humaneval (task_id, prompt, entry_point, test, ...).
- `<name>.py` (the benchmark's own code beside its spec): its `load_hub(sp)`, e.g. hrlaif/evalsets/specs/gsm8k.py
  (openai/gsm8k config `main`) and toxigen.py (toxigen/toxigen-data config `train`).
"""
from __future__ import annotations

from hrlaif.core.errors import UserError
from hrlaif.evalsets.benchdata import BenchData, humaneval_docs, mc_doc, own_code


def _why(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_split(path: str, name: str | None, split: str):
    """`datasets.load_dataset(path, name, split=split)`, any failure a one-line UserError."""
    import datasets

    try:
        return datasets.load_dataset(path, *([name] if name else []), split=split)
    except Exception as e:  # network, auth, unknown id/config/split: all fixable by the user
        where = f"{path}" + (f" (config {name})" if name else "")
        raise UserError(f"cannot load split {split!r} of {where} from the hub: {_why(e)}")


def config_names(path: str) -> list[str]:
    import datasets

    try:
        return list(datasets.get_dataset_config_names(path))
    except Exception as e:
        raise UserError(f"cannot list the configs of {path} on the hub: {_why(e)}")


def subjects(sp) -> list[str]:
    """The hub dataset's configs that are subjects of the benchmark."""
    names = config_names(sp.hub.path)
    if sp.lm_eval_task:
        from hrlaif.evalsets.lmeval_tasks import official_subjects
        official = set(official_subjects(sp))
        names = [n for n in names if n in official]
    else:
        names = [n for n in names if n not in ("all", "default")]
    if not names:
        raise UserError(f"{sp.hub.path} has no config that is a {sp.name} subject")
    return sorted(names)


def load_hub(sp) -> BenchData:
    name, hub, fmt = sp.name, sp.hub, sp.format
    src = f"hub:{hub.path}"
    if fmt.endswith(".py") and hasattr(own_code(sp), "load_hub"):
        return own_code(sp).load_hub(sp)
    if fmt == "humaneval_jsonl_gz":
        from hrlaif.evalsets.humaneval import load_problems
        return BenchData(name, src, humaneval_docs(load_problems(f"hub:{hub.path}")))
    if fmt != "csv":
        raise UserError(f"benchmark {name} has no hub loader for format {fmt!r}; pass --data-dir")
    m = sp.csv

    def conv(ds, s):
        out = []
        for i, r in enumerate(ds):
            r = dict(r)
            choices = r["choices"] if isinstance(r.get("choices"), list) else [r[c] for c in m.choices]
            out.append(mc_doc(r, r[m.question], choices, r[m.answer], r.get(m.id, i), s, sp))
        return out

    groups, fewshot = {}, {}
    for subj in subjects(sp):
        groups[subj] = conv(load_split(hub.path, subj, hub.eval_split), subj)
        fewshot[subj] = conv(load_split(hub.path, subj, hub.fewshot_split), subj)
    return BenchData(name, src, groups, fewshot)
