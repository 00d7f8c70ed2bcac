"""Drift plots: reward and benchmark scores along PPO, against step and against sqrt(KL).

sqrt(KL) is the x axis on which reward over-optimisation is usually plotted (Gao et al. 2022):
reward curves of runs with different KL coefficients line up on it, so a benchmark that bends
down there is drifting, not merely training longer.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are built in CI and over ssh
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

# core.store has no public bytes writer; its atomic helper keeps PNGs crash-safe too.
from core.store import atomic_write_bytes  # noqa: E402
from reports.collect import VARIANT_LABELS  # noqa: E402


def drift_figure(variant: str, rewards: pd.DataFrame, benches: pd.DataFrame,
                 alarms: list[dict] | None = None):
    """Rows: RM reward (train / held-out prompts); 0-1 benchmarks in %; ‰ benchmarks (ToxiGen) if
    logged. Columns: x = PPO step, x = sqrt(KL). Benchmarks carry their 95% CI as a band."""
    pct = benches[benches.unit != "‰"]
    tox = benches[benches.unit == "‰"]
    rows = 2 + (not tox.empty)
    fig, axes = plt.subplots(rows, 2, figsize=(12, 3.4 * rows), squeeze=False, sharex="col")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fired = {(a["bench"], a["step_to"]) for a in (alarms or []) if a.get("type") == "over_optimisation"}
    for col, (x, xlabel) in enumerate((("step", "PPO step"), ("sqrt_kl", "sqrt(KL to SFT)"))):
        ax = axes[0][col]
        r = rewards.sort_values(x)
        ax.plot(r[x], r["reward_train"], "o-", label="RM reward, training prompts")
        ax.plot(r[x], r["reward_heldout"], "s--", label="RM reward, held-out prompts")
        ax.set_ylabel("RM reward")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        for row, frame, scale, unit in ((1, pct, 100.0, "%"), (2, tox, 1.0, "‰")):
            if frame.empty:
                continue
            ax = axes[row][col]
            for i, (bench, g) in enumerate(frame.groupby("bench", sort=False)):
                g = g.sort_values(x)
                c = colors[i % len(colors)]
                ax.plot(g[x], g["score"] * scale, "o-", color=c, label=g["label"].iloc[0])
                ax.fill_between(g[x], g["lo"] * scale, g["hi"] * scale, color=c, alpha=0.18, linewidth=0)
                hit = g[[(bench, s) in fired for s in g["step"]]]
                if not hit.empty:
                    ax.plot(hit[x], hit["score"] * scale, "x", color="red", markersize=12, mew=3)
            ax.set_ylabel(f"score ({unit}, 95% CI band)" if unit == "%" else _permille_axis(frame))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="best", ncol=2)
        axes[-1][col].set_xlabel(xlabel)
    title = f"{VARIANT_LABELS.get(variant, variant)}: reward vs benchmarks during PPO"
    if fired:
        title += "  (red x = over-optimisation alarm)"
    fig.suptitle(title)
    # Fixed margins instead of tight_layout: it would lay the figure out twice, a third of the cost.
    inch = 3.4 * rows
    fig.subplots_adjust(left=0.07, right=0.985, top=1 - 0.45 / inch, bottom=0.5 / inch, hspace=0.08, wspace=0.16)
    return fig


def _permille_axis(frame: pd.DataFrame) -> str:
    """'ToxiGen toxicity ‰ (lower is better)': the ‰ benchmarks' labels and direction."""
    labels = ", ".join(dict.fromkeys(frame["label"]))
    hib = set(frame["higher_is_better"])
    return labels + ("" if len(hib) > 1 else " (higher is better)" if hib == {True} else " (lower is better)")


def save_drift_plot(path: Path | str, variant: str, rewards: pd.DataFrame, benches: pd.DataFrame,
                    alarms: list[dict] | None = None) -> Path:
    fig = drift_figure(variant, rewards, benches, alarms)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
