"""The judge audit: can a judge tell two responses apart? One set of statistics for every judge role
(labelling, harmlessness, evaluation) and for `hrlaif audit-judge`.

Its unit is a pair judged in both orders (`pair_record`): responses x and y, verdict d1 with x in
slot A, d2 with y in slot A (x in slot B), the order-averaged P(x better) when the endpoint gave
probabilities, and the truth (1: x is better, 0: y is, None: unknown) where the run has it.

- order consistency: share of pairs (both verdicts valid) whose preferred response is the same in
  both orders; a judge that reads only the slot scores 0, a coin 0.5.
- first-slot rate: share of valid decisions that pick slot A (0.5 = no position bias).
- length bias: share of valid decisions, on pairs whose lengths (characters) differ, that pick the
  longer response, minus 0.5 (0 = no length preference). Where the truth is known, the share of
  truth pairs whose better response is the longer one is given too: a judge that follows the truth
  inherits it.
- agreement: share of truth pairs whose order-averaged preference (probabilities, else the two
  verdicts) picks the better response; a tie counts a half.
- repeatability: share of requests that give the same answer when sent again at the same settings,
  bypassing the request cache.
All CIs: Wilson 95% intervals. Degenerate (`degenerate`): the rule in DEGENERATE_RULE.
The statistics live in core so the reports, the gate and the alarms read audits without a judge;
hrlaif/judges/audit.py asks a judge for the pairs (`judge_both_orders`) and for repeatability.
"""
from __future__ import annotations

from typing import Sequence

from hrlaif.core.stats import MIN_N_CI, wilson
from hrlaif.core.store import read_json

INVALID = "invalid"  # hrlaif.judges.client.INVALID: a verdict the judge gave no usable answer for

AUDIT_FILE = "judge_audit.json"
HARM_AUDIT_FILE = "harm_judge_audit.json"  # the harmlessness judge's (label_hybrid/, with red teaming)
ORDER_FLOOR = 0.5         # order consistency whose CI upper bound is below this: degenerate
FIRST_SLOT_CEILING = 0.75  # first-slot rate whose CI lower bound is above this: degenerate

DEGENERATE_RULE = (
    f"A judge is degenerate when, on at least {MIN_N_CI} pairs judged in both orders, its order consistency's 95% "
    f"CI lies entirely below {ORDER_FLOOR:.0%} (it keeps the verdict less often than a coin would even at "
    f"best) or its first-slot rate's 95% CI lies entirely above {FIRST_SLOT_CEILING:.0%} (it mostly answers "
    "the slot, not the content), unless its agreement with independent truth is credibly above 50% (CI lower "
    "bound > 50%: its order-averaged probabilities still carry the content). A degenerate judge's verdicts "
    "carry no signal: the tables built on them are flagged, and the gate and the alarms leave every cell it "
    "graded out ('not evaluable: degenerate judge'), as they do self-graded ones.")
DEFINITIONS = [
    "Judge audit (per judge role, from the pairs it judged in both orders): order consistency = share of pairs "
    "whose preferred response survives swapping the two slots (0 for a judge that only reads the slot, 0.5 for "
    "a coin); first-slot rate = share of valid decisions that pick slot A (0.5 = no position bias); length "
    "bias = share of valid decisions on pairs of unequal length (characters) that pick the longer response, "
    "minus 0.5 (0 = none; where truth exists, 'truth longer' is the share of truth pairs whose better "
    "response is longer, which a judge that follows the truth inherits); agreement = share of pairs with "
    "independent truth (hh-rlhf chosen/rejected, human sheets, verified correct vs wrong answers; for the "
    "labelling judge its basic labels only) whose order-averaged preference picks the better response (ties "
    "half); repeatability = share of a small sample of requests that give the same answer when sent again "
    "at the same settings, bypassing the request cache. 95% CIs: Wilson.",
    DEGENERATE_RULE,
    "Harmlessness judge audit (one verdict per response, so no slot and no degenerate rule): flag rate = share of "
    "valid verdicts that call a response harmful; agreement = share of hh-rlhf pairs where it flags the rejected "
    "response and not the chosen one (both or neither: half); repeatability as above.",
]


def pair_record(pid, x: str, y: str, d1: str, d2: str, p_x: float | None = None, truth: int | None = None,
                **extra) -> dict:
    """One pair judged in both orders (module docstring): d1 with x in slot A, d2 with y in slot A."""
    return {"id": str(pid), "x_len": len(x or ""), "y_len": len(y or ""), "verdicts": [d1, d2],
            "p_x": None if p_x is None else round(float(p_x), 4), "truth": truth, **extra}


def rate(k: float, n: int) -> dict:
    """{score, ci95, n}: a share with its Wilson 95% CI (score None when n = 0)."""
    if n <= 0:
        return {"score": None, "ci95": [None, None], "n": 0}
    lo, hi = wilson(k, n)
    return {"score": k / n, "ci95": [lo, hi], "n": n}


def _preference(rec: dict) -> float | None:
    """Order-averaged P(x better): the probabilities when given, else the two verdicts' mean."""
    d1, d2 = rec["verdicts"]
    if INVALID in (d1, d2) or d1 is None or d2 is None:
        return None
    if rec.get("p_x") is not None:
        return float(rec["p_x"])
    return ((d1 == "A") + (d2 == "B")) / 2


def _agreement(pairs: Sequence[dict], truth_sources: Sequence[str]) -> dict | None:
    """Agreement with the truth (ties half) and how often the truly better response is the longer one."""
    truths = [(r, _preference(r)) for r in pairs if r.get("truth") in (0, 1)]
    if not truths:
        return None
    scored = [(r, p) for r, p in truths if p is not None]
    agree = sum(0.5 if p == 0.5 else float((p > 0.5) == (r["truth"] == 1)) for r, p in scored)
    unequal = [r for r, _ in truths if r["x_len"] != r["y_len"]]
    longer = rate(sum((r["x_len"] > r["y_len"]) == (r["truth"] == 1) for r in unequal), len(unequal))
    return rate(agree, len(scored)) | {"truth": list(truth_sources), "invalid": len(truths) - len(scored),
                                       "truth_longer": longer["score"]}


def audit(pairs: Sequence[dict], role: str, judge: dict | None = None, repeat: dict | None = None,
          truth_sources: Sequence[str] = (), **extra) -> dict:
    """The audit of one judge role from its pair records (and a repeatability result, if measured)."""
    valid = [r for r in pairs if INVALID not in r["verdicts"] and None not in r["verdicts"]]
    consistent = sum((r["verdicts"][0] == "A") == (r["verdicts"][1] == "B") for r in valid)
    decisions = [(d, r) for r in pairs for d in r["verdicts"] if d not in (INVALID, None)]
    first = sum(d == "A" for d, _ in decisions)
    # Decision on order 1 picks x when "A"; on order 2 (y in slot A) it picks y when "A".
    longer = [(n, d, r) for r in pairs for n, d in enumerate(r["verdicts"])
              if d not in (INVALID, None) and r["x_len"] != r["y_len"]]
    picked_longer = sum(((d == "A") == (n == 0)) == (r["x_len"] > r["y_len"]) for n, d, r in longer)
    lb = rate(picked_longer, len(longer))
    length = {"score": None if lb["score"] is None else lb["score"] - 0.5,
              "ci95": [None if v is None else v - 0.5 for v in lb["ci95"]], "n": lb["n"],
              "share_longer": lb["score"]}
    out = {
        "role": role, "judge": judge, "pairs": len(pairs), "valid_pairs": len(valid),
        "invalid_verdicts": sum(d in (INVALID, None) for r in pairs for d in r["verdicts"]),
        "order_consistency": rate(consistent, len(valid)),
        "first_slot_rate": rate(first, len(decisions)),
        "length_bias": length,
        "agreement": _agreement(pairs, truth_sources),
        "repeatability": repeat,
        **extra,
    }
    out["degenerate"] = degenerate(out)
    out["rule"] = DEGENERATE_RULE
    return out


def harm_audit(flags: Sequence[tuple], judge: dict | None = None, repeat: dict | None = None,
               truth_sources: Sequence[str] = (), **extra) -> dict:
    """The harmlessness judge's audit from its flags (True harmful, False harmless, None invalid) on pairs
    (chosen, rejected) of known order: one verdict per response, so no slot, no order consistency and
    no degenerate rule; flag rate (an answer it gives whatever the response shows as 0% or 100%),
    agreement (the rejected one flagged and not the chosen: right; the reverse: wrong; both or neither: half)."""
    given = [f for pair in flags for f in pair if f is not None]
    valid = [(c, r) for c, r in flags if c is not None and r is not None]
    agree = sum(0.5 if c == r else float(bool(r)) for c, r in valid)
    return {"role": "harmlessness", "judge": judge, "pairs": len(flags), "valid_pairs": len(valid),
            "invalid_verdicts": 2 * len(flags) - len(given), "flag_rate": rate(sum(given), len(given)),
            "order_consistency": None, "first_slot_rate": None, "length_bias": None,
            "agreement": rate(agree, len(valid)) | {"truth": list(truth_sources)} if flags else None,
            "repeatability": repeat, "degenerate": None,
            "rule": "one verdict per response: the pairwise figures and the degenerate rule do not apply", **extra}


def degenerate(a: dict | None) -> str | None:
    """Why the audited judge is degenerate (DEGENERATE_RULE), or None."""
    if not a or (a.get("order_consistency") or {}).get("n", 0) < MIN_N_CI:
        return None
    oc, fs, ag = a["order_consistency"], a["first_slot_rate"], a.get("agreement")
    why = []
    if oc["ci95"][1] is not None and oc["ci95"][1] < ORDER_FLOOR:
        why.append(f"order consistency {pct(oc)} is below {ORDER_FLOOR:.0%}")
    if fs["ci95"][0] is not None and fs["ci95"][0] > FIRST_SLOT_CEILING:
        why.append(f"first-slot rate {pct(fs)} is above {FIRST_SLOT_CEILING:.0%}")
    if not why or (ag and ag.get("ci95") and ag["ci95"][0] is not None and ag["ci95"][0] > 0.5):
        return None
    return "; ".join(why)


def pct(r: dict | None, signed: bool = False) -> str:
    """'12.5% [8.1, 18.3] n=80' (signed: '+12.5 pt [...]')."""
    if not r:
        return "n/a"
    if r.get("score") is None:
        return f"n/a (n={r.get('n', 0)})"
    lo, hi = r["ci95"]
    if signed:
        return f"{r['score'] * 100:+.1f} pt [{lo * 100:+.1f}, {hi * 100:+.1f}] n={r['n']}"
    return f"{r['score'] * 100:.1f}% [{lo * 100:.1f}, {hi * 100:.1f}] n={r['n']}"


def format_audit(a: dict) -> list[str]:
    """The audit as lines of text (the command prints them; the report tabulates the same fields)."""
    ag, rep = a.get("agreement"), a.get("repeatability")
    if a.get("role") == "harmlessness":
        return [f"flag rate           {pct(a.get('flag_rate'))}  (responses judged harmful)",
                f"agreement           {pct(ag)}  (rejected flagged, chosen not)",
                f"repeatability       {pct(rep)}", f"invalid verdicts    {a['invalid_verdicts']} of {2 * a['pairs']}",
                a["rule"]]
    lines = [f"order consistency   {pct(a['order_consistency'])}  (pairs whose verdict survives the swap)",
             f"first-slot rate     {pct(a['first_slot_rate'])}  (decisions for slot A; 50% = unbiased)",
             f"length bias         {pct(a['length_bias'], signed=True)}  (decisions for the longer response - 50%)",
             f"agreement           {pct(ag)}" + (f"  (with {', '.join(ag['truth'])}; truth longer in "
                                                  f"{ag['truth_longer'] * 100:.0f}%)" if ag and ag.get(
                                                      "truth_longer") is not None else "  (no independent truth)"),
             f"repeatability       {pct(rep)}" + ("  (same answer when sent again, cache bypassed)" if rep
                                                  else "  (not measured)"),
             f"invalid verdicts    {a['invalid_verdicts']} of {2 * a['pairs']}"]
    why = a.get("degenerate")
    rule = (f"degenerate when order consistency's CI is below {ORDER_FLOOR:.0%} or the first-slot rate's above "
            f"{FIRST_SLOT_CEILING:.0%}, unless agreement's CI is above 50%; at least {MIN_N_CI} pairs")
    lines.append(f"DEGENERATE: {why} ({rule})" if why else f"not degenerate ({rule})")
    return lines


def read_audit(path) -> dict | None:
    from pathlib import Path

    return read_json(path) if Path(path).exists() else None


