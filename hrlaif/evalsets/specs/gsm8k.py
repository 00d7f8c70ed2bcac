"""GSM8K's own code, beside its spec (`format: gsm8k.py`), as lm-eval's tasks/<name>/utils.py: its
jsonl files (`read`, one file per split) and its hub dataset (`load_hub`, openai/gsm8k config main)."""
from __future__ import annotations

from pathlib import Path

from hrlaif.core.errors import UserError
from hrlaif.core.store import iter_jsonl_numbered
from hrlaif.evalsets.benchdata import BenchData
from hrlaif.evalsets.hub import load_split


def doc(question: str, answer: str, group: str, i: int) -> dict:
    return {"question": question, "answer": answer, "doc_id": f"{group}/{i}", "group": group}


def read(path: Path, group: str, sp) -> list[dict]:
    """One jsonl file of {question, answer}; the answer ends with '#### <number>'."""
    docs = []
    for lineno, r in iter_jsonl_numbered(path):
        if "question" not in r or "answer" not in r:
            raise UserError(f"{path}:{lineno}: expected fields question and answer (GSM8K jsonl)")
        docs.append(doc(r["question"], r["answer"], group, lineno - 1))
    return docs


def load_hub(sp) -> BenchData:
    """The eval split, and the few-shot examples from the few-shot split: one group, `test`."""
    def split(name: str) -> list[dict]:
        return [doc(r["question"], r["answer"], "test", i)
                for i, r in enumerate(load_split(sp.hub.path, sp.hub.name, name))]

    return BenchData(sp.name, f"hub:{sp.hub.path}", {"test": split(sp.hub.eval_split)},
                     {"test": split(sp.hub.fewshot_split)})
