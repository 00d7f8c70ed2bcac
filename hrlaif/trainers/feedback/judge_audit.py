"""The labelling judge's audit (hrlaif/judges/audit.py) from what labelling recorded: every labels.jsonl row
keeps the verdicts of each pair the judge saw in both orders (`judgements`), so the audit costs no
extra request except the repeatability sample. Agreement with independent truth uses basic labels
only (the second answer check on verifiable prompts, human sheets, hh-rlhf pairs): hybrid labels
never ask the judge about a verified pair."""
from __future__ import annotations

from typing import Sequence

from hrlaif.core.judge_audit import audit, harm_audit, pair_record
from hrlaif.judges import prompts as P
from hrlaif.judges.audit import REPEAT_N, repeatability
from hrlaif.trainers.feedback.accuracy import TRUTH_CHECK, ground_truth_pairs


def _pairwise(row: dict) -> bool:
    """The row's judgements used the pairwise prompt (not hybrid's reasoning prompt among correct ones)."""
    return row.get("mode") == "basic" or all(c is None for c in row.get("correct") or [])


def records(rows: Sequence[dict], truth: bool = False) -> tuple[dict, set]:
    """{pair key: pair record} of the rows' judgements (truth attached from `ground_truth_pairs` when
    asked), and the truth sources seen."""
    out, sources = {}, set()
    for row in rows:
        gt = {tuple(p) for p in (ground_truth_pairs(row) or [])} if truth else set()
        if gt:
            sources.add(row.get("truth") or TRUTH_CHECK)
        rs = row["responses"]
        for i, j, d1, d2, p in row.get("judgements") or []:
            t = 1 if (i, j) in gt else 0 if (j, i) in gt else None
            key = f"{row['id']}:{i}-{j}"
            if key in out and t is None:
                continue
            out[key] = pair_record(key, rs[i], rs[j], d1, d2, p, t, pairwise=_pairwise(row))
    return out, sources


def labelling_audit(labels: Sequence[dict], basic_truth_rows: Sequence[dict], judge, mode: str,
                    repeat: int = REPEAT_N) -> dict:
    """The audit of the labelling judge in one label stage: its own labels' judgements, plus the basic
    labels computed on prompts with truth (label_accuracy's rows, hh-rlhf pairs included), with a
    repeatability sample of its pairwise requests sent again past the cache."""
    recs, _ = records(labels, truth=False)
    truth_recs, sources = records(basic_truth_rows, truth=True)
    recs.update(truth_recs)  # the same calls (cached): the truth rides on them
    by_id = {str(r["id"]): r for r in list(labels) + list(basic_truth_rows)}
    requests = []
    for key, rec in recs.items():
        if rec.get("pairwise"):
            sid, _, ij = key.rpartition(":")
            i, j = (int(x) for x in ij.split("-"))
            row = by_id[sid]
            requests.append(P.pairwise_messages(row["prompt"], row["responses"][i], row["responses"][j]))
    rep = repeatability(judge, requests, n=repeat)
    return audit(list(recs.values()), "labelling", judge.identity, rep, sorted(sources), stage_mode=mode,
                 definition="pairs the labelling judge compared in both orders while labelling (labels.jsonl "
                            "`judgements`) and, for agreement, basic labels on prompts with independent truth")


def harmlessness_audit(hh_rows: Sequence[dict], judge, repeat: int = REPEAT_N) -> dict | None:
    """The harmlessness judge's audit on the label-accuracy table's hh-rlhf pairs (chosen = response 0,
    flags in `harmful`), with a repeatability sample of its harm checks; None without such rows."""
    rows = [r for r in hh_rows if isinstance(r.get("harmful"), list) and len(r["harmful"]) >= 2]
    if not rows:
        return None
    requests = [P.harmful_messages(r["prompt"], resp) for r in rows for resp in r["responses"][:2]]
    rep = repeatability(judge, requests, ("Yes", "No"), n=repeat)
    return harm_audit([tuple(r["harmful"][:2]) for r in rows], judge.identity, rep, sorted({r["truth"] for r in rows}),
                      definition="harm checks of hh-rlhf chosen and rejected responses (label-accuracy pairs)")
