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
A response cut at the length limit (the sample's `finished[i]` false) has no final answer, so it
is unverifiable: it gets no verified pair and no judge pair (nothing, rather than the judge: a
judge pair would rank a truncated text by style against complete ones, the very confound hybrid
labelling removes), `correct[i]` stays null, and it is counted (`cut_unverifiable`). Its last
number is never graded.

Combining sources (`merge_pairs`): verified pairs and red-team pairs (hrlaif/trainers/feedback/
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

from hrlaif.core.errors import UserError
from hrlaif.judges import prompts as P
from hrlaif.judges.answers import VERIFIABLE, check, is_verifiable
from hrlaif.judges.client import INVALID, Judge
from hrlaif.judges.prompts import TIE_BAND

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


def new_meta() -> dict:
    return {"judgements": 0, "valid": 0, "first_slot_wins": 0, "invalid": 0, "cut_unverifiable": 0,
            "harm_judgements": 0, "harm_invalid": 0, "flagged": 0, "rewrites": 0, "rewrites_kept": 0,
            "rewrites_dropped": 0, "judge_pairs_dropped": 0}


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


def merge_pairs(constraints: Sequence[Pair], judged: Sequence[Pair],
                sid=None) -> tuple[list[list[int]], list[str], int]:
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


def judge_order(judge: Judge, idx: Sequence[int], make_messages, meta: dict,
                seen: list | None = None) -> list[list[int]]:
    """Judge all pairs among response indices `idx` in both orders; return Copeland pairs. Each pair's
    two verdicts go to `seen` as [i, j, verdict with i in slot A, verdict with j in slot A, P(i better)]
    (the judge audit reads them: hrlaif/judges/audit.py)."""
    pairs = list(itertools.combinations(idx, 2))
    # Sent grouped by the response in slot A: consecutive prompts then share their text up to
    # response B, which a llama.cpp server does not evaluate again (its KV cache keeps the prefix).
    order = sorted(pairs + [(j, i) for i, j in pairs])
    got = dict(zip(order, judge.choose_many([make_messages(a, b) for a, b in order], ("A", "B"))))
    results = [r for i, j in pairs for r in (got[(i, j)], got[(j, i)])]
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
        if seen is not None:
            seen.append([i, j, first, second, None if p_i is None else round(p_i, 4)])
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


def base_row(sample: dict, mode: str) -> dict:
    row = dict(sample)
    k = len(sample["responses"])
    row["mode"] = mode
    row["responses"] = list(sample["responses"])
    row["sources"] = list(sample.get("sources") or ["policy"] * k)
    row["correct"] = [None] * k
    return row


def _basic_pairs(row: dict, judge: Judge, idx: Sequence[int], meta: dict, seen: list) -> list[list[int]]:
    rs, prompt = row["responses"], row["prompt"]
    return judge_order(judge, idx, lambda a, b: P.pairwise_messages(prompt, rs[a], rs[b]), meta, seen)


def label_one(sample: dict, judge: Judge | None, mode: str = "basic",
              verifiable: Iterable[str] = VERIFIABLE, redteam: bool = False,
              judge_correct: bool = True, rewrite: bool = True, harm_judge: Judge | None = None) -> dict:
    """One labels.jsonl row for one sample (see module docstring). `harm_judge` flags and rewrites
    in red teaming (default: `judge`)."""
    if mode not in ("basic", "hybrid"):
        raise UserError(f"unknown labelling mode {mode!r} (basic | hybrid)")
    verifiable = {c.lower() for c in verifiable}
    row = base_row(sample, mode)
    meta = new_meta()
    k = len(row["responses"])
    constraints: list[Pair] = []
    judged: list[Pair] = []
    seen: list = []  # every pair the judge saw in both orders (row["judgements"])
    cat = str(row["category"]).lower()
    verified = False
    if mode == "hybrid" and cat in verifiable and is_verifiable(cat):
        fin = row.get("finished") if isinstance(row.get("finished"), list) else [True] * k
        done = [i for i in range(k) if fin[i] is not False]  # a cut response has no final answer
        verdicts = {i: check(cat, row["responses"][i], row.get("std_answer"), row["prompt"]) for i in done}
        if any(v.correct is None for v in verdicts.values()):
            meta["std_unparseable"] = 1
            log.warning("sample %s: standard answer %r cannot be parsed (%s); basic labelling",
                        row["id"], row.get("std_answer"), next(iter(verdicts.values())).reason)
        else:
            verified = True
            meta["cut_unverifiable"] = k - len(done)
            row["correct"] = [verdicts[i].correct if i in verdicts else None for i in range(k)]
            row["extracted"] = [verdicts[i].extracted if i in verdicts else None for i in range(k)]
            good = [i for i in done if verdicts[i].correct]
            bad = [i for i in done if not verdicts[i].correct]
            constraints += [([i, j], "verified") for i in good for j in bad]
            if judge_correct and len(good) >= 2:
                rs, prompt, std = row["responses"], row["prompt"], str(row.get("std_answer"))
                jp = judge_order(judge, good, lambda a, b: P.reasoning_messages(prompt, rs[a], rs[b], std), meta,
                                 seen)
                judged += [(p, "judge") for p in jp]
    if not verified:
        judged += [(p, "judge") for p in _basic_pairs(row, judge, range(k), meta, seen)]
    if redteam and cat == HARMLESS:
        from hrlaif.trainers.feedback.redteam import redteam_row
        constraints += redteam_row(row, harm_judge or judge, meta, rewrite=rewrite)
    # Acyclic by construction (see merge_pairs), so a contradictory judge never stops a run.
    row["pairs"], row["why"], dropped = merge_pairs(constraints, judged, row["id"])
    meta["judge_pairs_dropped"] += dropped
    row["invalid_judgements"] = meta["invalid"]
    row["judge_meta"] = meta
    row["judgements"] = seen
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
    from hrlaif.trainers.reward_model import has_cycle

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
    tot = new_meta() | {"std_unparseable": 0}
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
        # red teaming: responses flagged harmful, rewrites made, kept (re-judged harmless) and dropped
        "redteam": {k: tot[k] for k in ("flagged", "rewrites", "rewrites_kept", "rewrites_dropped")}
        | {"harm_invalid": tot["harm_invalid"]},
        "cut_unverifiable": tot["cut_unverifiable"],
        "invalid_judgements": sum(r.get("invalid_judgements", 0) for r in labels),
        "invalid_pairwise": tot["invalid"] - tot["harm_invalid"],
        "invalid_harm_flags": tot["harm_invalid"],
        # judge pairs left out because they contradicted verified or red-team pairs (merge_pairs)
        "judge_pairs_dropped": tot["judge_pairs_dropped"],
        "position_bias": {"first_slot_win_share": (tot["first_slot_wins"] / valid) if valid else None,
                          "valid_decisions": valid,
                          "definition": "share of valid pairwise decisions where the response in slot A won; "
                                        "0.5 = unbiased"},
        "std_unparseable": tot["std_unparseable"],
    }


def _count(items: Iterable[str]) -> dict:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out
