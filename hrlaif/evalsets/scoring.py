"""Summary building blocks: per-sample rows -> the numbers of one results.json entry.

Each kind (hrlaif/evalsets/kinds/) summarizes its own rows with these helpers, so every figure in
`results.json` can be recomputed from `samples/<bench>.jsonl` (hrlaif.evalsets.kinds.summarize).
"""
from __future__ import annotations

from collections import defaultdict

from hrlaif.core import stats

# Scores in results.json are stored in the unit's scale: a fraction for %, x1000 for ‰.
UNITS = {"%": 1.0, "‰": 1000.0}


def header(sp) -> dict:
    """What every entry says about itself, from its spec (hrlaif/evalsets/spec.py)."""
    return {"title": sp.title, "metric": sp.metric, "higher_is_better": sp.higher_is_better,
            "unit": sp.unit, "definition": " ".join(sp.definition.split()),
            **({"against_baseline": True} if sp.against_baseline else {})}


def scale_of(sp) -> float:
    return UNITS[sp.unit]


def scaled(r: dict, scale: float) -> dict:
    if scale == 1.0:
        return r
    return {**r, "score": r["score"] * scale, "ci95": [c * scale for c in r["ci95"]]}


def breakdown(samples: list[dict], key: str = "score", scale: float = 1.0) -> dict:
    by: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        if s.get(key) is not None:
            by[str(s.get("group"))].append(float(s[key]))
    return {g: scaled(stats.mean_ci(v), scale) for g, v in sorted(by.items())}


def count(samples: list[dict], key: str) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for s in samples:
        out[str(s.get(key))] += 1
    return dict(out)


def invalid(samples: list[dict]) -> int:
    """Items whose score is null: the judge or classifier gave no valid answer."""
    return sum(1 for s in samples if s.get("score") is None)


def mean_summary(sp, samples: list[dict]) -> dict:
    """Mean of the valid `score`s with its 95% CI, in the spec's unit, and the per-group breakdown."""
    k = scale_of(sp)
    r = scaled(stats.mean_ci([s["score"] for s in samples if s.get("score") is not None]), k)
    return {**header(sp), **r, "breakdown": breakdown(samples, scale=k), "metrics": {}, "extra": {}}


def win_ratio_summary(sp, samples: list[dict]) -> dict:
    """(wins + ties/2) / n over the rows' `requires` field (`win`), per group too; W/T/L, invalid
    judgements and how often the first slot won (position bias) go to `extra`."""
    field = sp.requires
    outcomes = [s[field] for s in samples if s.get(field) is not None]
    r = stats.win_ratio(outcomes)
    by: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        if s.get(field) is not None:
            by[str(s.get("group"))].append(s[field])
    bd = {g: stats.win_ratio(v) for g, v in sorted(by.items())}
    extra = {k: r.pop(k) for k in ("wins", "ties", "losses")}
    extra["invalid"] = sum(1 for s in samples if s.get(field) is None)  # items left out (one rule: null = invalid)
    extra["invalid_judgements"] = sum(int(s.get(f"{field}_invalid", 0)) for s in samples)
    firsts = [f for s in samples for f in s.get("first_slot_won", [])]
    extra["position_bias_first_slot"] = sum(firsts) / len(firsts) if firsts else None
    return {**header(sp), **r, "breakdown": bd, "metrics": {}, "extra": extra}


# Summaries a derived metric can name in its spec (`aggregate:`).
AGGREGATES = {"win_ratio": win_ratio_summary}
