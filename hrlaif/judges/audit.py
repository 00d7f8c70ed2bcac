"""Asking a judge for its audit (hrlaif/core/judge_audit.py holds the statistics and the degenerate rule):
`judge_both_orders` judges preference pairs in both slot orders, `repeatability` sends a small sample
of requests again past the request cache; `AuditConfig` is `hrlaif audit-judge`'s settings."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

from hrlaif.core.judge_audit import pair_record, rate
from hrlaif.core.settings import Settings, existing_file, setting
from hrlaif.judges.client import INVALID

REPEAT_N = 8  # requests sent twice for repeatability (a small sample: each costs a call)


@dataclass
class AuditConfig(Settings):
    """Every knob of `hrlaif audit-judge` (hrlaif/harness/commands/audit_judge.py); the judge is a JudgeConfig."""

    pairs: str = setting("", "preference pairs, in the formats eval-rm takes: hh-rlhf {chosen, rejected} "
                             "transcripts, {prompt, chosen, rejected} rows, or labels.jsonl-format groups",
                         check=existing_file)
    limit: int = setting(100, "audit the first N pairs (0 = all); each costs two requests", min=0)
    prompt: str = setting("labelling", "the pairwise prompt to audit: the labelling judge's or the evaluation "
                                       "judge's (hrlaif/judges/prompts.py)", choices=("labelling", "evaluation"))
    repeat: int = setting(REPEAT_N, "requests sent a second time with the cache bypassed (repeatability)", min=0)
    out: str | None = setting(None, "also write the audit here (JSON)")


def judge_both_orders(judge, items: Sequence[dict], make_messages: Callable[[str, str, str], list[dict]]
                      ) -> tuple[list[dict], list[list[dict]]]:
    """Pair records for items {id, prompt, chosen, rejected} (x = chosen, truth 1), and the requests sent."""
    msgs = []
    for it in items:
        msgs.append(make_messages(it["prompt"], it["chosen"], it["rejected"]))
        msgs.append(make_messages(it["prompt"], it["rejected"], it["chosen"]))
    dec = judge.choose_many(msgs, ("A", "B")) if msgs else []
    out = []
    for n, it in enumerate(items):
        (d1, p1), (d2, p2) = dec[2 * n], dec[2 * n + 1]
        p_x = None if INVALID in (d1, d2) else (p1.get("A", 0.0) + p2.get("B", 0.0)) / 2
        out.append(pair_record(it["id"], it["chosen"], it["rejected"], d1, d2, p_x, truth=1))
    return out, msgs


def repeatability(judge, requests: Sequence[list[dict]], options: Sequence[str] = ("A", "B"),
                  n: int = REPEAT_N, seed: int = 0) -> dict | None:
    """{score, ci95, n, max_dp}: up to n requests (a seeded draw) asked again with the cache bypassed;
    same = the same label (max_dp: the largest change of P(first option) seen)."""
    if not requests or n <= 0:
        return None
    idx = sorted(random.Random(seed).sample(range(len(requests)), min(n, len(requests))))
    same, dps = 0, []
    for i in idx:
        a, pa = judge.choose(requests[i], options)
        b, pb = judge.choose(requests[i], options, fresh=True)
        same += a == b
        dps.append(abs(pa.get(options[0], 0.0) - pb.get(options[0], 0.0)))
    return rate(same, len(idx)) | {"max_dp": round(max(dps), 4)}
