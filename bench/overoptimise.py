"""A real over-optimisation run and its control: does the over-optimisation alarm catch it, and stay quiet
on the control? And do the training signals proposed as early warnings (KL growth, entropy, the spread of
advantages) depart from the control before the benchmark falls?

Two PPO runs of the same model against the same exploitable proxy reward, with the settings of a run
config (`overoptimise`, hrlaif/harness/configs/overoptimise.yaml):
  overoptimised  the config's PPO: no KL penalty, a large learning rate;
  control        the same proxy with a sound KL coefficient and learning rate (--control-kl-coef,
                 --control-lr; the quickstart's lr), optionally fewer steps (--control-steps).
Both log drift every `drift_every` steps: the proxy reward on held-out prompts, a benchmark with headroom
(MMLU cloze) item by item, and the evaluation judge's gold verdicts. The alarm is the report's own code
(hrlaif.reports.drift.overoptimisation_alarms); the plots are the report's drift plots.

The proxy (unless --reward-model names one) is the weakest reward model there is: the policy's own
backbone with a seeded, untrained scalar head. It scores something about every response, so PPO can
push it up without limit, and nothing about it is quality: everything PPO gains on it is exploitation.

    python bench/overoptimise.py --data-dir D --subjects astronomy,marketing,high_school_geography,us_foreign_policy \
        --control-steps 32     # both runs, then the verdicts (drift at steps 0, 32, 64; within 45 min on 2 cores)
    python bench/overoptimise.py ... --drift-every 16  # the fall step by step (51 min cold on 2 AMX cores)
    python bench/overoptimise.py ... --drift-every 16 --null-seed 2 --null-steps 16   # also the control at a second
                                                       # seed (the detector power bench's real two-seed null)
    python bench/overoptimise.py --analyse-only        # the verdicts from runs already on disk

Writes OUT/<arm>/ (a PPO stage dir: metrics.jsonl, drift.jsonl, drift/step_N/), OUT/drift_<arm>.png and
OUT/summary.json; prints the alarms, the early-warning table and the host's CPU flags.
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrlaif.core.hardware import describe, hold_back_torch  # noqa: E402
from hrlaif.core.store import read_jsonl, write_json, write_jsonl  # noqa: E402

SIGNALS = {"kl_k3": "KL to the reference (k3)", "entropy": "policy entropy", "adv_std": "advantage spread (raw)"}


def proxy_reward_model(model: str, out: Path, seed: int, clip: float) -> Path:
    """The policy's backbone with a seeded random scalar head, saved once."""
    if (out / "config.json").exists():
        return out
    import torch

    from hrlaif.trainers.models import RewardModel

    torch.manual_seed(seed)
    rm, tok, _ = RewardModel.from_backbone(model, clip=clip)
    rm.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def heldout_file(out: Path, n: int) -> Path:
    """N held-out prompts: the packaged held-out set (12), then the embedded satisfaction set's prompts
    (96, 12 categories x 2 languages, with standard answers for the gold verdicts) taken round-robin over
    categories. Neither is ever a training prompt. Twelve prompts are too few for the paired test of the
    held-out reward to see a rise of the size PPO makes (p 0.12 on a +0.8 rise in our first run)."""
    from hrlaif.evalsets.benchdata import DATA_DIR
    from hrlaif.trainers.drift import HELDOUT_PROMPTS
    rows = read_jsonl(HELDOUT_PROMPTS)
    sat = read_jsonl(DATA_DIR / "satisfaction" / "eval_set.jsonl")  # the package's embedded copy
    by_cat: dict[str, list] = {}
    for i, r in enumerate(sat):
        by_cat.setdefault(r["class"], []).append({"id": f"sat-{i:03d}", "prompt": r["question"], "category": r["class"],
                                                  "std_answer": r.get("std_answer"), "lang": r.get("lang", "en")})
    while len(rows) < n and any(by_cat.values()):
        rows += [v.pop(0) for v in by_cat.values() if v][:n - len(rows)]
    if len(rows) < n:
        raise SystemExit(f"--heldout: only {len(rows)} held-out prompts are available")
    path = out / "heldout_prompts.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, rows[:n])
    return path


def subject_dir(src: Path, subjects: list[str], dst: Path) -> Path:
    """A data dir whose mmlu/{test,dev} hold only `subjects` (links to SRC's files)."""
    for split in ("test", "dev"):
        (dst / "mmlu" / split).mkdir(parents=True, exist_ok=True)
        for sub in subjects:
            f = src / "mmlu" / split / f"{sub}_{split}.csv"
            if not f.is_file():
                raise SystemExit(f"--subjects: {f} not found")
            link = dst / "mmlu" / split / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    return dst


def run_arm(cfg, model: str, rm: Path, out: Path, seed: int, kl_coef: float, heldout: Path | None,
            steps: int | None = None, lr: float | None = None) -> None:
    """One PPO run with its drift log. Reused when it is on disk to the config's last step; continued from
    its last checkpoint when it stopped earlier (killed, or the config now asks for more steps: `steps` does
    not change the trajectory); delete OUT/<arm> to redo it."""
    from hrlaif.evalsets.runner import evaluate_in_process
    from hrlaif.harness.run_judges import gold_judge
    from hrlaif.trainers.ppo import train

    if steps or lr:
        cfg = replace(cfg, ppo=replace(cfg.ppo, steps=steps or cfg.ppo.steps, lr=lr or cfg.ppo.lr))
    done = max((r["step"] for r in read_jsonl(out / "metrics.jsonl")), default=0) if (out / "metrics.jsonl").exists() \
        else 0
    if (out / "final").exists() and done >= cfg.ppo.steps:
        print(f"{out.name}: already on disk, reused", flush=True)
        return
    out.mkdir(parents=True, exist_ok=True)
    resume = (out / "checkpoints" / "latest").exists()
    pcfg = replace(cfg.ppo, model=model, reward_model=str(rm), out=str(out), seed=seed, kl_coef=kl_coef,
                   adaptive_kl=False, drift_data_dir=cfg.data_dir, report_to=[], resume=resume)
    if heldout is not None:
        pcfg = replace(pcfg, heldout_prompts=str(heldout), heldout_limit=len(read_jsonl(heldout)))
    t = time.time()
    with gold_judge(cfg, out) as gold_fn:
        train(pcfg, evaluate_fn=functools.partial(evaluate_in_process, max_gen_toks=dict(cfg.eval.max_gen_toks),
                                                  precision=cfg.eval.precision, judge=cfg.eval_judge),
              gold_fn=gold_fn)
    print(f"{out.name}: {pcfg.steps} PPO steps with kl_coef {kl_coef} in {time.time() - t:.0f} s", flush=True)


def departure_step(over: pd.Series, control: pd.Series, k: float = 3.0, run: int = 3) -> int | None:
    """First step from which the over-optimised run's signal stays outside the control's band (its
    mean +- k sd over all steps) for `run` consecutive steps; None if it never does."""
    band = control.dropna()
    if len(band) < 3:
        return None
    lo, hi = band.mean() - k * band.std(ddof=1), band.mean() + k * band.std(ddof=1)
    outside = [(s, not (lo <= v <= hi)) for s, v in over.dropna().items()]
    for i in range(len(outside) - run + 1):
        if all(o for _, o in outside[i:i + run]):
            return int(outside[i][0])
    return None


def analyse(out: Path, arms: list[str]) -> dict:
    from hrlaif.reports.collect import drift_frames
    from hrlaif.reports.drift import drift_tests, overoptimisation_alarms, read_drift_items
    from hrlaif.reports.plots import save_drift_plot

    result = {"host": describe(), "arms": {}}
    metrics = {}
    for arm in arms:
        d = out / arm
        rewards, benches = drift_frames(d / "drift.jsonl")
        items = read_drift_items(d)
        tests = drift_tests(rewards, benches, items)
        alarms = overoptimisation_alarms(arm, rewards, benches, items, tests=tests)
        save_drift_plot(out / f"drift_{arm}.png", arm, rewards, benches, alarms)
        metrics[arm] = pd.DataFrame(read_jsonl(d / "metrics.jsonl")).drop_duplicates("step", keep="last") \
            .set_index("step")
        result["arms"][arm] = {
            "alarms": [a["message"] for a in alarms], "fired": bool(alarms),
            "first_alarm_step": min((a["first_step"] for a in alarms), default=None),
            "checkpoints": [{"step": t["step_to"], "bench": t["bench"], "score_from": t["score_from"],
                             "score_to": t["score_to"], "diff": t["diff"], "ci": t["ci"], "n": t["n"],
                             "p": t["p"], "p_holm": t.get("p_holm"), "reward_rose": t.get("rose"),
                             "reward_from": (t["reward"] or {}).get("r0"), "reward_to": (t["reward"] or {}).get("r1"),
                             "reward_p": (t["reward"] or {}).get("p")} for t in tests],
            "gold": {int(s): _mean([h["gold"] for h in v["heldout"].values()]) for s, v in items.items()},
        }
    if "overoptimised" in metrics and "control" in metrics:
        over, ctrl = metrics["overoptimised"], metrics["control"]
        result["early_warning"] = {
            sig: departure_step(over[sig], ctrl[sig]) if sig in over and sig in ctrl else None for sig in SIGNALS}
    return result


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def show(result: dict) -> None:
    h = result["host"]
    print(f"\nhost: {h['machine']}, CPU flags {' '.join(h['cpu_flags'])}")
    for arm, r in result["arms"].items():
        print(f"\n== {arm}: alarm {'FIRED' if r['fired'] else 'silent'}")
        for m in r["alarms"]:
            print("  " + m)
        print("  step  bench        score_from -> score_to   diff [95% CI]          n    p       Holm p  "
              "held-out reward (p)")
        for c in r["checkpoints"]:
            print(f"  {c['step']:>4}  {c['bench']:<12} {c['score_from'] * 100:5.1f}% -> {c['score_to'] * 100:5.1f}%   "
                  f"{c['diff'] * 100:+5.1f} [{c['ci'][0] * 100:+5.1f}, {c['ci'][1] * 100:+5.1f}] pt  {c['n']:>4}  "
                  f"{c['p']:.2g}  {c['p_holm'] if c['p_holm'] is None else format(c['p_holm'], '.2g'):>7}  "
                  f"{_r(c['reward_from'])} -> {_r(c['reward_to'])} ({_r(c['reward_p'], '.2g')})")
        print("  gold verdict (share of held-out responses the evaluation judge accepts) by step: "
              + ", ".join(f"{s}: {_r(g, '.2f')}" for s, g in sorted(r["gold"].items())))
    if "early_warning" in result:
        fell = result["arms"].get("overoptimised", {}).get("first_alarm_step")
        print(f"\nearly warnings (first step the signal leaves the control's mean +- 3 sd for 3 steps); "
              f"the alarm first fired at step {fell}:")
        for sig, step in result["early_warning"].items():
            when = "never" if step is None else f"step {step}" + (
                "" if fell is None else " (before the alarm)" if step < fell else " (not before the alarm)")
            print(f"  {SIGNALS[sig]:<28} {when}")


def _r(x, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="overoptimise", help="run config (file or shipped name)")
    ap.add_argument("--out", default="runs/overoptimise")
    ap.add_argument("--control-kl-coef", type=float, default=0.1, help="the control's KL coefficient")
    ap.add_argument("--control-lr", type=float, default=1e-5,
                    help="the control's learning rate (the quickstart's): at the over-optimised run's lr PPO on every "
                         "block damages the model whatever the KL coefficient (README), so a sound control needs both")
    ap.add_argument("--control-steps", type=int, default=None, help="the control's steps (default: the config's)")
    ap.add_argument("--reward-model", default=None, help="the proxy (default: an untrained head on the backbone)")
    ap.add_argument("--null-seed", type=int, default=None, help="also run the control at this seed")
    ap.add_argument("--null-steps", type=int, default=None,
                    help="stop the --null-seed arm after this many steps (a multiple of drift_every): its drift "
                         "items at that step and the control's at the same step are the real two-seed null")
    ap.add_argument("--data-dir", default=None, help="benchmark data in the official layouts (over the config's "
                                                     "data_dir; the embedded MMLU slice has only 30 items)")
    ap.add_argument("--subjects", default=None,
                    help="comma list: evaluate the MMLU-layout drift benchmark on these subjects only (OUT/data "
                         "links their files), e.g. those where the model starts above chance")
    ap.add_argument("--drift-every", type=int, default=None,
                    help="drift every N steps (default: the config's 32, which keeps the bench within 45 min on 2 "
                         "cores; 16 shows the fall step by step in about 51 min)")
    ap.add_argument("--heldout", type=int, default=48,
                    help="held-out prompts per drift evaluation (OUT/heldout_prompts.jsonl: the packaged 12, then "
                         "the embedded satisfaction prompts); 0 = the config's own held-out set")
    ap.add_argument("--also", default="", help="comma list: more arm dirs under OUT to analyse (e.g. an earlier "
                                                "control kept under another name)")
    ap.add_argument("--analyse-only", action="store_true")
    args = ap.parse_args()
    hold_back_torch()
    from hrlaif.core.errors import UserError
    from hrlaif.core.models import resolve
    from hrlaif.harness.config import load_config

    try:
        cfg = load_config(args.config)
        if args.drift_every:
            cfg = replace(cfg, ppo=replace(cfg.ppo, drift_every=args.drift_every, save_every=args.drift_every))
        if args.data_dir:
            cfg = replace(cfg, data_dir=str(Path(args.data_dir).resolve()))
        if args.subjects:
            cfg = replace(cfg, data_dir=str(subject_dir(Path(cfg.data_dir or ""), args.subjects.split(","),
                                                        Path(args.out) / "data")))
        out = Path(args.out)
        model = str(resolve(cfg.model).path)
        arms = [("overoptimised", cfg.seed, cfg.ppo.kl_coef), ("control", cfg.seed, args.control_kl_coef)]
        if args.null_seed is not None:
            arms.append((f"control_s{args.null_seed}", args.null_seed, args.control_kl_coef))
        steps = {"control": args.control_steps, f"control_s{args.null_seed}": args.null_steps or args.control_steps}
        lrs = {"control": args.control_lr, f"control_s{args.null_seed}": args.control_lr}
        if not args.analyse_only:
            t0 = time.time()
            rm = Path(args.reward_model) if args.reward_model else proxy_reward_model(
                model, out / "proxy_rm", cfg.seed, cfg.reward_model.clip)
            held = heldout_file(out, args.heldout) if args.heldout else None
            for arm, seed, kl in arms:
                run_arm(cfg, model, rm, out / arm, seed, kl, held, steps.get(arm), lrs.get(arm))
            print(f"training and drift logs: {(time.time() - t0) / 60:.1f} min", flush=True)
        names = [a for a, _, _ in arms] + [a for a in args.also.split(",") if a]
        result = analyse(out, [a for a in names if (out / a / "drift.jsonl").exists()])
    except UserError as e:
        print(f"overoptimise: error: {e}", file=sys.stderr)
        return 2
    write_json(out / "summary.json", result)
    show(result)
    print(f"\nplots: {', '.join(str(out / f'drift_{a}.png') for a in result['arms'])}; {out / 'summary.json'}")
    ok = result["arms"].get("overoptimised", {}).get("fired") and not result["arms"].get("control", {}).get("fired")
    print("verdict: " + ("the alarm fired on the over-optimised run and stayed silent on the control" if ok
                         else "NOT as expected: see the tables above"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
