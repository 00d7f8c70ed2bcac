"""AI red teaming for harmlessness prompts, and loaders for harmful-prompt sets.

For a prompt of category `harmlessness`, the harmlessness judge flags each response as harmful
or not (a Yes/No `choose`); each flagged response gets a rewrite (a free-text judge call), and
each rewrite is judged again with the same harm check: only a rewrite judged harmless is kept
(appended to the responses with source "rewrite"); one judged harmful, or whose flag is
invalid, is dropped. Counts: `flagged`, `rewrites` (made), `rewrites_kept`, `rewrites_dropped`.
A flag the judge answered invalidly leaves that response out of the red-team pairs (it is
neither harmless nor harmful).

Ordering rule. The red-team pairs are hard constraints: every response flagged not harmful
> every flagged harmful one, and every rewrite > every flagged harmful one. The judge's
pairwise order is then added on top, strongest pair first, keeping a judge pair i > j only
where it does not contradict what is already there, i.e. j does not already reach i through
the constraints and the judge pairs kept so far (`labelling.merge_pairs`). Dropped judge
pairs are counted in the row's `judge_meta.judge_pairs_dropped` and in the summary.

Why this is needed and why it stays acyclic: the judge's own pairs come from Copeland scores
(a strict weak order) and the constraints alone only point into the harmful group, so each
set is acyclic; together they need not be. Example: flags Yes (0), invalid (1), No (2), and a
judge ranking 0 > 1 > 2. The constraint 2 > 0 plus the judge's 0 > 1 and 1 > 2 would be a
cycle; the rule keeps 2 > 0 and 0 > 1 and drops 0 > 2 and 1 > 2. Adding a pair only when
its reverse is not reachable can never close a cycle.

Loaders read the official file formats from any directory:
  redteam/harmbench_behaviors_text_*.csv (column Behavior, optional ContextString),
  redteam/advbench_harmful_behaviors.csv (goal,target), redteam/hh_harmless_test.jsonl
  ({chosen, rejected} transcripts: the first Human turn is the prompt).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from hrlaif.core.errors import UserError
from hrlaif.core.store import iter_jsonl
from hrlaif.judges import prompts as P
from hrlaif.judges.client import INVALID, Judge

log = logging.getLogger(__name__)

HARMLESS = "harmlessness"
EMBEDDED_PROMPTS = Path(__file__).resolve().parents[2] / "evalsets" / "data" / "redteam" / "redteam_prompts.jsonl"


def harm_flags(judge: Judge, prompt: str, responses: list[str], meta: dict) -> list[bool | None]:
    """Harmful (True), harmless (False) or invalid (None) per response; counted in `meta`."""
    flags = judge.choose_many([P.harmful_messages(prompt, r) for r in responses], ("Yes", "No"))
    harmful = [None if lab == INVALID else lab == "Yes" for lab, _ in flags]
    bad_flags = sum(h is None for h in harmful)
    meta["harm_judgements"] += len(responses)
    meta["harm_invalid"] += bad_flags
    meta["invalid"] += bad_flags
    return harmful


def redteam_row(row: dict, judge: Judge, meta: dict, rewrite: bool = True) -> list[tuple[list[int], str]]:
    """Flag, rewrite and re-judge one label row in place; return its red-team constraint pairs.

    The caller merges them with the judge's pairs (see the module docstring)."""
    prompt, rs = row["prompt"], row["responses"]
    k = len(rs)
    harmful = harm_flags(judge, prompt, rs, meta)
    bad = [i for i in range(k) if harmful[i] is True]
    safe = [i for i in range(k) if harmful[i] is False]
    meta["flagged"] += len(bad)
    constraints = [([n, h], "redteam") for n in safe for h in bad]
    if rewrite and bad:
        texts = [judge.chat(P.rewrite_messages(prompt, rs[h])).text.strip() for h in bad]
        made = [t for t in texts if t]
        if len(made) < len(texts):
            log.warning("sample %s: %d empty rewrite(s)", row["id"], len(texts) - len(made))
        meta["rewrites"] += len(made)
        verdicts = harm_flags(judge, prompt, made, meta) if made else []
        for text, still_harmful in zip(made, verdicts):
            if still_harmful is not False:  # judged harmful again, or no valid verdict: not kept
                meta["rewrites_dropped"] += 1
                continue
            meta["rewrites_kept"] += 1
            r = len(rs)
            rs.append(text)
            row["sources"].append("rewrite")
            row["correct"].append(None)
            harmful.append(False)
            if isinstance(row.get("finished"), list):
                row["finished"].append(True)
            constraints += [([r, b], "redteam") for b in bad]
    row["harmful"] = harmful
    return constraints


# -- loaders ------------------------------------------------------------------------------
def _prompt(pid: str, text: str, source: str) -> dict:
    return {"id": pid, "prompt": text.strip(), "category": HARMLESS, "std_answer": None, "lang": "en",
            "source": source}


def load_embedded_prompts(path: Path | str | None = None) -> list[dict]:
    path = Path(path or EMBEDDED_PROMPTS)
    if not path.exists():
        raise UserError(f"embedded red-team prompts not found at {path}")
    out = []
    for n, row in enumerate(iter_jsonl(path)):
        if not row.get("prompt"):
            raise UserError(f"{path}: row {n + 1} has no prompt")
        out.append({"id": str(row.get("id", f"redteam/{n}")), "prompt": row["prompt"],
                    "category": row.get("category") or HARMLESS, "std_answer": row.get("std_answer"),
                    "lang": row.get("lang", "en")})
    return out


def _read_csv(path: Path, required: list[str]) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
        return list(reader)


def load_harmbench(path: Path) -> list[dict]:
    out = []
    for n, r in enumerate(_read_csv(path, ["Behavior"])):
        text = r["Behavior"]
        if (r.get("ContextString") or "").strip():
            text = r["ContextString"].strip() + "\n\n" + text
        out.append(_prompt(f"harmbench/{r.get('BehaviorID') or n}", text, "harmbench"))
    return out


def load_advbench(path: Path) -> list[dict]:
    return [_prompt(f"advbench/{n}", r["goal"], "advbench") for n, r in enumerate(_read_csv(path, ["goal", "target"]))]


def parse_transcript(text: str) -> list[tuple[str, str]]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> [('Human', 'a'), ('Assistant', 'b')]."""
    turns: list[tuple[str, str]] = []
    rest = text
    markers = ("\n\nHuman:", "\n\nAssistant:")
    while rest:
        starts = [(rest.find(m), m) for m in markers if rest.find(m) >= 0]
        if not starts:
            if turns:
                turns[-1] = (turns[-1][0], turns[-1][1] + rest)
            break
        pos, m = min(starts)
        if turns:
            turns[-1] = (turns[-1][0], turns[-1][1] + rest[:pos])
        turns.append((m.strip().rstrip(":"), ""))
        rest = rest[pos + len(m):]
    return [(role, body.strip()) for role, body in turns]


def load_hh_prompts(path: Path) -> list[dict]:
    out = []
    for n, row in enumerate(iter_jsonl(path)):
        turns = parse_transcript(row.get("chosen", ""))
        if turns and turns[0][0] == "Human":
            out.append(_prompt(f"hh/{n}", turns[0][1], "hh-rlhf"))
    return out


def render_dialogue(turns: list[tuple[str, str]]) -> str:
    """A single-turn prefix is just the question; a longer one keeps its speaker tags."""
    if len(turns) == 1:
        return turns[0][1]
    return "\n\n".join(f"{role}: {body}" for role, body in turns)


def load_hh_pairs(path: Path | str, limit: int | None = None) -> list[dict]:
    """hh-rlhf harmless {chosen, rejected} -> {id, prompt, chosen, rejected} (final turns only).

    Items whose transcripts do not share the prefix, or whose final answers are equal, are skipped."""
    path = Path(path)
    out = []
    for n, row in enumerate(iter_jsonl(path)):
        c, r = parse_transcript(row.get("chosen", "")), parse_transcript(row.get("rejected", ""))
        if not c or not r or c[:-1] != r[:-1] or c[-1][0] != "Assistant" or r[-1][0] != "Assistant":
            continue
        if c[-1][1] == r[-1][1] or not c[-1][1] or not r[-1][1]:
            continue
        out.append({"id": f"hh/{n}", "prompt": render_dialogue(c[:-1]), "chosen": c[-1][1], "rejected": r[-1][1]})
        if limit and len(out) >= limit:
            break
    return out


def load_harmful_prompts(data_dir: Path | str | None = None, limit: int | None = None) -> list[dict]:
    """Harmful prompts: the embedded set if data_dir is None, else every official file found
    under data_dir/redteam (HarmBench, AdvBench, hh-rlhf harmless). `limit` is per source."""
    if data_dir is None:
        rows = load_embedded_prompts()
        return rows[:limit] if limit else rows
    d = Path(data_dir)
    d = d / "redteam" if (d / "redteam").is_dir() else d
    if not d.is_dir():
        raise UserError(f"red-team data directory not found: {d}")
    out: list[dict] = []
    sources = [(p, load_harmbench) for p in sorted(d.glob("harmbench_behaviors_text_*.csv"))]
    if (d / "advbench_harmful_behaviors.csv").exists():
        sources.append((d / "advbench_harmful_behaviors.csv", load_advbench))
    if (d / "hh_harmless_test.jsonl").exists():
        sources.append((d / "hh_harmless_test.jsonl", load_hh_prompts))
    if not sources:
        raise UserError(f"no red-team prompt files in {d} (harmbench_behaviors_text_*.csv, "
                        "advbench_harmful_behaviors.csv, hh_harmless_test.jsonl)")
    for p, loader in sources:
        rows = loader(p)
        out += rows[:limit] if limit else rows
    return out
