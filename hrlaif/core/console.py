"""Human-readable number formatting shared by the CLI and reports."""
from __future__ import annotations

import math

DASH = "—"


def present(x) -> bool:
    """A value to show: not None and not NaN."""
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def fmt_score(score, lo=None, hi=None, n=None, permille: bool = False) -> str:
    """'41.0% [25.0, 59.0] n=30' for a 0-1 score, '12.0‰ [...]' for one stored in ‰;
    the CI and n only when given; '—' when the score is missing."""
    if not present(score):
        return DASH
    k, unit = (1.0, "‰") if permille else (100.0, "%")
    s = f"{score * k:.1f}{unit}"
    if present(lo) and present(hi):
        s += f" [{lo * k:.1f}, {hi * k:.1f}]"
    if present(n):
        s += f" n={int(n)}"
    return s
