"""12-category satisfaction rate, the win ratios, and PPO's gold verdicts: grading by the
evaluation judge, with the evaluation prompts (hrlaif/judges/prompts.py EVAL_*), never the labelling ones.

Satisfaction: per response one judge decision (Yes/No), with the reference answer in the
prompt when one exists. Verifiable categories (math, multiple choice) are checked first, with
the second answer check (hrlaif/judges/second_check.py: lm-eval's filters), not the hybrid labeller's
own: a wrong final answer is never satisfying, whatever the judge would say about style.

Win ratio: the judge compares model vs baseline in both orders (A/B swapped); the preference
is P(ours better) averaged over the two orders (first-token probabilities when the endpoint
gives logprobs, else 1/0 from the parsed reply). Win if it is above 0.5 + band, loss if below
0.5 - band, tie otherwise.

Invalid answers, one rule everywhere: an item whose judgement is invalid (satisfaction: the
one decision; win ratio: either order) carries `score: null` / `win: null`, is left out of the
rate (and of both sides of any paired comparison) and is counted in `extra.invalid`.

Generation and the flow per benchmark live in hrlaif/evalsets/kinds/judge.py; this module only judges.
"""
from __future__ import annotations

from hrlaif.judges import second_check
from hrlaif.judges.answers import is_verifiable
from hrlaif.judges.client import INVALID
from hrlaif.judges.prompts import TIE_BAND, eval_pairwise_messages, eval_satisfaction_messages

H2H = "win_ratio_vs_rlaif"  # the head-to-head entry of eval_hrlaif/results.json and its samples file
H2H_DEFINITION = (
    "Head-to-head: the evaluation judge compares HRLAIF's and RLAIF's satisfaction responses to the same "
    "prompt in both orders (A/B swapped), with the evaluation prompt (not the labelling one). P(HRLAIF better) "
    "averaged over the two orders: win above 0.5, loss below, tie at exactly 0.5. An invalid answer in either "
    "order makes the item invalid (win null): left out and counted in extra.invalid. Ratio = (wins + ties/2) / n.")


def judge_satisfaction(docs: list[dict], responses: list[str], judge) -> list[dict]:
    """Per doc: {score: 1|0|None, verified: True|False|None, by: 'verify'|'judge'}."""
    results: list[dict | None] = [None] * len(docs)
    to_judge = []
    for i, (d, r) in enumerate(zip(docs, responses)):
        if is_verifiable(d["category"]) and d.get("std_answer"):
            v = second_check.check(d["category"], r, d["std_answer"], d["prompt"])
            if v.correct is False:
                results[i] = {"score": 0, "verified": False, "by": "verify", "verify_reason": v.reason}
                continue
            results[i] = {"verified": v.correct, "verify_reason": v.reason}
        to_judge.append(i)
    msgs = [eval_satisfaction_messages(docs[i]["prompt"], responses[i], docs[i].get("std_answer")) for i in to_judge]
    decisions = judge.choose_many(msgs, options=["Yes", "No"]) if msgs else []
    for i, (label, probs) in zip(to_judge, decisions):
        row = results[i] or {"verified": None}
        row.update({"score": None if label == INVALID else int(label == "Yes"), "by": "judge",
                    "judge_p_yes": round(float(probs.get("Yes", 0.0)), 4)})
        results[i] = row
    return results  # type: ignore[return-value]


def judge_pairwise(docs: list[dict], ours: list[str], theirs: list[str], judge) -> list[dict]:
    """Both orders per doc (its `prompt`); {win: 1|0.5|0|None (invalid), win_invalid: answers invalid (0-2),
    first_slot_won: [bool...], pairwise: [order 1, order 2], p_ours}."""
    msgs = []
    for d, a, b in zip(docs, ours, theirs):
        msgs.append(eval_pairwise_messages(d["prompt"], a, b))  # ours in slot A
        msgs.append(eval_pairwise_messages(d["prompt"], b, a))  # ours in slot B
    dec = judge.choose_many(msgs, options=["A", "B"]) if msgs else []
    out = []
    for j in range(len(docs)):
        (d1, p1), (d2, p2) = dec[2 * j], dec[2 * j + 1]
        invalid = int(d1 == INVALID) + int(d2 == INVALID)
        p_ours = None if invalid else (p1.get("A", 0.0) + p2.get("B", 0.0)) / 2
        win = None if p_ours is None else 0.5 if abs(p_ours - 0.5) <= TIE_BAND else float(p_ours > 0.5)
        first = [x == "A" for x in (d1, d2) if x != INVALID]
        out.append({"win": win, "win_invalid": invalid, "first_slot_won": first, "pairwise": [d1, d2],
                    "p_ours": None if p_ours is None else round(p_ours, 4)})
    return out


def head_to_head(ours: list[dict], theirs: list[dict], judge) -> list[dict]:
    """Rows of two evaluations' satisfaction samples, paired on doc_id -> head-to-head rows
    {doc_id, group, prompt, output, baseline_output, win, ...} (win ratio rows, `ours` first).
    Items only one side has are left out: both must answer the same prompt."""
    by_id = {r["doc_id"]: r for r in theirs}
    pairs = [(r, by_id[r["doc_id"]]) for r in ours if r["doc_id"] in by_id]
    verdicts = judge_pairwise([a for a, _ in pairs], [a["output"] for a, _ in pairs],
                              [b["output"] for _, b in pairs], judge)
    return [{"doc_id": a["doc_id"], "group": a.get("group"), "prompt": a["prompt"], "output": a["output"],
             "baseline_output": b["output"], **v} for (a, b), v in zip(pairs, verdicts)]


def gold_verdicts(judge, prompts: list[str], responses: list[str]) -> list[int | None]:
    """The evaluation judge's satisfaction verdict per (prompt, response): 1, 0 or None (invalid).
    PPO's gold-vs-proxy view calls this (as `gold_fn`, bound to a judge by the pipeline)."""
    if not prompts:
        return []
    decisions = judge.choose_many([eval_satisfaction_messages(p, r) for p, r in zip(prompts, responses)],
                                  options=["Yes", "No"])
    return [None if label == INVALID else int(label == "Yes") for label, _ in decisions]


def head_to_head_summary(rows: list[dict], judge_fingerprint: dict | None = None) -> dict:
    """The `win_ratio_vs_rlaif` results.json entry from head-to-head rows (like the win ratio's)."""
    from types import SimpleNamespace

    from hrlaif.evalsets import scoring

    # Shaped like a derived metric's spec (hrlaif/evalsets/spec.py DerivedSpec), which it is not: no benchmark has it.
    sp = SimpleNamespace(title="Win ratio HRLAIF vs RLAIF", label="Win ratio HRLAIF vs RLAIF", metric="win_ratio",
                         higher_is_better=True, unit="%", against_baseline=True, requires="win",
                         definition=H2H_DEFINITION)
    out = scoring.win_ratio_summary(sp, rows)
    out["extra"]["baseline"] = "rlaif"
    if judge_fingerprint:
        out["judge"] = judge_fingerprint
    return out
