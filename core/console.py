"""Human-readable number formatting shared by the CLI and reports."""
from __future__ import annotations

import math


def fmt_score(s: dict) -> str:
    """'41.2% [25.0, 59.1]' for rates, '12.0‰ [...]' for toxicity."""
    score, (lo, hi) = s.get("score"), s.get("ci95", [float("nan")] * 2)
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return "—"
    if s.get("metric") == "toxicity_permille":
        return f"{score:.1f}‰ [{lo:.1f}, {hi:.1f}]"
    return f"{100 * score:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
