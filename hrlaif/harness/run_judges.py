"""The pipeline's judging steps (hrlaif/harness/pipeline.py runs them as or inside its stages):

- `redteam_stage`: SFT answers to harmful prompts, flagged / rewritten / re-judged by the
  harmlessness judge (hrlaif/trainers/feedback/redteam_stage.py); its pairs join the hybrid RM's data
  (`rm_training_data`).
- `heldout_stage`: the one held-out pair set both reward models are scored on. The held-out
  prompt ids are drawn from the samples' ids (the reward model's own seeded split), every one of
  them kept out of both RMs' training; its pairs are independent truth only (the second answer
  check on verifiable prompts, human sheets, hh-rlhf chosen/rejected), never either labeller's
  pairs, so the two RMs' accuracies compare like with like (rm_metrics.json `shared_heldout_acc`).
- `gold_judge`: PPO's `gold_fn` (the evaluation judge's satisfaction verdict per held-out response).
- `head_to_head`: HRLAIF's vs RLAIF's satisfaction responses, both orders, by the evaluation judge:
  eval_hrlaif/results.json `win_ratio_vs_rlaif`, rows in eval_hrlaif/samples/win_ratio_vs_rlaif.jsonl.
- `eval_audit`: the evaluation judge's audit (hrlaif/judges/audit.py) from the win-ratio and head-to-head
  rows of one evaluation: EVAL/judge_audit.json (repeatability measured where a session is open).
- `write_judge_usage`: every stage's judge requests and tokens in RUN/judge_usage.json.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

from hrlaif.core.layout import USAGE_FILE, EvalDir, RunLayout
from hrlaif.core.store import read_json, read_jsonl, write_json, write_jsonl

HELDOUT_IDS = "ids.json"
HELDOUT_PAIRS = "pairs.jsonl"


def hh_file(cfg) -> Path | None:
    from hrlaif.trainers.feedback.label_stage import HH_FILE

    p = Path(cfg.data_dir) / HH_FILE if cfg.data_dir else None
    return p if p is not None and p.exists() else None


def hh_audit_items(cfg) -> list[dict]:
    """The hh-rlhf pairs the label-accuracy table audits with (held apart from red-team training)."""
    from hrlaif.trainers.feedback.redteam import load_hh_pairs

    p = hh_file(cfg)
    return load_hh_pairs(p, cfg.label.hh_limit) if p is not None and cfg.label.hh_limit else []


def redteam_stage(cfg, sft_model: Path, out: Path) -> Path:
    from hrlaif.trainers.feedback.redteam_stage import run_redteam

    audited = {item["id"] for item in hh_audit_items(cfg)}
    return run_redteam(replace(cfg.redteam, model=str(sft_model), out=str(out), data_dir=cfg.data_dir,
                               seed=cfg.seed), cfg.harm_judge, exclude_ids=audited)


def heldout_stage(cfg, samples: Path, out: Path) -> Path:
    """OUT/ids.json and OUT/pairs.jsonl (labels format): see the module docstring."""
    from hrlaif.trainers.feedback.accuracy import TRUTH_HH, TRUTH_HUMAN, ground_truth_pairs, load_human_pairs, truth_of
    from hrlaif.trainers.reward_model import split_heldout

    rows = read_jsonl(samples)
    by_id = {str(r["id"]): r for r in rows}
    _, held = split_heldout([{"id": i} for i in by_id], cfg.reward_model.heldout_frac, cfg.seed)
    held_ids = sorted(g["id"] for g in held)
    human = load_human_pairs(cfg.label.human_pairs, by_id) if cfg.label.human_pairs else {}
    groups, truths = [], {}
    for sid in held_ids:
        s = by_id[sid]
        pairs = [list(p) for p in (ground_truth_pairs(s) or [])]
        if pairs:
            truths[sid] = truth_of(s)
        if sid in human:
            pairs += [p for p in human[sid] if p not in pairs and p[::-1] not in pairs]
            truths[sid] = TRUTH_HUMAN if sid not in truths else truths[sid] + " + " + TRUTH_HUMAN
        groups.append({"id": sid, "prompt": s["prompt"], "category": s["category"], "responses": s["responses"],
                       "pairs": pairs, "truth": truths.get(sid)})
    for item in hh_audit_items(cfg):
        groups.append({"id": item["id"], "prompt": item["prompt"], "category": "harmlessness (hh-rlhf)",
                       "responses": [item["chosen"], item["rejected"]], "pairs": [[0, 1]], "truth": TRUTH_HH})
    write_jsonl(out / HELDOUT_PAIRS, groups)
    write_json(out / HELDOUT_IDS, {
        "ids": held_ids, "frac": cfg.reward_model.heldout_frac, "seed": cfg.seed, "sample_ids": len(by_id),
        "pairs": sum(len(g["pairs"]) for g in groups), "groups_with_truth": sum(1 for g in groups if g["pairs"]),
        "definition": "prompt ids held out of both reward models' training (a seeded draw from the samples' ids) "
                      "plus the hh-rlhf pairs the label audit uses; pairs are independent truth only (second answer "
                      "check, human sheets, hh-rlhf), never either labeller's"})
    return out / HELDOUT_PAIRS


def rm_config(cfg, sft_model: Path, labels: Path, samples: Path, heldout: Path | None, out: Path):
    """The RM stage's config: both RMs hold out exactly the shared ids (frac 0: no second draw)."""
    extra = {"heldout_pairs": str(heldout), "heldout_frac": 0.0} if heldout is not None else {}
    return replace(cfg.reward_model, model=str(sft_model), labels=str(labels), samples=str(samples),
                   out=str(out), seed=cfg.seed, **extra)


def rm_training_data(labels: Path, samples: Path, redteam: Path | None, out: Path) -> tuple[Path, Path]:
    """The hybrid RM's data: its labels plus the red-team rows (and their samples, for the cross-check)."""
    if redteam is None or not Path(redteam).exists():
        return labels, samples
    rt_dir = Path(redteam).parent
    write_jsonl(out / "train_labels.jsonl", read_jsonl(labels) + read_jsonl(redteam))
    write_jsonl(out / "train_samples.jsonl", read_jsonl(samples) + read_jsonl(rt_dir / "samples.jsonl"))
    return out / "train_labels.jsonl", out / "train_samples.jsonl"


@contextlib.contextmanager
def gold_judge(cfg, out: Path) -> Iterator[Callable]:
    """PPO's `gold_fn(prompts, responses) -> [1 | 0 | None]`: the evaluation judge's satisfaction
    verdict (started on first use); its usage goes to OUT/judge_usage.json."""
    from hrlaif.evalsets.satisfaction import gold_verdicts
    from hrlaif.judges.server import LOG_NAME, LazyJudge

    with LazyJudge(cfg.eval_judge, str(out / ("gold-" + LOG_NAME))) as lazy:
        try:
            yield lambda prompts, responses: gold_verdicts(lazy.get(), list(prompts), list(responses))
        finally:
            if lazy.usage() is not None:
                write_json(out / USAGE_FILE, {"evaluation": lazy.usage()})


def head_to_head(cfg, ours_dir: Path, theirs_dir: Path) -> dict | None:
    """`win_ratio_vs_rlaif` into ours_dir/results.json (+ samples/win_ratio_vs_rlaif.jsonl); None
    when either evaluation has no satisfaction samples."""
    from hrlaif.evalsets.satisfaction import H2H, head_to_head_summary
    from hrlaif.evalsets.satisfaction import head_to_head as judge_h2h
    from hrlaif.judges.prompts import EVAL_VERSION
    from hrlaif.judges.server import LOG_NAME, session_for

    mine, other = Path(ours_dir) / "samples" / "satisfaction.jsonl", Path(theirs_dir) / "samples" / "satisfaction.jsonl"
    if not (mine.exists() and other.exists()):
        return None
    with session_for(cfg.eval_judge, str(Path(ours_dir) / ("h2h-" + LOG_NAME))) as judge:
        rows = judge_h2h(read_jsonl(mine), read_jsonl(other), judge)
        usage = judge.usage()
        write_jsonl(Path(ours_dir) / "samples" / f"{H2H}.jsonl", rows)
        eval_audit(cfg, Path(ours_dir), judge, versus_dir=Path(theirs_dir))  # session open: repeatability too
    summary = head_to_head_summary(rows, cfg.eval_judge.identity() | {"prompts": EVAL_VERSION})
    summary.update(source=f"eval_hrlaif vs {Path(theirs_dir).name}", seconds=0.0, cached=False)
    res = read_json(EvalDir(Path(ours_dir)).results)
    res["benchmarks"][H2H] = summary
    res["judge_usage"] = (res.get("judge_usage") or {}) | {"head_to_head": usage}
    write_json(EvalDir(Path(ours_dir)).results, res)
    print(f"  {H2H:<12} HRLAIF vs RLAIF {100 * summary['score']:.1f}%  n={summary['n']}  "
          f"(W/T/L {summary['extra']['wins']}/{summary['extra']['ties']}/{summary['extra']['losses']}, "
          f"invalid {summary['extra']['invalid']})", flush=True)
    return summary


def _verified(eval_dir: Path) -> dict:
    p = Path(eval_dir) / "samples" / "satisfaction.jsonl"
    return {r["doc_id"]: r.get("verified") for r in read_jsonl(p)} if p.exists() else {}


def eval_audit(cfg, out: Path, judge=None, baseline_dir: Path | None = None, versus_dir: Path | None = None
               ) -> dict | None:
    """OUT/judge_audit.json from every pairwise row in OUT/samples (the win ratio vs SFT, HRLAIF vs RLAIF);
    truth: a verified-correct response against a verified-wrong one (the second answer check). With an
    open `judge`, a repeatability sample too. None (no file) when the evaluation judged no pair.
    baseline_dir / versus_dir: the SFT's and RLAIF's evaluations (their verified answers; default siblings)."""
    from hrlaif.core.judge_audit import AUDIT_FILE, audit, pair_record
    from hrlaif.evalsets.satisfaction import H2H
    from hrlaif.judges.audit import repeatability
    from hrlaif.judges.prompts import eval_pairwise_messages

    out = Path(out)
    recs, requests, sources = [], [], set()
    for f in sorted((out / "samples").glob("*.jsonl")):
        run = RunLayout(out.parent)
        baseline = (versus_dir or run.eval("rlaif").dir) if f.stem == H2H else (baseline_dir or run.eval("sft").dir)
        ours, theirs = _verified(out), _verified(baseline)
        for r in read_jsonl(f):
            if not isinstance(r.get("pairwise"), list) or "baseline_output" not in r or len(r["pairwise"]) != 2:
                continue
            a, b = ours.get(r["doc_id"]), theirs.get(r["doc_id"])
            truth = 1 if (a, b) == (True, False) else 0 if (a, b) == (False, True) else None
            if truth is not None:
                sources.add("verified correct vs wrong final answers (second answer check)")
            recs.append(pair_record(f"{f.stem}:{r['doc_id']}", r["output"], r["baseline_output"], *r["pairwise"],
                                    r.get("p_ours"), truth))
            requests.append(eval_pairwise_messages(r["prompt"], r["output"], r["baseline_output"]))
    if not recs:
        return None
    rep = repeatability(judge, requests) if judge is not None else None
    a = audit(recs, "evaluation", cfg.eval_judge.identity(), rep, sorted(sources),
              definition="pairs the evaluation judge compared in both orders (win ratio vs SFT, HRLAIF vs RLAIF)"
                         + ("" if rep else "; repeatability is measured where a judge session is open (the "
                                           "head to head), or by hrlaif audit-judge --prompt evaluation"))
    write_json(out / AUDIT_FILE, a)
    return a


COUNTS = ("requests", "http_calls", "cache_hits", "prompt_tokens", "completion_tokens", "invalid")


def write_judge_usage(run_dir: Path, sources) -> dict:
    """RUN/judge_usage.json: {stages: {stage: {role: usage}}, total: {...}} from what each stage wrote;
    `sources`: (stage, file) pairs, from the stage records (hrlaif/harness/stages.py `Stage.usage`)."""
    stages: dict[str, dict] = {}
    for stage, name in sources:
        p = Path(run_dir) / stage / name
        if not p.exists():
            continue
        data = read_json(p)
        usage = data if name == USAGE_FILE else data.get("judge_usage")
        if usage:
            stages[stage] = usage
    total = {k: sum(int(u.get(k) or 0) for roles in stages.values() for u in roles.values() if u) for k in COUNTS}
    out = {"stages": stages, "total": total,
           "definition": "judge requests per stage and role (cache hits cost nothing; tokens as the endpoint "
                         "reported them for the requests actually sent)"}
    write_json(Path(run_dir) / USAGE_FILE, out)
    return out
