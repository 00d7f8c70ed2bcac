"""Preference labels from an AI judge: basic RLAIF and hybrid (HRLAIF) labelling.

Basic: every pair (i, j) of a prompt's K responses is judged twice, once in each slot
order (A/B swapped), to cancel position bias. Pair outcome: the order-averaged preference
p(i > j) = (P(A | i in slot A) + P(B | i in slot B)) / 2, from the judge's first-token
probabilities when the endpoint returns logprobs (1/0 from a parsed reply otherwise);
i > j if p > 0.5 + TIE_BAND, j > i if p < 0.5 - TIE_BAND, else a tie (TIE_BAND = 0 by default). An invalid judgement
in either order makes a tie. With a parsed reply this is exactly "i wins both orders".
Averaging probabilities matters for position-biased judges: a small judge that always
says "A" still moves P(A) with the content, and that signal survives the swap.
The partial order is then derived from Copeland scores (consistent wins + 0.5 per tie):
i is preferred to j iff score(i) > score(j). This is a strict weak order, so it never has
cycles even when the raw pairwise outcomes do (i > j > k > i all tie on score).

Hybrid (arXiv 2403.08309, for verifiable categories): (1) verify each response's final
answer against the standard answer, (2) every correct response is preferred to every
wrong one, (3) the judge ranks the reasoning of the correct ones only (same procedure as
basic), wrong ones stay unordered among themselves. A prompt whose standard answer
cannot be parsed falls back to basic labelling and is counted (`std_unparseable`).

Combining sources (`merge_pairs`): verified pairs and red-team pairs (trainers/feedback/
redteam.py) are constraints; judge pairs are added after them, strongest first, and only
where they do not contradict what is already there: a judge pair i > j is dropped when j
already reaches i. So every row is acyclic by construction, whatever the judge says; the
dropped judge pairs are counted (`judge_meta.judge_pairs_dropped`).

Label rows follow docs/FORMATS.md; `why` (parallel to `pairs`) says where each pair came
from and `judge_meta` holds the counts that the summary aggregates.
"""
from __future__ import annotations

import itertools
import logging
from typing import Iterable, Sequence

from core.errors import UserError
from core.stats import mean_ci
from judges import prompts as P
from judges.client import INVALID, Judge
from judges.answers import VERIFIABLE, check, is_verifiable
from judges.prompts import TIE_BAND

log = logging.getLogger(__name__)

HARMLESS = "harmlessness"


def validate_samples(samples: Sequence[dict], where: str = "samples") -> None:
    """UserError on the first sample that cannot be labelled."""
    seen: set[str] = set()
    for n, s in enumerate(samples, 1):
        sid = s.get("id")
        if sid is None or str(sid) == "":
            raise UserError(f"{where}: row {n} has no id")
        if str(sid) in seen:
            raise UserError(f"{where}: duplicate id {sid!r}")
        seen.add(str(sid))
        if not isinstance(s.get("prompt"), str):
            raise UserError(f"{where}: sample {sid!r} has no prompt")
        if not s.get("category"):
            raise UserError(f"{where}: sample {sid!r} has no category")
        rs = s.get("responses")
        if not isinstance(rs, list) or not all(isinstance(r, str) for r in rs):
            raise UserError(f"{where}: sample {sid!r} has no list of responses")
        if len(rs) < 2:
            raise UserError(f"{where}: sample {sid!r} has K={len(rs)} responses; labelling needs K >= 2")


def _new_meta() -> dict:
    return {"judgements": 0, "valid": 0, "first_slot_wins": 0, "invalid": 0,
            "harm_judgements": 0, "harm_invalid": 0, "rewrites": 0, "judge_pairs_dropped": 0}


Pair = tuple[list[int], str]  # ([better, worse], why)


def _reaches(succ: dict[int, set[int]], src: int, dst: int) -> bool:
    seen, stack = {src}, [src]
    while stack:
        node = stack.pop()
        if node == dst:
            return True
        for nxt in succ.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def merge_pairs(constraints: Sequence[Pair], judged: Sequence[Pair], sid=None) -> tuple[list[list[int]], list[str], int]:
    """(pairs, why, judge pairs dropped): constraints first, then judge pairs that agree with them.

    A pair i > j is added only if j does not already reach i, so the result is always acyclic.
    Judge pairs are tried strongest first: by the gap between how many responses i and j beat
    in the judge's own order (a Copeland order, so the gap follows the score gap), ties in the
    given order. Constraints never conflict in this module (each points into a group, verified-
    wrong or flagged-harmful, that has no outgoing constraint); one that would is dropped with a
    warning rather than a cycle."""
    succ: dict[int, set[int]] = {}
    have: set[tuple[int, int]] = set()

    def add(i: int, j: int) -> bool | None:
        """True: added; None: already there (agrees); False: would close a cycle."""
        if (i, j) in have:
            return None
        if i == j or _reaches(succ, j, i):
            return False
        succ.setdefault(i, set()).add(j)
        have.add((i, j))
        return True

    out: list[tuple[tuple[int, int], str]] = []
    for (i, j), why in constraints:
        i, j = int(i), int(j)
        ok = add(i, j)
        if ok:
            out.append(((i, j), why))
        elif ok is False:
            log.warning("sample %s: constraint %d > %d contradicts the other constraints; dropped", sid, i, j)
    pts = [(int(i), int(j)) for (i, j), _ in judged]
    wins: dict[int, int] = {}
    for i, _ in pts:
        wins[i] = wins.get(i, 0) + 1
    strongest_first = sorted(range(len(pts)), key=lambda n: wins.get(pts[n][1], 0) - wins[pts[n][0]])
    verdict = {n: add(*pts[n]) for n in strongest_first}
    # Output order: constraints, then the judge's pairs in the order given (not by strength).
    out += [(pts[n], judged[n][1]) for n in range(len(pts)) if verdict[n]]
    dropped = sum(v is False for v in verdict.values())
    return [list(p) for p, _ in out], [w for _, w in out], dropped


def judge_order(judge: Judge, idx: Sequence[int], make_messages, meta: dict) -> list[list[int]]:
    """Judge all pairs among response indices `idx` in both orders; return Copeland pairs."""
    pairs = list(itertools.combinations(idx, 2))
    batch = []
    for i, j in pairs:
        batch.append(make_messages(i, j))  # i in slot A
        batch.append(make_messages(j, i))  # j in slot A
    results = judge.choose_many(batch, ("A", "B"))
    score = {i: 0.0 for i in idx}
    for n, (i, j) in enumerate(pairs):
        (first, p1), (second, p2) = results[2 * n], results[2 * n + 1]
        for lab in (first, second):
            meta["judgements"] += 1
            if lab == INVALID:
                meta["invalid"] += 1
            else:
                meta["valid"] += 1
                meta["first_slot_wins"] += int(lab == "A")
        p_i = None if INVALID in (first, second) else (p1.get("A", 0.0) + p2.get("B", 0.0)) / 2
        i_wins = p_i is not None and p_i > 0.5 + TIE_BAND
        j_wins = p_i is not None and p_i < 0.5 - TIE_BAND
        if i_wins:
            score[i] += 1
        elif j_wins:
            score[j] += 1
        else:
            score[i] += 0.5
            score[j] += 0.5
    return [[i, j] for i in idx for j in idx if score[i] > score[j]]


def _base_row(sample: dict, mode: str) -> dict:
    row = dict(sample)
    k = len(sample["responses"])
    row["mode"] = mode
    row["responses"] = list(sample["responses"])
    row["sources"] = list(sample.get("sources") or ["policy"] * k)
    row["correct"] = [None] * k
    return row


def _basic_pairs(row: dict, judge: Judge, idx: Sequence[int], meta: dict) -> list[list[int]]:
    rs, prompt = row["responses"], row["prompt"]
    return judge_order(judge, idx, lambda a, b: P.pairwise_messages(prompt, rs[a], rs[b]), meta)


def label_one(sample: dict, judge: Judge | None, mode: str = "basic",
              verifiable: Iterable[str] = VERIFIABLE, redteam: bool = False,
              judge_correct: bool = True, rewrite: bool = True) -> dict:
    """One labels.jsonl row for one sample (see module docstring)."""
    if mode not in ("basic", "hybrid"):
        raise UserError(f"unknown labelling mode {mode!r} (basic | hybrid)")
    verifiable = {c.lower() for c in verifiable}
    row = _base_row(sample, mode)
    meta = _new_meta()
    k = len(row["responses"])
    constraints: list[Pair] = []
    judged: list[Pair] = []
    cat = str(row["category"]).lower()
    verified = False
    if mode == "hybrid" and cat in verifiable and is_verifiable(cat):
        verdicts = [check(cat, r, row.get("std_answer"), row["prompt"]) for r in row["responses"]]
        if any(v.correct is None for v in verdicts):
            meta["std_unparseable"] = 1
            log.warning("sample %s: standard answer %r cannot be parsed (%s); basic labelling",
                        row["id"], row.get("std_answer"), verdicts[0].reason)
        else:
            verified = True
            row["correct"] = [v.correct for v in verdicts]
            row["extracted"] = [v.extracted for v in verdicts]
            good = [i for i in range(k) if verdicts[i].correct]
            bad = [i for i in range(k) if not verdicts[i].correct]
            constraints += [([i, j], "verified") for i in good for j in bad]
            if judge_correct and len(good) >= 2:
                rs, prompt, std = row["responses"], row["prompt"], str(row.get("std_answer"))
                jp = judge_order(judge, good, lambda a, b: P.reasoning_messages(prompt, rs[a], rs[b], std), meta)
                judged += [(p, "judge") for p in jp]
    if not verified:
        judged += [(p, "judge") for p in _basic_pairs(row, judge, range(k), meta)]
    if redteam and cat == HARMLESS:
        from trainers.feedback.redteam import redteam_row
        constraints += redteam_row(row, judge, meta, rewrite=rewrite)
    # Acyclic by construction (see merge_pairs), so a contradictory judge never stops a run.
    row["pairs"], row["why"], dropped = merge_pairs(constraints, judged, row["id"])
    meta["judge_pairs_dropped"] += dropped
    row["invalid_judgements"] = meta["invalid"]
    row["judge_meta"] = meta
    return row


def label_basic(samples: Sequence[dict], judge: Judge, redteam: bool = False) -> list[dict]:
    validate_samples(samples)
    return [label_one(s, judge, "basic", redteam=redteam) for s in samples]


def label_hybrid(samples: Sequence[dict], judge: Judge, verifiable: Iterable[str] = VERIFIABLE,
                 redteam: bool = False, judge_correct: bool = True) -> list[dict]:
    validate_samples(samples)
    return [label_one(s, judge, "hybrid", verifiable, redteam=redteam, judge_correct=judge_correct)
            for s in samples]


def assert_acyclic(pairs: Sequence[Sequence[int]], k: int, sid=None) -> None:
    """For tests: a partial order has no cycles (the reward model's loader rejects cyclic rows)."""
    from trainers.reward_model import has_cycle

    if has_cycle(k, [(int(i), int(j)) for i, j in pairs]):
        raise AssertionError(f"sample {sid}: preference pairs contain a cycle")


def pair_rows(labels: Iterable[dict]) -> list[dict]:
    """pairs.jsonl rows: one per preference pair, for inspection."""
    out = []
    for row in labels:
        whys = row.get("why") or ["judge"] * len(row["pairs"])
        for (i, j), w in zip(row["pairs"], whys):
            out.append({"id": row["id"], "category": row["category"], "chosen": row["responses"][i],
                        "rejected": row["responses"][j], "why": w})
    return out


def summarize(labels: Sequence[dict]) -> dict:
    """Counts behind summary.json: invalid judgements, position bias, fallbacks."""
    tot = _new_meta() | {"std_unparseable": 0}
    for row in labels:
        for key, v in (row.get("judge_meta") or {}).items():
            tot[key] = tot.get(key, 0) + v
    valid = tot["valid"]
    return {
        "prompts": len(labels),
        "pairs": sum(len(r["pairs"]) for r in labels),
        "pairs_by_source": _count(w for r in labels for w in (r.get("why") or [])),
        "pairwise_judgements": tot["judgements"],
        "harm_judgements": tot["harm_judgements"],
        "rewrites": tot["rewrites"],
        "invalid_judgements": sum(r.get("invalid_judgements", 0) for r in labels),
        "invalid_pairwise": tot["invalid"] - tot["harm_invalid"],
        "invalid_harm_flags": tot["harm_invalid"],
        # judge pairs left out because they contradicted verified or red-team pairs (merge_pairs)
        "judge_pairs_dropped": tot["judge_pairs_dropped"],
        "position_bias": {"first_slot_win_share": (tot["first_slot_wins"] / valid) if valid else None,
                          "valid_decisions": valid,
                          "definition": "share of valid pairwise decisions where the response in slot A won; 0.5 = unbiased"},
        "std_unparseable": tot["std_unparseable"],
    }


def _count(items: Iterable[str]) -> dict:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


# -- label accuracy (the paper's Table 1) ------------------------------------------------
def ground_truth_pairs(row: dict) -> list[tuple[int, int]] | None:
    """Pairs (better, worse) that are known to be right, or None if the row has no truth.

    Rows may carry explicit `gt_pairs` (hh-rlhf chosen/rejected); verifiable categories
    get them from verification: each correct response beats each wrong one."""
    if row.get("gt_pairs") is not None:
        return [tuple(p) for p in row["gt_pairs"]]
    cat = str(row.get("category", "")).lower()
    if not is_verifiable(cat):
        return None
    k = sum(1 for s in (row.get("sources") or ["policy"] * len(row["responses"])) if s == "policy")
    verdicts = [check(cat, r, row.get("std_answer"), row.get("prompt")).correct for r in row["responses"][:k]]
    if any(v is None for v in verdicts):
        return None
    return [(i, j) for i in range(k) for j in range(k) if verdicts[i] and not verdicts[j]]


def label_accuracy(labels_by_mode: dict[str, Sequence[dict]], category_of=None) -> dict:
    """{category: {mode: {score, n, ci95, ties}}}: share of ground-truth pairs the labels order
    correctly. A tie or a reversed pair counts as wrong: the label carries no right answer."""
    table: dict[str, dict] = {}
    for mode, labels in labels_by_mode.items():
        per_cat: dict[str, list[int]] = {}
        ties: dict[str, int] = {}
        for row in labels:
            gt = ground_truth_pairs(row)
            if not gt:
                continue
            cat = category_of(row) if category_of else row["category"]
            have = {tuple(p) for p in row["pairs"]}
            for i, j in gt:
                per_cat.setdefault(cat, []).append(int((i, j) in have))
                ties[cat] = ties.get(cat, 0) + int((i, j) not in have and (j, i) not in have)
        for cat, scores in per_cat.items():
            table.setdefault(cat, {})[mode] = mean_ci(scores) | {"ties": ties.get(cat, 0)}
    return dict(sorted(table.items()))


def format_accuracy_table(table: dict, modes: Sequence[str] = ("basic", "hybrid")) -> str:
    lines = [f"{'category':<24}" + "".join(f"{m + ' acc [95% CI] (n)':>34}" for m in modes)]
    for cat, row in table.items():
        cells = []
        for m in modes:
            r = row.get(m)
            cells.append(f"{'-':>34}" if not r else
                         f"{r['score']:>14.3f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] ({r['n']})".rjust(34))
        lines.append(f"{cat:<24}" + "".join(cells))
    return "\n".join(lines)
