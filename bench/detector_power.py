"""Detectors proven on planted effects: how often `hrlaif gate` and each report alarm fire.

Each trial plants a known effect into per-item 0/1 outputs and runs the real detector code on them
(hrlaif.harness.gate.compare_benchmark; hrlaif.reports.drift.overoptimisation_alarms; hrlaif.reports.alarms'
satisfaction_drop / failure_fires), in memory:

- gate: the candidate drops p% of the baseline's correct items (each with probability p). "FAIL" is
  the gate's verdict (not shown non-inferior at the margin, 1 point by default); "significant drop"
  is its difference test (Holm p < alpha, candidate worse). At the margin itself (true Δ = -margin)
  a PASS is the error a non-inferiority test bounds by alpha ("false PASS" below; it must stay at or
  below alpha at every n); on the nulls a FAIL is not an error of that test but missing evidence,
  so the gate's verdict table reports their PASS rate: its power to pass a truly equal candidate.
  Identical outputs pass once n exceeds what the margin needs (z^2 (1 - m) / m items: 381 for 1
  point at 95%); two seeds of one model differ on ~15% of items and need far more.
- over-optimisation alarm: a PPO run with step 0 and two checkpoints on two drift benchmarks and
  held-out prompts; at the last checkpoint the held-out reward rises (+0.5 sd) while one benchmark
  drops p% of its correct items.
- RLAIF-failure alarm: the judge prefers the candidate (true win probability 0.65) while its
  satisfaction drops p% of SFT's satisfied prompts.
Nulls (the false-alarm rate, which must be at or below alpha): "identical" repeats the baseline's
outputs; "two seeds" re-draws every item from the same per-item probabilities on each side (70% of
an item's probability is its real outcome, 30% the mean accuracy: a model whose sampled outputs
flip on some items between seeds). The drift and failure nulls keep the reward rise / judge
preference, the worst case for a false alarm.

With --seed-items A B (the item outputs of two PPO seeds of one configuration: PPO stage dirs, whose
last drift checkpoint is read, evaluation dirs, or per-item JSONL files), "two seeds" is no longer
simulated: each trial draws n items and pairs seed A's real outcome with seed B's on each, so the null
has the real churn between seeds (items gained and items lost). The planted alternatives then start
from seed B too: the candidate is the other seed with p% of its correct items dropped, so it both gains
and loses items against the baseline, the case least favourable to the gate (a pure drop is the easiest).

Item outcomes: with --eval-dir, the real per-item scores of that evaluation (samples/<bench>.jsonl;
e.g. the embedded model on the shared MMLU slice); without it, synthetic 0/1 draws at --accuracy.
Held-out rewards are synthetic (per-prompt level N(0, 1) plus noise N(0, 0.3)).

    python bench/detector_power.py --eval-dir EVAL_DIR --bench mmlu            # the README table
    python bench/detector_power.py --trials 40 --null-trials 100 --sizes 12,100  # a quick look
    python bench/detector_power.py --eval-dir EVAL_DIR --gate-only --null-trials 2000  # the gate's errors
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrlaif.core.stats import min_margin, win_ratio  # noqa: E402
from hrlaif.harness.gate import compare_benchmark  # noqa: E402
from hrlaif.reports.alarms import failure_fires, satisfaction_drop  # noqa: E402
from hrlaif.reports.collect import (
    item_scores,  # noqa: E402
    read_item_file,  # noqa: E402
)
from hrlaif.reports.drift import (
    overoptimisation_alarms,  # noqa: E402
    read_drift_items,  # noqa: E402
)

ALPHA_GATE = 0.05
MARGIN = 0.01  # --margin (points / 100)
DRIFT_STEPS = (0, 10, 20)
RAW_COLS = ["step", "kl", "sqrt_kl", "reward_train", "reward_heldout"]
BENCH_COLS = ["step", "kl", "sqrt_kl", "bench", "score", "lo", "hi", "n", "higher_is_better", "label", "unit"]


def load_pool(eval_dir: str | None, bench: str, accuracy: float, rng) -> tuple[np.ndarray, str]:
    if eval_dir:
        scores = item_scores(eval_dir, bench, required=True)
        x = np.array([s for s in scores.values() if s is not None], dtype=float)
        if not np.isin(x, (0.0, 1.0)).all():
            raise SystemExit(f"{eval_dir}: {bench} scores are not 0/1")
        return x, f"real per-item outputs: {eval_dir}/samples/{bench}.jsonl ({len(x)} items, acc {x.mean():.3f})"
    x = (rng.random(2000) < accuracy).astype(float)
    return x, f"synthetic 0/1 draws at accuracy {accuracy:.2f} (no --eval-dir)"


def seed_outcomes(path: str, bench: str) -> dict[str, float]:
    """{doc_id: 0/1} of one PPO seed: a PPO dir (its last drift checkpoint), an eval dir or a JSONL file."""
    p = Path(path)
    if p.is_file():
        rows = {k: r["score"] for k, r in read_item_file(p).items()}
    elif (p / "drift").is_dir():
        steps = read_drift_items(p)
        if not steps:
            raise SystemExit(f"{p}: no drift checkpoints")
        rows = steps[max(steps)]["benches"].get(bench) or {}
    else:
        rows = item_scores(p, bench, required=True)
    out = {k: float(v) for k, v in rows.items() if v is not None}
    if not out or not set(out.values()) <= {0.0, 1.0}:
        raise SystemExit(f"{p}: no 0/1 {bench} item scores")
    return out


class SeedPool:
    """Real outcomes of two seeds on the same items: rows (seed A, seed B)."""

    def __init__(self, a: dict[str, float], b: dict[str, float]):
        common = sorted(a.keys() & b.keys())
        if len(common) < 10:
            raise SystemExit(f"the two seeds share only {len(common)} items")
        self.a = np.array([a[k] for k in common])
        self.b = np.array([b[k] for k in common])

    def draw(self, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.choice(len(self.a), n, replace=n > len(self.a))
        return self.a[idx], self.b[idx]

    def describe(self) -> str:
        gained, lost = int(((self.a == 0) & (self.b == 1)).sum()), int(((self.a == 1) & (self.b == 0)).sum())
        return (f"{len(self.a)} items, seed A {self.a.mean():.3f}, seed B {self.b.mean():.3f}; seed B gains "
                f"{gained} and loses {lost} of them ({(gained + lost) / len(self.a):.1%} churn)")


SEEDS: SeedPool | None = None  # --seed-items


def draw(pool: np.ndarray, n: int, rng) -> np.ndarray:
    return pool[rng.choice(len(pool), n, replace=n > len(pool))]


def drop(x: np.ndarray, frac: float, rng) -> np.ndarray:
    """A copy where each correct item is scored 0 with probability frac: the planted change is
    -frac x accuracy on average at any n (a fixed count would round to nothing on small n)."""
    y = x.copy()
    y[(y == 1) & (rng.random(len(y)) < frac)] = 0.0
    return y


def reseed(x: np.ndarray, acc: float, rng) -> np.ndarray:
    """The same model at another seed: each item re-drawn from 0.7 x its outcome + 0.3 x acc."""
    return (rng.random(len(x)) < 0.7 * x + 0.3 * acc).astype(float)


def as_map(x: np.ndarray) -> dict[str, float]:
    return {str(i): float(v) for i, v in enumerate(x)}


# ---------------------------------------------------------------- the detectors, on one trial each
def gate_trial(a: np.ndarray, b: np.ndarray) -> tuple[bool, bool]:
    """(gate FAILs, gate finds a significant drop) for one benchmark (Holm over m = 1 is the raw p:
    FAIL exactly when `hrlaif gate` on these two eval dirs exits 1)."""
    r = compare_benchmark("bench", as_map(a), as_map(b), MARGIN, True, ALPHA_GATE)
    return r["p_noninferiority"] >= ALPHA_GATE, r["p"] < ALPHA_GATE and r["diff"] < 0


def drift_trial(pool, n, n_heldout, frac, null, rng) -> bool:
    """One PPO run: does the over-optimisation alarm fire?"""
    acc = pool.mean()
    base = {b: draw(pool, n, rng) for b in ("bench_a", "bench_b")}
    level = rng.normal(0, 1, n_heldout)
    items, rewards = {}, []
    later = {b: SEEDS.draw(n, rng) for b in base} if SEEDS is not None else {}
    if later:  # step 0 is seed A's outcomes, every later checkpoint seed B's: real churn, no real change
        base = {b: ab[0] for b, ab in later.items()}
    for t, step in enumerate(DRIFT_STEPS):
        per = {}
        for b, x in base.items():
            if later and t > 0 and null != "identical":
                y = later[b][1]
            else:
                y = x if t == 0 or null == "identical" else reseed(x, acc, rng) if null == "two seeds" else x
            if null is None and b == "bench_a" and t == len(DRIFT_STEPS) - 1:
                y = drop(y, frac, rng)
            per[b] = as_map(y)
        rew = level + 0.25 * t + rng.normal(0, 0.3, n_heldout)  # +0.5 sd by the last checkpoint
        items[step] = {"benches": per, "heldout": {str(i): {"reward": float(r), "gold": None}
                                                   for i, r in enumerate(rew)}}
        rewards.append({"step": step, "kl": 0.01 * step, "sqrt_kl": (0.01 * step) ** 0.5, "reward_train": 0.0,
                        "reward_heldout": float(rew.mean())})
    alarms = overoptimisation_alarms("rlaif", pd.DataFrame(rewards, columns=RAW_COLS),
                                     pd.DataFrame(columns=BENCH_COLS), items)
    return bool(alarms)


def failure_trial(pool, n, frac, null, rng) -> bool:
    """One evaluation: does the RLAIF-failure alarm fire (judge prefers it, satisfaction lower)?"""
    sft = draw(pool, n, rng)
    cand = {"identical": lambda: sft, "two seeds": lambda: reseed(sft, pool.mean(), rng)}.get(
        null, lambda: drop(sft, frac, rng))()
    wins = rng.choice([1.0, 0.5, 0.0], size=n, p=[0.6, 0.1, 0.3])  # P(win) + P(tie)/2 = 0.65
    return failure_fires(win_ratio(wins)["ci95"][0], satisfaction_drop(as_map(sft), as_map(cand)))


# ---------------------------------------------------------------- tables
def pair(pool, n, rng, effect) -> tuple[np.ndarray, np.ndarray]:
    """(baseline, candidate) of n items: effect is a drop fraction, "identical" or "two seeds". With
    real seeds, the candidate is seed B (with the planted drop on top)."""
    if SEEDS is not None:
        a, b = SEEDS.draw(n, rng)
        return (a, a) if effect == "identical" else (a, b) if effect == "two seeds" else (a, drop(b, effect, rng))
    a = draw(pool, n, rng)
    if effect == "identical":
        return a, a
    if effect == "two seeds":
        return a, reseed(a, pool.mean(), rng)
    return a, drop(a, effect, rng)


def at_margin(pool, n, rng) -> tuple[np.ndarray, np.ndarray]:
    """A candidate exactly the margin worse in expectation (each correct item dropped with
    probability margin / accuracy)."""
    if SEEDS is not None:  # the other seed, made worse by the margin on top of its real difference
        a, b = SEEDS.draw(n, rng)
        extra = MARGIN + b.mean() - a.mean() if n else MARGIN
        return a, drop(b, min(1.0, max(0.0, extra) / max(b.mean(), 1e-9)), rng)
    a = draw(pool, n, rng)
    return a, drop(a, MARGIN / max(pool.mean(), 1e-9), rng)


def rate(fn, trials: int) -> float:
    return sum(bool(fn()) for _ in range(trials)) / trials


def table(fn, effects: dict, sizes: list[int], trials: int) -> dict[str, dict[str, float]]:
    return {label: {f"n={n}": rate(lambda: fn(n, e), trials) for n in sizes} for label, e in effects.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eval-dir", default=None, help="an evaluation dir whose samples give the real 0/1 outputs")
    ap.add_argument("--bench", default="mmlu", help="benchmark of --eval-dir to draw items from")
    ap.add_argument("--accuracy", type=float, default=0.45, help="accuracy of synthetic items (without --eval-dir)")
    ap.add_argument("--sizes", default="12,20,50,100,200,500,1000", help="items (prompts) per benchmark")
    ap.add_argument("--drops", default="2,5,10,20,40", help="planted effects: %% of correct items dropped")
    ap.add_argument("--heldout", type=int, default=32, help="held-out prompts per drift checkpoint")
    ap.add_argument("--trials", type=int, default=300, help="trials per planted-effect cell")
    ap.add_argument("--null-trials", type=int, default=1000, help="trials per null cell")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seed-items", nargs=2, metavar=("A", "B"), default=None,
                    help="the item outputs of two PPO seeds of one configuration (PPO dirs, eval dirs or JSONL "
                         "files): the real two-seed null, and alternatives that gain and lose items")
    ap.add_argument("--json", default=None, help="also write every rate to this JSON file")
    ap.add_argument("--margin", type=float, default=1.0, help="the gate's non-inferiority margin, in points")
    ap.add_argument("--gate-only", action="store_true",
                    help="only the gate's verdict table (false PASS at the margin, PASS power on equal candidates)")
    args = ap.parse_args(argv)
    global MARGIN
    MARGIN = args.margin / 100
    rng = np.random.default_rng(args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]
    global SEEDS
    if args.seed_items:
        SEEDS = SeedPool(*(seed_outcomes(p, args.bench) for p in args.seed_items))
        pool, source = SEEDS.a, f"two PPO seeds' real outputs ({' vs '.join(args.seed_items)}): {SEEDS.describe()}"
    else:
        pool, source = load_pool(args.eval_dir, args.bench, args.accuracy, rng)
    acc = pool.mean()
    effects = {f"drop {float(d):g}% of correct items (Δ ≈ -{float(d) * acc:.1f} pt)": float(d) / 100
               for d in args.drops.split(",")}
    nulls = {"null: identical outputs": "identical", "null: two seeds": "two seeds"}
    detectors = {
        f"gate FAIL (margin {args.margin:g} pt)": lambda n, e: gate_trial(*pair(pool, n, rng, e))[0],
        "gate: significant drop (alpha 0.05)": lambda n, e: gate_trial(*pair(pool, n, rng, e))[1],
        "over-optimisation alarm (alpha 0.01)": lambda n, e: drift_trial(
            pool, n, args.heldout, 0 if isinstance(e, str) else e, e if isinstance(e, str) else None, rng),
        "RLAIF-failure alarm (alpha 0.05)": lambda n, e: failure_trial(
            pool, n, 0 if isinstance(e, str) else e, e if isinstance(e, str) else None, rng),
    }
    print(f"# Detector power\n\nItems: {source}. Gate: margin {args.margin:g} pt, alpha {ALPHA_GATE}. "
          f"Over-optimisation alarm: {len(DRIFT_STEPS) - 1} checkpoints x 2 drift benchmarks, {args.heldout} "
          f"held-out prompts, held-out reward +0.5 sd. RLAIF failure: true win probability 0.65. {args.trials} "
          f"trials per planted effect, {args.null_trials} per null and per cell of the gate's verdict table; "
          f"n = items (prompts) per benchmark.\n")
    out: dict[str, dict] = {"source": source, "margin_pts": args.margin, "null_trials": args.null_trials}
    t0 = time.perf_counter()
    for name, fn in ({} if args.gate_only else detectors).items():
        rows = table(fn, effects, sizes, args.trials) | table(fn, nulls, sizes, args.null_trials)
        out[name] = rows
        print(f"## {name}: share of trials that fire\n\n{_md(rows)}\n", flush=True)
        print(f"  {name} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    verdict = gate_verdicts(pool, sizes, args.null_trials, args.margin, rng)
    out["gate verdict"] = verdict
    print(f"## The gate's verdict: errors and power (margin {args.margin:g} pt, alpha {ALPHA_GATE})\n\n"
          f"{_md(verdict, '{:.3f}')}\n\n({time.perf_counter() - t0:.0f} s)")
    worst = max(verdict[FALSE_PASS].values())
    print(f"false PASS at the margin: at most {worst:.3f} over n = {', '.join(map(str, sizes))} "
          f"({'<=' if worst <= ALPHA_GATE else 'ABOVE'} alpha {ALPHA_GATE})")
    if args.json:
        import json
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


FALSE_PASS = "false PASS: candidate truly worse by the margin (must be <= alpha)"


def gate_verdicts(pool, sizes: list[int], trials: int, margin_pts: float, rng) -> dict[str, dict[str, float]]:
    """The gate's verdict table: its error (PASS at a true deficit equal to the margin, with the 95%
    Clopper-Pearson upper bound of that rate over the trials), its power to pass a truly equal
    candidate (identical outputs; the same model at two seeds), and the smallest margin identical
    outputs clear at each n (points)."""
    from hrlaif.core.stats import clopper_pearson

    rows: dict[str, dict[str, float]] = {FALSE_PASS: {}, "  95% upper bound of that rate": {},
                                         "PASS power, truly equal: identical outputs": {},
                                         "PASS power, truly equal: two seeds": {},
                                         "smallest margin identical outputs pass (pt)": {}}
    names = list(rows)
    for n in sizes:
        col = f"n={n}"
        k = sum(not gate_trial(*at_margin(pool, n, rng))[0] for _ in range(trials))
        rows[names[0]][col] = k / trials
        rows[names[1]][col] = clopper_pearson(k, trials)[1]
        rows[names[2]][col] = rate(lambda: not gate_trial(*pair(pool, n, rng, "identical"))[0], trials)
        rows[names[3]][col] = rate(lambda: not gate_trial(*pair(pool, n, rng, "two seeds"))[0], trials)
        rows[names[4]][col] = 100 * min_margin(n, ALPHA_GATE)
    return rows


def _md(rows: dict[str, dict], fmt: str = "{:.2f}") -> str:
    cols = list(next(iter(rows.values())))
    lines = ["| effect | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for k, r in rows.items():
        lines.append(f"| {k} | " + " | ".join(fmt.format(v) for v in r.values()) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
