"""`BenchData`: one benchmark's loaded items, the currency between loaders, kinds and the runner;
the doc shapes every source (local files, the hub, the embedded sets) builds; and a benchmark's own
code, the `<name>.py` its spec names as its format (hrlaif/evalsets/spec.py)."""
from __future__ import annotations

import functools
import importlib.util
import string
from dataclasses import dataclass, field
from pathlib import Path

from hrlaif.core.errors import UserError

DATA_DIR = Path(__file__).parent / "data"  # the embedded copies (a spec's `embedded` folder)
SHIPPED_SPECS = Path(__file__).parent / "specs"


def code_file(spec_path: str, name: str) -> Path | None:
    """A benchmark's own code file: beside its spec, else among the shipped specs (a user's spec may
    reuse a shipped benchmark's reader); None when neither has it."""
    for d in ([Path(spec_path).parent] if spec_path else []) + [SHIPPED_SPECS]:
        if (d / name).is_file():
            return d / name
    return None


def own_code(sp):
    """The module of a spec's `format: <name>.py` (lm-eval's tasks/<name>/utils.py), loaded once."""
    file = code_file(sp.path, sp.format)
    if file is None:
        raise UserError(f"benchmark {sp.name}: its format {sp.format} is not beside its spec")
    return _module(str(file))


@functools.lru_cache(maxsize=None)
def _module(file: str):
    found = importlib.util.spec_from_file_location(f"hrlaif_benchmark_code_{Path(file).stem}", file)
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module


@dataclass
class BenchData:
    name: str
    source: str  # "embedded" | "local:/abs/dir" | "hub:<id>"
    groups: dict[str, list[dict]]  # group -> eval docs (each has doc_id, group)
    fewshot: dict[str, list[dict]] = field(default_factory=dict)  # group -> few-shot docs

    def limited(self, limit: int | None) -> "BenchData":
        """Take `limit` items deterministically, round-robin across sorted groups."""
        if limit is None:
            return self
        out: dict[str, list[dict]] = {g: [] for g in sorted(self.groups)}
        taken, depth = 0, 0
        while taken < limit and any(depth < len(v) for v in self.groups.values()):
            for g in sorted(self.groups):
                if taken < limit and depth < len(self.groups[g]):
                    out[g].append(self.groups[g][depth])
                    taken += 1
            depth += 1
        return BenchData(self.name, self.source, {g: v for g, v in out.items() if v}, self.fewshot)

    @property
    def docs(self) -> list[dict]:
        return [d for g in sorted(self.groups) for d in self.groups[g]]


def mc_doc(raw: dict, question: str, choices: list[str], answer, ident, group: str, sp) -> dict:
    """A multiple-choice doc: the source fields plus question, choices and the answer (letter or index)."""
    letters = string.ascii_uppercase[:len(choices)]
    letter = letters[answer] if isinstance(answer, int) else answer
    as_index = sp.csv is not None and sp.csv.answer_as == "index"
    return {**raw, "question": question, "choices": list(choices),
            "answer": letters.index(letter) if as_index else letter, "doc_id": f"{group}/{ident}", "group": group}


def humaneval_docs(probs) -> dict[str, list[dict]]:
    from hrlaif.evalsets.humaneval import GROUP
    return {GROUP: [{**p, "doc_id": p["task_id"], "group": GROUP} for p in probs.values()]}
