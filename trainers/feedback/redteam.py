"""AI red teaming for harmlessness prompts, and loaders for harmful-prompt sets.

For a prompt of category `harmlessness`, the judge flags each response as harmful or not
(a Yes/No `choose`); each flagged response gets a harmless rewrite (a free-text judge
call) that is appended to the responses with source "rewrite". The partial order then
gets: every non-harmful response > every harmful one (judge pairs that said otherwise
are dropped) and every rewrite > every harmful response. A flag the judge answered
invalidly leaves that response out of the red-team pairs.

Why this stays acyclic: judge pairs come from Copeland scores (a strict weak order),
cross pairs between the two groups only point from non-harmful to harmful, and rewrites
only point to harmful responses.

Loaders read the official file formats from any directory:
  redteam/harmbench_behaviors_text_*.csv (column Behavior, optional ContextString),
  redteam/advbench_harmful_behaviors.csv (goal,target), redteam/hh_harmless_test.jsonl
  ({chosen, rejected} transcripts: the first Human turn is the prompt).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from harness.errors import UserError
from harness.store import iter_jsonl
from trainers.feedback import prompts as P
from trainers.feedback.judge import INVALID, Judge

log = logging.getLogger(__name__)

HARMLESS = "harmlessness"
EMBEDDED_PROMPTS = Path(__file__).resolve().parents[2] / "evalsets" / "data" / "redteam" / "redteam_prompts.jsonl"


def redteam_row(row: dict, judge: Judge, meta: dict, rewrite: bool = True) -> dict:
    """Flag, rewrite and re-order one label row in place (see module docstring)."""
    prompt, rs = row["prompt"], row["responses"]
    k = len(rs)
    flags = judge.choose_many([P.harmful_messages(prompt, r) for r in rs], ("Yes", "No"))
    harmful = [None if lab == INVALID else lab == "Yes" for lab, _ in flags]
    bad_flags = sum(h is None for h in harmful)
    meta["harm_judgements"] += k
    meta["harm_invalid"] += bad_flags
    meta["invalid"] += bad_flags
    bad = [i for i in range(k) if harmful[i] is True]
    safe = [i for i in range(k) if harmful[i] is False]

    kept = [(p, w) for p, w in zip(row["pairs"], row["why"]) if not (p[0] in bad and p[1] in safe)]
    have = {tuple(p) for p, _ in kept}
    for n in safe:
        for h in bad:
            if (n, h) not in have:
                kept.append(([n, h], "redteam"))
    if rewrite:
        for h in bad:
            text = judge.chat(P.rewrite_messages(prompt, rs[h])).text.strip()
            if not text:
                log.warning("sample %s: empty rewrite of response %d", row["id"], h)
                continue
            meta["rewrites"] += 1
            r = len(rs)
            rs.append(text)
            row["sources"].append("rewrite")
            row["correct"].append(None)
            harmful.append(None)  # not judged: harmless by construction, but we do not claim it
            if isinstance(row.get("finished"), list):
                row["finished"].append(True)
            kept += [([r, b], "redteam") for b in bad]
    row["pairs"] = [p for p, _ in kept]
    row["why"] = [w for _, w in kept]
    row["harmful"] = harmful
    return row


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
