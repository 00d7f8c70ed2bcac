"""Table 1's paired comparisons that need both stages' files: RM hybrid − RM basic on the shared
held-out pairs (rm_<mode>/rm_metrics.json `shared_heldout_acc.pairs`: [prompt id, better, worse,
1 if the RM orders them right]), each pair scoring +1, 0 or -1, with a CI clustered by prompt
(hrlaif.core.stats.cluster_bootstrap_mean). Label hybrid − basic is computed by the label stage
(hrlaif/trainers/feedback/accuracy.py) and read with the label-accuracy file."""
from __future__ import annotations

from pathlib import Path

from hrlaif.core.layout import RunLayout
from hrlaif.core.stats import cluster_bootstrap_mean
from hrlaif.core.store import read_json


def _shared_pairs(run_dir: Path, mode: str) -> dict[tuple, int] | None:
    for p in RunLayout(run_dir).rm(mode).metrics_candidates:
        if p.exists():
            pairs = ((read_json(p) or {}).get("shared_heldout_acc") or {}).get("pairs")
            return {(str(i), int(a), int(b)): int(ok) for i, a, b, ok in pairs} if pairs else None
    return None


def rm_paired(run_dir: Path | str) -> dict | None:
    """{score (hybrid − basic), lo, hi, n, n_clusters} on the pairs both RMs scored, or None."""
    run_dir = Path(run_dir)
    basic, hybrid = _shared_pairs(run_dir, "basic"), _shared_pairs(run_dir, "hybrid")
    if not basic or not hybrid:
        return None
    keys = sorted(set(basic) & set(hybrid))
    if not keys:
        return None
    r = cluster_bootstrap_mean([hybrid[k] - basic[k] for k in keys], [k[0] for k in keys])
    return {"score": r["score"], "lo": r["ci95"][0], "hi": r["ci95"][1], "n": r["n"], "n_clusters": r["n_clusters"]}
