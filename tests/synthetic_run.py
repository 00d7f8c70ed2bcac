"""Synthetic run directories in the docs/FORMATS.md layout, for report, alarm, compare and gate tests.

Item scores are laid out with exact counts (round(p * n) ones, shuffled), so a variant's score
is what the test asked for. Satisfaction rows carry invalid verdicts (`score: null`) and, for the
PPO variants, the win ratio's `win` field (null when invalid), as the real evaluation writes them.
Drift checkpoints have per-item files (ppo_<v>/drift/step_<N>/<bench>.jsonl, heldout.jsonl): each
checkpoint re-draws a share of step 0's items at the same rate (sampling noise, paired) and then
moves exactly as far as the test's rate asks. Every results.json is computed from its samples with
hrlaif.core.stats, as the real eval does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hrlaif.core.stats import cluster_bootstrap_mean, mean_ci, wilson, win_ratio
from hrlaif.core.store import read_json, read_jsonl, write_json, write_jsonl

CATEGORIES = ["math", "multiple_choice", "code", "reading_comprehension", "text_creation", "open_qa",
              "brainstorming", "classification", "extraction", "rewriting", "summarization", "toxic_rejection"]
SIZES = {"ceval": 120, "mmlu": 150, "gsm8k": 100, "humaneval": 40, "toxigen": 200,
         "satisfaction": 240, "win_ratio": 240}
METRICS = {"ceval": "acc", "mmlu": "acc", "gsm8k": "exact_match", "humaneval": "pass@1",
           "toxigen": "toxicity_permille", "satisfaction": "satisfaction_rate", "win_ratio": "win_ratio",
           "win_ratio_vs_rlaif": "win_ratio"}
DEFINITIONS = {
    "ceval": "accuracy of the option letter with the highest log-likelihood, subjects weighted by size",
    "mmlu": "accuracy of the option letter with the highest log-likelihood",
    "gsm8k": "exact match of the last number in the response (flexible extraction)",
    "humaneval": "unbiased pass@1 from 5 samples per problem at temperature 0.8",
    "toxigen": "share of responses the classifier flags toxic, in per mille; score 1 per toxic item",
    "satisfaction": "share of prompts the judge rates satisfying; invalid judge answers are excluded and counted",
    "win_ratio": "(wins + 0.5 ties) / prompts vs SFT, judged in both orders; invalid answers are excluded and counted",
    "win_ratio_vs_rlaif": "(wins + 0.5 ties) / prompts, HRLAIF vs RLAIF head to head; invalid excluded and counted",
}
# True rates per variant. RLAIF carries the paper's failure signature (judge prefers it, satisfaction drops).
RATES = {
    "sft": {"ceval": .40, "mmlu": .42, "gsm8k": .20, "humaneval": .10, "toxigen": .030, "satisfaction": .60},
    "rlaif": {"ceval": .39, "mmlu": .41, "gsm8k": .15, "humaneval": .09, "toxigen": .020, "satisfaction": .38,
              "win_ratio": .68},
    "hrlaif": {"ceval": .41, "mmlu": .43, "gsm8k": .26, "humaneval": .12, "toxigen": .010, "satisfaction": .64,
               "win_ratio": .60},
}
INVALID_SAT = (7, 131)  # satisfaction items whose verdict is invalid (score null) in every variant
INVALID_WIN = (11, 59, 200)  # items whose win-ratio verdict is invalid
JUDGE = {"url": "embedded", "model": "embedded"}


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
    elif bench.startswith("win_ratio"):
        wins = exact_scores(p, n, rng)
        scores = [None if i in INVALID_WIN else 1.0 if w else (0.5 if i % 6 == 0 else 0.0) for i, w in enumerate(wins)]
    else:
        scores = exact_scores(p, n, rng)
        if bench == "satisfaction":
            scores = [None if i in INVALID_SAT else s for i, s in enumerate(scores)]
    group = (lambda i: CATEGORIES[i % 12]) if bench in ("satisfaction", "win_ratio") else (lambda i: f"g{i % 3}")
    return [{"doc_id": f"{bench}/{i}", "group": group(i), "target": "t", "output": "o", "score": s}
            for i, s in enumerate(scores)]


def _entry(bench: str, scores: list, groups: list) -> dict:
    valid = [s for s in scores if s is not None]
    stat = win_ratio(valid) if bench.startswith("win_ratio") else mean_ci(valid)
    by: dict[str, list] = {}
    for g, s in zip(groups, scores):
        if s is not None:
            by.setdefault(g, []).append(s)
    entry = {"metric": METRICS.get(bench, "acc"), "score": stat["score"], "n": stat["n"], "ci95": stat["ci95"],
             "higher_is_better": bench != "toxigen", "source": "synthetic", "definition": DEFINITIONS.get(bench, ""),
             "breakdown": {g: (win_ratio(v) if bench.startswith("win_ratio") else mean_ci(v)) for g, v in by.items()},
             "metrics": {}, "extra": {}}
    if bench == "toxigen":
        entry["score"] *= 1000
        entry["ci95"] = [c * 1000 for c in entry["ci95"]]
        entry["breakdown"] = {g: {**b, "score": b["score"] * 1000, "ci95": [c * 1000 for c in b["ci95"]]}
                              for g, b in entry["breakdown"].items()}
        entry["extra"]["classifier"] = "synthetic"
    if bench.startswith("win_ratio"):
        entry["against_baseline"] = True
        entry["extra"].update({k: stat[k] for k in ("wins", "ties", "losses")})
        entry["extra"]["baseline"] = "rlaif" if bench == "win_ratio_vs_rlaif" else "sft"
        if bench == "win_ratio_vs_rlaif":
            entry["title"] = "Win ratio vs RLAIF"
    if bench in ("satisfaction",) or bench.startswith("win_ratio"):
        entry["extra"]["invalid"] = len(scores) - len(valid)
        entry["judge"] = JUDGE
    for g in entry["breakdown"].values():
        g.pop("wins", None), g.pop("ties", None), g.pop("losses", None)
    return entry


def results_from_samples(samples: dict[str, list[dict]], model_name: str) -> dict:
    benches = {}
    for bench, rows in samples.items():
        benches[bench] = _entry(bench, [r["score"] for r in rows], [r["group"] for r in rows])
        if bench == "satisfaction" and any("win" in r for r in rows):  # the derived win ratio, as the eval does
            won = [r for r in rows if "win" in r]
            benches["win_ratio"] = _entry("win_ratio", [r["win"] for r in won], [r["group"] for r in won])
    return {"model": {"name": model_name, "kind": "in-memory", "spec": model_name, "path": "",
                      "weights_sha": "0" * 16, "n_params": 1000},
            "created": "2025-01-01T00:00:00", "versions": {"hrlaif": "test"},
            "config": {"limit": None, "data_dir": None, "seed": 1234}, "benchmarks": benches}


def write_eval_dir(out: Path, samples: dict[str, list[dict]], model_name: str = "synthetic") -> Path:
    """samples: {bench: rows}; a "win_ratio" entry becomes the `win` field of the satisfaction rows
    (the real layout: the win ratio is derived from samples/satisfaction.jsonl)."""
    out = Path(out)
    samples = dict(samples)
    wins = samples.pop("win_ratio", None)
    if wins is not None and "satisfaction" in samples:
        samples["satisfaction"] = [{**r, "win": w["score"]} for r, w in zip(samples["satisfaction"], wins)]
    for bench, rows in samples.items():
        if bench == "win_ratio_vs_rlaif":  # the head-to-head's own file: win ratio rows (`win`)
            rows = [{**{k: v for k, v in r.items() if k != "score"}, "win": r["score"]} for r in rows]
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
            if r["score"] is not None and r["score"] >= 1 and rng.random() < fraction:
                r["score"], r["output"] = 0.0, r["output"][:1]
    return write_eval_dir(dst, samples, "degraded")


def drift_run(rng: np.random.Generator, steps: list[int], rates: dict[str, list[float]], n: int,
              reward_heldout: list[float], reward_train: list[float] | None = None, gold: list[float] | None = None,
              churn: float = 0.1, n_heldout: int = 32) -> tuple[list[dict], dict[int, dict[str, list[dict]]]]:
    """(drift.jsonl rows, {step: {bench: item rows, "heldout": rows}}).

    Items: step 0 has exact counts; each later step re-draws a `churn` share of step 0's items at
    step 0's rate (paired sampling noise, no change in expectation), then flips the fewest items
    that move it by the step's planned change (rate[t] - rate[0]). Held-out rewards: a per-prompt
    level plus the step's mean plus noise; gold: the judge's verdict drawn at gold[t] (one null)."""
    base = {b: np.array(exact_scores(ps[0], n, rng)) for b, ps in rates.items()}
    level = rng.normal(0, 0.5, n_heldout)
    rows, items = [], {}
    for t, step in enumerate(steps):
        per: dict[str, list[dict]] = {}
        bench_rows = {}
        for b, ps in rates.items():
            x = base[b].copy()
            if t:
                redraw = rng.random(n) < churn
                x[redraw] = (rng.random(int(redraw.sum())) < ps[0]).astype(float)
                want = int(round(x.sum() + (ps[t] - ps[0]) * n))
                ones, zeros = np.flatnonzero(x == 1), np.flatnonzero(x == 0)
                if want < x.sum():
                    x[rng.choice(ones, int(x.sum()) - want, replace=False)] = 0.0
                elif want > x.sum():
                    x[rng.choice(zeros, want - int(x.sum()), replace=False)] = 1.0
            per[b] = [{"doc_id": f"{b}/{i}", "score": float(s)} for i, s in enumerate(x)]
            lo, hi = wilson(x.sum(), n)
            k = 1000.0 if b == "toxigen" else 1.0
            bench_rows[b] = {"score": x.mean() * k, "ci95": [lo * k, hi * k], "n": n}
        rewards = level + reward_heldout[t] + rng.normal(0, 0.15, n_heldout)
        golds = [int(v) for v in rng.random(n_heldout) < (gold[t] if gold else 0.5)]
        golds[t % n_heldout] = None
        per["heldout"] = [{"id": f"h{i}", "reward": float(r), "response": "r", "gold": g}
                          for i, (r, g) in enumerate(zip(rewards, golds))]
        items[step] = per
        rows.append({"step": step, "kl": 0.02 * step,
                     "reward_train": (reward_train or reward_heldout)[t], "reward_heldout": float(rewards.mean()),
                     "benchmarks": bench_rows})
    return rows, items


def noise_drift(rng: np.random.Generator, n_ckpt: int = 10, n: int = 200):
    """Held-out reward rises steadily, benchmarks stay at their true rate: only sampling noise moves them."""
    steps = [100 * i for i in range(n_ckpt)]
    reward = [0.1 + 0.15 * i for i in range(n_ckpt)]
    rates = {"gsm8k": [.25] * n_ckpt, "mmlu": [.42] * n_ckpt, "ceval": [.40] * n_ckpt,
             "humaneval": [.10] * n_ckpt, "toxigen": [.03] * n_ckpt}
    return drift_run(rng, steps, rates, n, reward, gold=[.5 + .02 * i for i in range(n_ckpt)])


def overopt_drift(rng: np.random.Generator, n_ckpt: int = 10, n: int = 200):
    """Held-out reward rises while GSM8K collapses from 30% to 8% after the fourth checkpoint, and
    the judge's verdict (gold) peaks and falls: the over-optimisation picture."""
    steps = [100 * i for i in range(n_ckpt)]
    reward = [0.1 + 0.15 * i for i in range(n_ckpt)]
    gsm = [.30 if i < 4 else max(.08, .30 - .06 * (i - 3)) for i in range(n_ckpt)]
    rates = {"gsm8k": gsm, "mmlu": [.42] * n_ckpt, "toxigen": [.03] * n_ckpt}
    gold = [.5 + .08 * i if i < 4 else .74 - .1 * (i - 3) for i in range(n_ckpt)]
    return drift_run(rng, steps, rates, n, reward, gold=gold)


def write_drift(ppo_dir: Path, run: tuple[list[dict], dict], items: bool = True) -> Path:
    rows, per_step = run
    write_jsonl(Path(ppo_dir) / "drift.jsonl", rows)
    if items:
        for step, files in per_step.items():
            for name, r in files.items():
                write_jsonl(Path(ppo_dir) / "drift" / f"step_{step}" / f"{name}.jsonl", r)
    return Path(ppo_dir)


def _pair_accuracy(p: float, n_prompts: int, per_prompt: int, rng: np.random.Generator, clustered: bool) -> dict:
    scores = exact_scores(p, n_prompts * per_prompt, rng)
    if not clustered:
        return mean_ci(scores)
    return cluster_bootstrap_mean(scores, [i // per_prompt for i in range(len(scores))])


def write_synthetic_run(root: Path, seed: int = 0, rates: dict | None = None, overopt: bool = True,
                        missing: tuple[str, ...] = (), drift_items: bool = True, clustered: bool = True,
                        grader: bool | None = True, h2h: bool = True) -> Path:
    """A complete fake run dir. `missing` drops (variant, bench) as 'variant:bench' or a stage name.
    drift_items: per-item drift files (else drift.jsonl only, as older runs); clustered: label and RM
    accuracies with prompt-clustered CIs; grader: results.json's grader_is_labeller (None: not
    recorded); h2h: eval_hrlaif's head-to-head win ratio vs RLAIF."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rates = rates or RATES
    for v, vr in rates.items():
        if f"eval_{v}" in missing:
            continue
        samples = {b: make_samples(b, p, rng) for b, p in vr.items() if f"{v}:{b}" not in missing}
        if v == "hrlaif" and h2h:
            samples["win_ratio_vs_rlaif"] = make_samples("win_ratio_vs_rlaif", .62, rng, n=SIZES["satisfaction"])
        write_eval_dir(root / f"eval_{v}", samples, f"synthetic-{v}")
        if grader is not None:
            p = root / f"eval_{v}" / "results.json"
            write_json(p, {**read_json(p), "grader_is_labeller": grader})
    if "ppo_rlaif" not in missing:
        write_drift(root / "ppo_rlaif", overopt_drift(rng) if overopt else noise_drift(rng), drift_items)
    if "ppo_hrlaif" not in missing:
        write_drift(root / "ppo_hrlaif", noise_drift(rng), drift_items)
    label = {}
    for i, c in enumerate(CATEGORIES):
        verifiable = c in ("math", "multiple_choice", "toxic_rejection")
        label[c] = {"basic": _pair_accuracy(0.62 + 0.01 * i, 10, 4, rng, clustered),
                    "hybrid": _pair_accuracy(0.9 if verifiable else 0.62 + 0.01 * i, 10, 4, rng, clustered),
                    "truth": "second answer check" if verifiable else "human (hh-rlhf)"}
    # where the labeller's answer check and the second check disagree (hrlaif/trainers/feedback/accuracy.py)
    label["answer_check_disagreements"] = {
        "checked": 30, "n": 1, "definition": "responses where the two checks disagree",
        "items": [{"id": "p7", "response": 2, "category": "math", "std_answer": "12", "text": "so the answer is 12.0",
                   "labeller": {"correct": False, "extracted": "12.0"},
                   "second": {"correct": True, "extracted": "12", "reason": "numeric match"}}]}
    if "label_hybrid" not in missing:
        write_json(root / "label_hybrid" / "label_accuracy.json", label)
        write_json(root / "label_hybrid" / "summary.json",
                   {"mode": "hybrid", "judge": {"url": "http://127.0.0.1:8080", "model": "embedded", "embedded": True}})
    for mode, base in (("basic", 0.64), ("hybrid", 0.70)):
        if f"rm_{mode}" in missing:
            continue
        per = {c: _pair_accuracy(base + 0.01 * (i % 4), 10, 5, rng, clustered) for i, c in enumerate(CATEGORIES)}
        write_json(root / f"rm_{mode}" / "rm_metrics.json",
                   {"heldout_acc": _pair_accuracy(base, 120, 5, rng, clustered), "per_category": per,
                    "clipped_share": 0.004 if mode == "basic" else 0.012, "clip": 10.0,
                    # both reward models scored on one held-out pair set with independent truth
                    "shared_heldout_acc": {**_pair_accuracy(base - 0.02, 40, 3, rng, clustered),
                                           "file": "heldout/pairs.jsonl", "sha256_12": "abc123abc123"}})
    usage = {"requests": 120, "http_calls": 80, "cache_hits": 40, "prompt_tokens": 30000, "completion_tokens": 120,
             "invalid": 2, "judge": JUDGE}
    write_json(root / "judge_usage.json", {"stages": {"label_basic": {"labelling": usage},
                                                      "eval_rlaif": {"evaluation": usage}},
                                           "total": {k: 2 * v for k, v in usage.items() if k != "judge"}})
    write_json(root / "redteam" / "summary.json", {
        "prompts": 10, "responses": 20, "sources": {"harmbench": 6, "advbench": 4}, "flagged": 9, "rewrites": 9,
        "rewrites_kept": 7, "rewrites_dropped": 2, "harm_invalid": 1, "pairs": 14,
        "definition": "flagged = SFT responses the harmlessness judge called harmful."})
    return root


def fake_checkpoint(monkeypatch, ckpt: Path, outputs: Path) -> list[tuple]:
    """Make `ckpt` a checkpoint dir (config.json) and replace hrlaif.evalsets.runner.evaluate_to_dir with one
    that writes `outputs`' samples for the benchmarks it is asked for; returns the calls made
    (model spec, output dir name, benchmarks)."""
    import sys
    import types

    from hrlaif.evalsets.runner import EvalConfig  # our own package: never a reason to skip
    calls: list[tuple] = []

    def evaluate_to_dir(model_spec, out_dir, cfg=None, **kw):  # signature of hrlaif.evalsets.runner's
        benchmarks = EvalConfig(**kw).benchmarks  # the keywords must be valid EvalConfig fields
        calls.append((model_spec, Path(out_dir).name, list(benchmarks)))
        write_eval_dir(out_dir, {b: s for b, s in read_eval_samples(outputs).items() if b in benchmarks})

    fake = types.ModuleType("hrlaif.evalsets.runner")
    fake.evaluate_to_dir = evaluate_to_dir
    monkeypatch.setitem(sys.modules, "hrlaif.evalsets.runner", fake)
    Path(ckpt).mkdir(parents=True, exist_ok=True)
    (Path(ckpt) / "config.json").write_text("{}")
    return calls


def rare_category(root: Path, n: int = 3, name: str = "rare") -> Path:
    """Move the first n satisfaction prompts of every variant into a category of their own (a
    category too small for a CI), recomputing the satisfaction and win-ratio entries."""
    for v in ("sft", "rlaif", "hrlaif"):
        p = Path(root) / f"eval_{v}" / "samples" / "satisfaction.jsonl"
        if not p.exists():
            continue
        rows = read_jsonl(p)
        for r in rows[:n]:
            r["group"] = name
        write_jsonl(p, rows)
        res = read_json(Path(root) / f"eval_{v}" / "results.json")
        res["benchmarks"].update(results_from_samples({"satisfaction": rows}, v)["benchmarks"])
        write_json(Path(root) / f"eval_{v}" / "results.json", res)
    return Path(root)


if __name__ == "__main__":  # python -m tests.synthetic_run OUT  -> a run dir to look at
    import sys

    print(write_synthetic_run(Path(sys.argv[1] if len(sys.argv) > 1 else "synthetic_run")))


SEED_SHIFT = {2: 0.04, 3: -0.03, 4: 0.02}  # per-seed offsets of the PPO variants' rates (the first seed: none)


def add_seeds(root: Path, seeds: tuple[int, ...] = (1, 2, 3), rng_seed: int = 1) -> Path:
    """Make ROOT (a write_synthetic_run dir) a run trained with several seeds, in the pipeline's layout:
    eval_<v> is the first seed's (its value in ppo_<v>/manifest.json), eval_<v>_s<seed> the others',
    at RATES shifted by SEED_SHIFT[seed]; SFT stays shared."""
    root, rng = Path(root), np.random.default_rng(rng_seed)
    for v in ("rlaif", "hrlaif"):
        write_json(root / f"ppo_{v}" / "manifest.json",
                   {"stage": f"ppo_{v}", "status": "done", "config": {"ppo": {"seed": seeds[0]}}})
        for s in seeds[1:]:
            rates = {b: min(1.0, max(0.0, p + SEED_SHIFT[s])) for b, p in RATES[v].items()}
            write_eval_dir(root / f"eval_{v}_s{s}", {b: make_samples(b, p, rng) for b, p in rates.items()},
                           f"synthetic-{v}-s{s}")
    return root
