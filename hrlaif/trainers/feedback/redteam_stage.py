"""Red teaming as the HRLAIF paper describes it: the SFT model answers harmful prompts, a
harmlessness judge flags its harmful responses, each is rewritten, each rewrite is judged again
and kept only if judged harmless, and the rewrite > harmful pairs (plus harmless > harmful among
the sampled responses) join the hybrid reward model's data.

    labels = run_redteam(RedteamConfig(model=SFT, out=DIR), harm_judge=JudgeConfig())

Prompts: `prompts` (a prompts.jsonl), else the HarmBench / AdvBench / hh-rlhf harmless files
under data_dir/redteam, else the embedded red-team prompts (hrlaif/evalsets/data/redteam). hh-rlhf
items that the label-accuracy table audits with (`exclude_ids`) are held apart: training on
a prompt and then auditing the labels of its human pair would not be an audit.
Output in OUT: prompts.jsonl, samples.jsonl (the SFT responses), labels.jsonl (rows in the label
format: mode hybrid, category harmlessness, sources policy|rewrite, harmful flags, pairs with
why "redteam"), summary.json (prompts, responses, flagged, rewrites made / kept / dropped, pairs,
invalid flags, judge_usage). Ids are prefixed "redteam:" so they never collide with the
feedback prompts' ids when the pipeline joins both sets.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hrlaif.core.errors import UserError
from hrlaif.core.settings import Settings, existing_file, greater_than, setting
from hrlaif.core.store import read_jsonl, write_json, write_jsonl
from hrlaif.judges.config import JudgeConfig

ID_PREFIX = "redteam:"


@dataclass
class RedteamConfig(Settings):
    """Every knob of the red-team stage (`hrlaif redteam`, the run config's `redteam:` section; the
    run's `label.redteam: false` turns red teaming off altogether)."""

    model: str | None = setting(None, "the SFT checkpoint that answers the harmful prompts (none = the embedded "
                                      "SmolLM2-135M-Instruct)", pipeline=True)
    out: str = setting("redteam", "output directory: prompts.jsonl, samples.jsonl, labels.jsonl, summary.json",
                       pipeline=True)
    data_dir: str | None = setting(None, "directory whose redteam/ holds HarmBench, AdvBench or hh-rlhf harmless "
                                         "files (none = the embedded red-team prompts)", pipeline=True)
    seed: int = setting(1234, "seed of sampling (`hrlaif run` passes its own)", pipeline=True)
    prompts: str | None = setting(None, "harmful prompts.jsonl {id, prompt} instead of the data_dir / embedded "
                                        "sets", check=existing_file)
    limit: int = setting(0, "prompts per source file (0 = all)", min=0)
    k: int = setting(2, "SFT responses per harmful prompt", min=2)
    rewrite: bool = setting(True, "rewrite flagged responses (each rewrite is judged again; kept only if harmless)")
    max_new_tokens: int = setting(128, "tokens per response", min=1)
    temperature: float = setting(1.0, "sampling temperature", check=greater_than(0))
    batch_size: int = setting(4, "prompts per generate call", min=1)


def harmful_prompts(cfg: RedteamConfig, exclude_ids: set[str] = frozenset()) -> list[dict]:
    """The stage's prompts (module docstring), ids prefixed, held-apart hh items left out."""
    from hrlaif.trainers.data_formats import load_prompts
    from hrlaif.trainers.feedback.redteam import HARMLESS, load_harmful_prompts

    rows = load_prompts(cfg.prompts) if cfg.prompts else load_harmful_prompts(cfg.data_dir)
    rows = [r for r in rows if str(r["id"]) not in exclude_ids]
    if cfg.limit:  # per source, after the held-apart items are out
        taken: dict[str, int] = {}
        kept = []
        for r in rows:
            src = r.get("source") or "embedded"
            if taken.get(src, 0) < cfg.limit:
                taken[src] = taken.get(src, 0) + 1
                kept.append(r)
        rows = kept
    if not rows:
        raise UserError("red teaming has no harmful prompts left (all held apart for the label-accuracy audit?)")
    return [{**r, "id": ID_PREFIX + str(r["id"]), "category": HARMLESS} for r in rows]


def run_redteam(cfg: RedteamConfig, harm_judge: JudgeConfig | None = None,
                exclude_ids: set[str] = frozenset()) -> Path:
    """Sample, flag, rewrite, re-judge (module docstring); returns OUT/labels.jsonl."""
    from hrlaif.judges.server import LOG_NAME, session_for
    from hrlaif.trainers.configs import SampleConfig
    from hrlaif.trainers.feedback.labelling import summarize
    from hrlaif.trainers.sampling import sample_responses

    harm_judge = harm_judge or JudgeConfig()
    out = Path(cfg.out)
    prompts = harmful_prompts(cfg, exclude_ids)
    write_jsonl(out / "prompts.jsonl", prompts)
    t0 = time.perf_counter()
    samples_path = sample_responses(SampleConfig(
        model=cfg.model, prompts=str(out / "prompts.jsonl"), out=str(out / "samples.jsonl"), k=cfg.k,
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed, batch_size=cfg.batch_size))
    samples = read_jsonl(samples_path)
    t_sampled = time.perf_counter()
    with session_for(harm_judge, str(out / LOG_NAME)) as judge:
        with ThreadPoolExecutor(max_workers=max(1, harm_judge.workers)) as ex:
            labels = list(ex.map(lambda s: redteam_label(s, judge, cfg.rewrite), samples))
        usage = {"harmlessness": judge.usage()}
    write_jsonl(out / "labels.jsonl", labels)
    counts = summarize(labels)
    summary = {"prompts": len(labels), "responses": sum(len(s["responses"]) for s in samples),
               "sources": _by_source(prompts), **counts["redteam"], "pairs": counts["pairs"],
               "rows_with_pairs": sum(1 for r in labels if r["pairs"]),
               "definition": "flagged = SFT responses the harmlessness judge called harmful; rewrites = rewrites made; "
                             "kept = rewrites judged harmless again (each gives rewrite > harmful pairs); dropped = "
                             "rewrites judged harmful again or without a valid verdict",
               "judge_usage": usage, "sample_s": round(t_sampled - t0, 1),
               "judge_s": round(time.perf_counter() - t_sampled, 1)}
    write_json(out / "summary.json", summary)
    print(f"red teaming: {summary['prompts']} harmful prompts, {summary['flagged']} of {summary['responses']} "
          f"responses flagged, {summary['rewrites_kept']} rewrites kept, {summary['rewrites_dropped']} dropped, "
          f"{summary['pairs']} pairs -> {out}", flush=True)
    return out / "labels.jsonl"


def redteam_label(sample: dict, judge, rewrite: bool = True) -> dict:
    """One label row: red-team pairs only (no pairwise judging of style)."""
    from hrlaif.trainers.feedback.labelling import base_row, merge_pairs, new_meta
    from hrlaif.trainers.feedback.redteam import redteam_row

    row, meta = base_row(sample, "hybrid"), new_meta()
    constraints = redteam_row(row, judge, meta, rewrite=rewrite)
    row["pairs"], row["why"], _ = merge_pairs(constraints, [], row["id"])
    row["invalid_judgements"], row["judge_meta"] = meta["invalid"], meta
    return row


def _by_source(prompts: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in prompts:
        src = p.get("source") or "embedded"
        out[src] = out.get(src, 0) + 1
    return out
