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

# hrlaif.core.store has no public bytes writer; its atomic helper keeps PNGs crash-safe too.
from hrlaif.core.store import atomic_write_bytes  # noqa: E402
from hrlaif.reports.collect import VARIANT_LABELS  # noqa: E402


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
        # Held-out first and solid: the alarms read it; the training batch is a few noisy prompts.
        ax.plot(r[x], r["reward_heldout"], "s-", label="RM reward, held-out prompts (alarms)")
        ax.plot(r[x], r["reward_train"], "o:", alpha=0.6, label="RM reward, training batch")
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
    return _png(drift_figure(variant, rewards, benches, alarms), path)


def _png(fig, path: Path | str) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def save_gold_proxy_plot(path: Path | str, variant: str, gp: pd.DataFrame) -> Path:
    """Gold vs proxy (Gao et al. 2022): against sqrt(KL to SFT), the RM reward on the held-out
    responses (the proxy PPO maximises) beside the evaluation judge's verdict on the same
    responses (gold, share satisfying, 95% CI band). Over-optimisation shows as a proxy that keeps
    rising while gold flattens or falls."""
    g = gp.sort_values("sqrt_kl")
    fig, (ax_p, ax_g) = plt.subplots(1, 2, figsize=(12, 3.6), sharex=True)
    ax_p.plot(g.sqrt_kl, g.reward, "s-", color="tab:blue")
    ax_p.set_ylabel("RM reward (proxy), held-out")
    ax_g.plot(g.sqrt_kl, g.gold * 100, "o-", color="tab:green")
    ax_g.fill_between(g.sqrt_kl, g.gold_lo * 100, g.gold_hi * 100, color="tab:green", alpha=0.18, linewidth=0)
    ax_g.set_ylabel("eval judge satisfied % (gold)")
    for ax, ys in ((ax_p, g.reward), (ax_g, g.gold * 100)):
        ax.set_xlabel("sqrt(KL to SFT)")
        ax.grid(alpha=0.3)
        for step, xv, yv in zip(g.step, g.sqrt_kl, ys):
            ax.annotate(f"step {step}", (xv, yv), fontsize=7, textcoords="offset points", xytext=(3, 4))
    fig.suptitle(f"{VARIANT_LABELS.get(variant, variant)}: gold (evaluation judge) vs proxy (RM) on held-out prompts")
    fig.subplots_adjust(left=0.07, right=0.985, top=0.88, bottom=0.15, wspace=0.2)
    return _png(fig, path)


def save_bar_chart(path: Path | str, title: str, labels: list[str], scores: list[float], lo: list[float],
                   hi: list[float], unit: str) -> Path:
    """One benchmark across models: bars with 95% CI whiskers (missing CIs draw no whisker)."""
    k = 1.0 if unit == "‰" else 100.0
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 2), 3.4))
    x = range(len(labels))
    s = [v * k for v in scores]
    err = [[max(0.0, (v - a) * k) if a == a else 0.0 for v, a in zip(scores, lo)],
           [max(0.0, (b - v) * k) if b == b else 0.0 for v, b in zip(scores, hi)]]
    ax.bar(x, s, yerr=err, capsize=6, color=plt.rcParams["axes.prop_cycle"].by_key()["color"][:len(labels)],
           alpha=0.85, error_kw={"elinewidth": 1.5})
    ax.set_xticks(list(x), labels, rotation=15 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center")
    ax.set_ylabel(f"{title} ({unit}, 95% CI)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    fig.subplots_adjust(left=0.14, right=0.98, top=0.88, bottom=0.22)
    return _png(fig, path)
