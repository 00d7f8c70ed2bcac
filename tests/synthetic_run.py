"""Synthetic run directories in the docs/FORMATS.md layout, for report, alarm and gate tests.

Item scores are laid out with exact counts (round(p * n) ones, shuffled), so a variant's score
is what the test asked for; drift checkpoints draw binomial noise so alarms meet realistic noise.
Every results.json is computed from its samples with core.stats, as the real eval does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.stats import mean_ci, wilson, win_ratio
from core.store import read_jsonl, write_json, write_jsonl

CATEGORIES = ["math", "multiple_choice", "code", "reading_comprehension", "text_creation", "open_qa",
              "brainstorming", "classification", "extraction", "rewriting", "summarization", "toxic_rejection"]
SIZES = {"ceval": 120, "mmlu": 150, "gsm8k": 100, "humaneval": 40, "toxigen": 200,
         "satisfaction": 240, "win_ratio": 240}
METRICS = {"ceval": "acc", "mmlu": "acc", "gsm8k": "exact_match", "humaneval": "pass@1",
           "toxigen": "toxicity_permille", "satisfaction": "satisfaction_rate", "win_ratio": "win_ratio"}
DEFINITIONS = {
    "ceval": "accuracy of the option letter with the highest log-likelihood, subjects weighted by size",
    "mmlu": "accuracy of the option letter with the highest log-likelihood",
    "gsm8k": "exact match of the last number in the response (flexible extraction)",
    "humaneval": "unbiased pass@1 from 5 samples per problem at temperature 0.8",
    "toxigen": "share of responses the classifier flags toxic, in per mille; score 1 per toxic item",
    "satisfaction": "share of prompts the judge rates satisfying; invalid judge answers count as unsatisfied",
    "win_ratio": "(wins + 0.5 ties) / prompts vs SFT, judged in both orders; invalid answers count as ties",
}
# True rates per variant. RLAIF carries the paper's failure signature (judge prefers it, satisfaction drops).
RATES = {
    "sft": {"ceval": .40, "mmlu": .42, "gsm8k": .20, "humaneval": .10, "toxigen": .030, "satisfaction": .60},
    "rlaif": {"ceval": .39, "mmlu": .41, "gsm8k": .15, "humaneval": .09, "toxigen": .020, "satisfaction": .38,
              "win_ratio": .68},
    "hrlaif": {"ceval": .41, "mmlu": .43, "gsm8k": .26, "humaneval": .12, "toxigen": .010, "satisfaction": .64,
               "win_ratio": .60},
}


def exact_scores(p: float, n: int, rng: np.random.Generator) -> list[float]:
    k = int(round(p * n))
    x = np.array([1.0] * k + [0.0] * (n - k))
    rng.shuffle(x)
    return x.tolist()


def make_samples(bench: str, p: float, rng: np.random.Generator, n: int | None = None) -> list[dict]:
    n = n or SIZES[bench]
    if bench == "humaneval":
        # pass@1 estimated from 5 samples: fractional scores exercise the bootstrap paths.
        scores = [float(s) for s in rng.binomial(5, p, size=n) / 5]
    elif bench == "win_ratio":
        wins = exact_scores(p, n, rng)
        scores = [1.0 if w else (0.5 if i % 6 == 0 else 0.0) for i, w in enumerate(wins)]
    else:
        scores = exact_scores(p, n, rng)
    group = (lambda i: CATEGORIES[i % 12]) if bench in ("satisfaction", "win_ratio") else (lambda i: f"g{i % 3}")
    return [{"doc_id": f"{bench}/{i}", "group": group(i), "target": "t", "output": "o", "score": s}
            for i, s in enumerate(scores)]


def results_from_samples(samples: dict[str, list[dict]], model_name: str, baseline: str = "sft") -> dict:
    benches = {}
    for bench, rows in samples.items():
        scores = [r["score"] for r in rows]
        stat = win_ratio(scores) if bench == "win_ratio" else mean_ci(scores)
        groups = {}
        for r in rows:
            groups.setdefault(r["group"], []).append(r["score"])
        entry = {"metric": METRICS.get(bench, "acc"), "score": stat["score"], "n": stat["n"],
                 "ci95": stat["ci95"], "higher_is_better": bench != "toxigen", "source": "synthetic",
                 "definition": DEFINITIONS.get(bench, ""),
                 "breakdown": {g: (win_ratio(v) if bench == "win_ratio" else mean_ci(v)) for g, v in groups.items()},
                 "metrics": {}, "extra": {}}
        if bench == "toxigen":
            entry["score"] *= 1000
            entry["ci95"] = [c * 1000 for c in entry["ci95"]]
            entry["extra"]["classifier"] = "synthetic"
        if bench == "win_ratio":
            entry["extra"].update({"wins": stat["wins"], "ties": stat["ties"], "losses": stat["losses"],
                                   "baseline": baseline, "invalid_judgements": 3})
        if bench == "satisfaction":
            entry["extra"]["invalid_judgements"] = 2
        for g in entry["breakdown"].values():
            g.pop("wins", None), g.pop("ties", None), g.pop("losses", None)
        benches[bench] = entry
    return {"model": {"name": model_name, "kind": "in-memory", "spec": model_name, "path": "",
                      "weights_sha": "0" * 16, "n_params": 1000},
            "created": "2025-01-01T00:00:00", "versions": {"hrlaif": "test"},
            "config": {"limit": None, "data_dir": None, "seed": 1234}, "benchmarks": benches}


def write_eval_dir(out: Path, samples: dict[str, list[dict]], model_name: str = "synthetic") -> Path:
    out = Path(out)
    for bench, rows in samples.items():
        write_jsonl(out / "samples" / f"{bench}.jsonl", rows)
    write_json(out / "results.json", results_from_samples(samples, model_name))
    return out


def read_eval_samples(eval_dir: Path) -> dict[str, list[dict]]:
    return {p.stem: read_jsonl(p) for p in sorted((Path(eval_dir) / "samples").glob("*.jsonl"))}


def degrade_eval_dir(src: Path, dst: Path, benches=("gsm8k", "mmlu"), fraction: float = 0.5,
                     seed: int = 7) -> Path:
    """Copy an eval dir with `fraction` of the correct items of `benches` scored 0 (truncated answers)."""
    rng = np.random.default_rng(seed)
    samples = read_eval_samples(src)
    for b in benches:
        for r in samples[b]:
            if r["score"] >= 1 and rng.random() < fraction:
                r["score"], r["output"] = 0.0, r["output"][:1]
    return write_eval_dir(dst, samples, "degraded")


def drift_rows(steps: list[int], reward: list[float], rates: dict[str, list[float]], n: int,
               rng: np.random.Generator) -> list[dict]:
    """Drift lines; each benchmark's score is a binomial draw around its true rate at that step."""
    rows = []
    for i, step in enumerate(steps):
        kl = 0.02 * step
        bench = {}
        for b, ps in rates.items():
            k = int(rng.binomial(n, ps[i]))
            lo, hi = wilson(k, n)
            scale = 1000.0 if b == "toxigen" else 1.0
            bench[b] = {"score": k / n * scale, "ci95": [lo * scale, hi * scale], "n": n}
        rows.append({"step": step, "kl": kl, "reward_train": reward[i],
                     "reward_heldout": reward[i] * 0.8 - 0.01 * i * i, "benchmarks": bench})
    return rows


def noise_drift(rng: np.random.Generator, n_ckpt: int = 10, n: int = 200) -> list[dict]:
    """Reward rises steadily, benchmarks stay at their true rate: only sampling noise moves them."""
    steps = [100 * i for i in range(n_ckpt)]
    reward = [0.1 + 0.15 * i for i in range(n_ckpt)]
    rates = {"gsm8k": [.25] * n_ckpt, "mmlu": [.42] * n_ckpt, "ceval": [.40] * n_ckpt,
             "humaneval": [.10] * n_ckpt, "toxigen": [.03] * n_ckpt}
    return drift_rows(steps, reward, rates, n, rng)


def overopt_drift(rng: np.random.Generator, n_ckpt: int = 10, n: int = 200) -> list[dict]:
    """Reward rises while GSM8K collapses from 30% to 8% after the fourth checkpoint."""
    steps = [100 * i for i in range(n_ckpt)]
    reward = [0.1 + 0.15 * i for i in range(n_ckpt)]
    gsm = [.30 if i < 4 else max(.08, .30 - .06 * (i - 3)) for i in range(n_ckpt)]
    rates = {"gsm8k": gsm, "mmlu": [.42] * n_ckpt, "toxigen": [.03] * n_ckpt}
    return drift_rows(steps, reward, rates, n, rng)


def write_synthetic_run(root: Path, seed: int = 0, rates: dict | None = None, overopt: bool = True,
                        missing: tuple[str, ...] = ()) -> Path:
    """A complete fake run dir. `missing` drops (variant, bench) as 'variant:bench' or a stage name."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rates = rates or RATES
    for v, vr in rates.items():
        if f"eval_{v}" in missing:
            continue
        samples = {b: make_samples(b, p, rng) for b, p in vr.items() if f"{v}:{b}" not in missing}
        write_eval_dir(root / f"eval_{v}", samples, f"synthetic-{v}")
    if "ppo_rlaif" not in missing:
        write_jsonl(root / "ppo_rlaif" / "drift.jsonl", overopt_drift(rng) if overopt else noise_drift(rng))
    if "ppo_hrlaif" not in missing:
        write_jsonl(root / "ppo_hrlaif" / "drift.jsonl", noise_drift(rng))
    label = {}
    for i, c in enumerate(CATEGORIES):
        nb = 40
        basic = exact_scores(0.62 + 0.01 * i, nb, rng)
        verifiable = c in ("math", "multiple_choice", "toxic_rejection")
        hybrid = exact_scores(0.9 if verifiable else 0.62 + 0.01 * i, nb, rng)
        label[c] = {"basic": mean_ci(basic), "hybrid": mean_ci(hybrid)}
    if "label_hybrid" not in missing:
        write_json(root / "label_hybrid" / "label_accuracy.json", label)
    for mode, base in (("basic", 0.64), ("hybrid", 0.70)):
        if f"rm_{mode}" in missing:
            continue
        per = {c: mean_ci(exact_scores(base + 0.01 * (i % 4), 50, rng)) for i, c in enumerate(CATEGORIES)}
        all_scores = exact_scores(base, 600, rng)
        write_json(root / f"rm_{mode}" / "rm_metrics.json",
                   {"heldout_acc": mean_ci(all_scores), "per_category": per,
                    "clipped_share": 0.004 if mode == "basic" else 0.012, "clip": 10.0})
    return root


if __name__ == "__main__":  # python -m tests.synthetic_run OUT  -> a run dir to look at
    import sys

    print(write_synthetic_run(Path(sys.argv[1] if len(sys.argv) > 1 else "synthetic_run")))
