"""Label accuracy (the paper's Table 1) against truth the labeller did not produce.

Truth, per source (each table row names its own in `truth`):
- verifiable prompts (math, multiple choice): the second answer check (hrlaif/judges/second_check.py:
  lm-eval's own filters), never the hybrid labeller's check (hrlaif/judges/answers.py), which would give
  hybrid 100% by construction. Every response it finds correct beats every one it finds wrong;
  a response cut at the length limit (`finished` false) has no truth.
- human preferences: hh-rlhf harmless chosen/rejected pairs (category "harmlessness (hh-rlhf)")
  and pairs from sheets returned through `hrlaif annotate import` (the label stage's
  `human_pairs` file; category "<category> (human)").
Where the labeller's check and the second check disagree on a response, it is listed
(`answer_check_disagreements` in label_accuracy.json, and the report).

Rows scored against the second answer check are named "<category> (answer-check agreement)":
hybrid's verified pairs enforce the same "correct beats wrong", so hybrid scores near 100% there
by construction; they measure agreement of two answer checks, not label quality. Label accuracy
proper is against human preferences (hh-rlhf, annotate sheets), where pairs of two correct answers
of a verifiable prompt (the reasoning pairs the AI judge decides within hybrid labelling) get a
row of their own ("<category> (human) · both correct (human)").

Accuracy = share of truth pairs the labels order correctly (a tie or a reversed pair is wrong:
the label carries no right answer), with a 95% bootstrap CI that resamples prompts (a prompt's
pairs share its responses: hrlaif.core.stats.cluster_bootstrap_mean). Hybrid − basic is paired on the
same truth pairs (each pair scores +1, 0 or -1), its CI clustered by prompt (`hybrid_minus_basic`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hrlaif.core.errors import UserError
from hrlaif.core.stats import cluster_bootstrap_mean
from hrlaif.core.store import iter_jsonl
from hrlaif.judges import answers, second_check

TRUTH_CHECK = f"second answer check ({second_check.NAME}), not the labeller's"
TRUTH_HH = "human preference (hh-rlhf chosen/rejected)"
TRUTH_HUMAN = "human preference (hrlaif annotate)"
DISAGREEMENTS = "answer_check_disagreements"  # the key in label_accuracy.json (not a category)
AGREEMENT = "answer-check agreement"  # rows scored against the second answer check
BOTH_CORRECT = "both correct (human)"  # human-ranked pairs of two correct answers
PAIRED = "hybrid_minus_basic"  # the paired difference on the same pairs, in each row
HUMAN_SUFFIX = " (human)"  # the label stage's rows scored against human sheets
MAX_LISTED = 50  # disagreements listed in full; all are counted


def _policy(row: dict) -> int:
    """How many responses are the policy's (rewrites are appended after them)."""
    return sum(1 for s in (row.get("sources") or ["policy"] * len(row["responses"])) if s == "policy")


def _finished(row: dict, i: int) -> bool:
    fin = row.get("finished")
    return not (isinstance(fin, list) and i < len(fin) and fin[i] is False)


def check_all(rows: Sequence[dict]) -> None:
    """Run the second answer check over every response of `rows` in one batch, so the per-row
    calls below (ground_truth_pairs, both_correct, check_disagreements) read remembered verdicts."""
    items = []
    for r in rows:
        cat = str(r.get("category", "")).removesuffix(HUMAN_SUFFIX)
        if r.get("std_answer") and answers.is_verifiable(cat):
            items += [(cat, resp, r["std_answer"], r.get("prompt")) for resp in r["responses"][:_policy(r)]]
    second_check.check_many(items)


def ground_truth_pairs(row: dict) -> list[tuple[int, int]] | None:
    """Pairs (better, worse) known to be right, or None when the row has no truth: explicit
    `gt_pairs` (human), else for verifiable categories the second answer check."""
    if row.get("gt_pairs") is not None:
        return [tuple(p) for p in row["gt_pairs"]]
    cat = str(row.get("category", ""))
    if not answers.is_verifiable(cat):
        return None
    k = _policy(row)
    verdicts = [second_check.check(cat, row["responses"][i], row.get("std_answer"), row.get("prompt")).correct
                if _finished(row, i) else None for i in range(k)]
    known = [i for i in range(k) if verdicts[i] is not None]
    if not known:
        return None
    return [(i, j) for i in known for j in known if verdicts[i] and not verdicts[j]]


def truth_of(row: dict) -> str:
    return row.get("truth") or (TRUTH_CHECK if row.get("gt_pairs") is None else TRUTH_HUMAN)


def both_correct(row: dict, i: int, j: int) -> bool:
    """Both responses of a human-ranked pair are right by the second answer check (a verifiable
    prompt): the reasoning pairs, the only ones among verifiable prompts the hybrid labeller leaves
    to the AI judge."""
    cat = str(row.get("category", "")).removesuffix(HUMAN_SUFFIX)
    if row.get("gt_pairs") is None or not answers.is_verifiable(cat) or not row.get("std_answer"):
        return False
    return all(_finished(row, k) and second_check.check(cat, row["responses"][k], row["std_answer"],
                                                        row.get("prompt")).correct is True for k in (i, j))


def row_name(row: dict, cat: str, i: int, j: int) -> tuple[str, str]:
    """(table row, truth) of one truth pair: rows scored against the second answer check are
    'answer-check agreement' (hybrid's verified pairs enforce the same 'correct beats wrong', so
    they measure agreement of two answer checks, not label accuracy); human-ranked pairs of two
    correct answers get a row of their own."""
    truth = truth_of(row)
    if truth == TRUTH_CHECK:
        return f"{cat} ({AGREEMENT})", truth
    if both_correct(row, i, j):
        return f"{cat} · {BOTH_CORRECT}", f"{truth}, between two answers the second check finds correct"
    return cat, truth


def label_accuracy(labels_by_mode: dict[str, Sequence[dict]], category_of=None) -> dict:
    """{row: {mode: {score, n, n_clusters, ci95, ci_method, ties}, truth: str, hybrid_minus_basic:
    {score, n, n_clusters, ci95, ci_method}}}: per row (row_name) each mode's accuracy, and hybrid −
    basic paired on the same truth pairs with a CI clustered by prompt."""
    table: dict[str, dict] = {}
    outcome: dict[str, dict[str, dict[tuple, int]]] = {}  # row -> mode -> {(id, i, j): 1 | 0}
    for mode, labels in labels_by_mode.items():
        per_cat: dict[str, list[tuple[int, str]]] = {}
        ties: dict[str, int] = {}
        for row in labels:
            gt = ground_truth_pairs(row)
            if not gt:
                continue
            cat = category_of(row) if category_of else row["category"]
            have = {tuple(p) for p in row["pairs"]}
            for i, j in gt:
                name, truth = row_name(row, cat, i, j)
                table.setdefault(name, {})["truth"] = truth
                ok = int((i, j) in have)
                per_cat.setdefault(name, []).append((ok, str(row["id"])))
                outcome.setdefault(name, {}).setdefault(mode, {})[(str(row["id"]), i, j)] = ok
                ties[name] = ties.get(name, 0) + int((i, j) not in have and (j, i) not in have)
        for cat, scores in per_cat.items():
            table[cat][mode] = cluster_bootstrap_mean([s for s, _ in scores], [c for _, c in scores]) | {
                "ties": ties.get(cat, 0)}
    for name, by in outcome.items():
        if "basic" in by and "hybrid" in by:
            keys = sorted(set(by["basic"]) & set(by["hybrid"]))
            if keys:
                table[name][PAIRED] = cluster_bootstrap_mean([by["hybrid"][k] - by["basic"][k] for k in keys],
                                                             [k[0] for k in keys])
    return dict(sorted(table.items()))


def check_disagreements(samples: Sequence[dict]) -> dict:
    """Responses of verifiable prompts where the labeller's check and the second check differ."""
    checked, items = 0, []
    for s in samples:
        cat = str(s.get("category", ""))
        if not answers.is_verifiable(cat) or not s.get("std_answer"):
            continue
        for i in range(_policy(s)):
            if not _finished(s, i):
                continue
            r = s["responses"][i]
            a = answers.check(cat, r, s["std_answer"], s.get("prompt"))
            b = second_check.check(cat, r, s["std_answer"], s.get("prompt"))
            if a.correct is None or b.correct is None:
                continue
            checked += 1
            if a.correct != b.correct:
                items.append({"id": s["id"], "response": i, "category": cat, "std_answer": str(s["std_answer"]),
                              "text": r[:300], "labeller": {"correct": a.correct, "extracted": a.extracted},
                              "second": {"correct": b.correct, "extracted": b.extracted, "reason": b.reason}})
    return {"checked": checked, "n": len(items), "items": items[:MAX_LISTED],
            "definition": f"responses of verifiable prompts (cut ones excluded) where the hybrid labeller's answer "
                          f"check and the {TRUTH_CHECK} disagree"}


def load_human_pairs(path: str | Path, samples_by_id: dict[str, dict]) -> dict[str, list[list[int]]]:
    """{id: [[better, worse], ...]} from `hrlaif annotate import`'s human_pairs.jsonl, checked
    against the samples (ties carry no truth and are left out)."""
    out: dict[str, list[list[int]]] = {}
    for n, row in enumerate(iter_jsonl(path), 1):
        sid = str(row.get("id"))
        if sid not in samples_by_id:
            raise UserError(f"{path}:{n}: id {sid!r} is not in the samples (a sheet from another run?)")
        k = len(samples_by_id[sid]["responses"])
        for p in row.get("pairs") or []:
            if len(p) != 2 or not all(isinstance(x, int) and 0 <= x < k for x in p) or p[0] == p[1]:
                raise UserError(f"{path}:{n}: pair {p!r} is not two response indices below {k}")
            out.setdefault(sid, []).append([int(p[0]), int(p[1])])
    return out


def format_accuracy_table(table: dict, modes: Sequence[str] = ("basic", "hybrid")) -> str:
    lines = [f"{'category':<24}" + "".join(f"{m + ' acc [95% CI] (n)':>34}" for m in modes) + "  truth"]
    for cat, row in table.items():
        if cat == DISAGREEMENTS:
            continue
        d = row.get(PAIRED)
        cells = []
        for m in modes:
            r = row.get(m)
            cells.append(f"{'-':>34}" if not r else
                         f"{r['score']:>14.3f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] ({r['n']})".rjust(34))
        paired = f"  hybrid-basic {d['score']:+.3f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d else ""
        lines.append(f"{cat:<24}" + "".join(cells) + paired + f"  {row.get('truth', '')}")
    d = table.get(DISAGREEMENTS)
    if d:
        lines.append(f"answer checks disagree on {d['n']} of {d['checked']} verifiable responses")
    return "\n".join(lines)
