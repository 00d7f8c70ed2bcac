"""`hrlaif label`: AI-feedback preference labels and the label-accuracy table.

Labels are appended to OUT/labels.jsonl one prompt at a time (fsynced), and a rerun
skips ids already there, so a judge that dies mid-run (after its retries) costs nothing
that was finished; the judge's request cache makes the rerun's repeated calls free.

The label-accuracy table compares basic and hybrid labels wherever ground truth exists:
verifiable prompts in --samples (the other mode's labels are computed for them too;
hybrid needs no judge calls for those pairs) and, with --data-dir, hh-rlhf harmless
chosen/rejected pairs (redteam/hh_harmless_test.jsonl).
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from core.errors import UserError
from core.store import append_jsonl, read_jsonl, write_json, write_jsonl

MODES = ("basic", "hybrid")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True, help="samples.jsonl from `hrlaif sample` (K >= 2 responses per prompt)")
    p.add_argument("--mode", choices=MODES, required=True, help="basic RLAIF or hybrid (HRLAIF) labelling")
    p.add_argument("--redteam", action="store_true",
                   help="AI red teaming for category 'harmlessness': flag harmful responses, add harmless rewrites")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--judge-url", help="OpenAI-compatible endpoint (default: the embedded SmolLM2 llama.cpp server)")
    p.add_argument("--judge-model", default=None, help="judge model name at --judge-url")
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY",
                   help="NAME of the environment variable holding the judge API key (never the key itself)")
    p.add_argument("--judge-retries", type=int, default=4, help="retries per request on 429/5xx/timeouts")
    p.add_argument("--judge-timeout", type=float, default=120.0, help="seconds per judge request")
    p.add_argument("--data-dir", help="directory with redteam/hh_harmless_test.jsonl: hh-rlhf ground truth")
    p.add_argument("--hh-limit", type=int, default=50, help="hh-rlhf pairs used for label accuracy")
    p.add_argument("--workers", type=int, default=2, help="concurrent judge requests")
    p.add_argument("--verifiable", default="math,multiple_choice",
                   help="comma-separated categories verified against std_answer in hybrid mode")
    p.add_argument("--cache-dir", default=None, help="judge request cache (default $HRLAIF_CACHE/judge; '' = off)")
    p.add_argument("--no-accuracy", action="store_true", help="skip the label-accuracy table")


def _check_existing(path: Path, by_id: dict, mode: str) -> dict[str, dict]:
    """Finished labels from an earlier (interrupted) run, validated against the samples."""
    if not path.exists():
        return {}
    done = {}
    for row in read_jsonl(path):
        sid = str(row.get("id"))
        if sid not in by_id:
            raise UserError(f"{path} has id {sid!r} that is not in --samples (labels/samples mismatch)")
        if row.get("mode") != mode:
            raise UserError(f"{path} holds {row.get('mode')!r} labels, not {mode!r}: use another --out")
        k = len(by_id[sid]["responses"])
        if row.get("responses", [])[:k] != by_id[sid]["responses"]:
            raise UserError(f"{path}: responses of id {sid!r} differ from --samples (labels/samples mismatch)")
        done[sid] = row
    return done


def _label_all(todo: list[dict], judge, mode: str, kw: dict, path: Path, workers: int) -> None:
    from tqdm import tqdm

    from trainers.feedback.labelling import label_one

    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex, \
            tqdm(total=len(todo), desc=f"label {mode}", unit="prompt") as bar:
        pending = {ex.submit(label_one, s, judge, mode, **kw) for s in todo}
        error: BaseException | None = None
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                if f.cancelled():
                    continue
                if f.exception() is not None:
                    if error is None:
                        error = f.exception()
                        for p in pending:  # stop cleanly: keep what is running, start nothing new
                            p.cancel()
                    continue
                append_jsonl(path, f.result())
                bar.update(1)
        if error is not None:
            raise error


def _judge_config(args):
    if not args.judge_url:
        return None
    from judges.client import JudgeConfig

    return JudgeConfig(base_url=args.judge_url, model=args.judge_model or "default",
                       api_key_env=args.judge_key_env or None, concurrency=max(1, args.workers),
                       cache_dir=args.cache_dir, max_retries=max(0, args.judge_retries),
                       timeout_s=args.judge_timeout)


def run(args) -> int:
    from judges.server import LOG_NAME, ServerConfig, judge_session
    from trainers.feedback.labelling import (format_accuracy_table, label_accuracy, label_one, pair_rows,
                                             summarize, validate_samples)
    from trainers.feedback.redteam import load_hh_pairs

    samples = read_jsonl(args.samples)
    if not samples:
        raise UserError(f"{args.samples} has no samples")
    validate_samples(samples, where=str(args.samples))
    if args.workers < 1:
        raise UserError("--workers must be >= 1")
    hh_file = None
    if args.data_dir and not args.no_accuracy:
        hh_file = Path(args.data_dir) / "redteam" / "hh_harmless_test.jsonl"
        if not hh_file.exists():
            raise UserError(f"--data-dir has no redteam/hh_harmless_test.jsonl: {args.data_dir}")
    out = Path(args.out)
    labels_path = out / "labels.jsonl"
    by_id = {str(s["id"]): s for s in samples}
    done = _check_existing(labels_path, by_id, args.mode)
    verifiable = {c.strip().lower() for c in args.verifiable.split(",") if c.strip()}
    kw = {"verifiable": verifiable, "redteam": args.redteam}
    todo = [s for s in samples if str(s["id"]) not in done]

    t0 = time.perf_counter()
    server = ServerConfig(concurrency=max(1, args.workers), cache_dir=args.cache_dir,
                          log_path=str(out / LOG_NAME))
    with judge_session(_judge_config(args), server) as judge:
        t_ready = time.perf_counter()
        _label_all(todo, judge, args.mode, kw, labels_path, args.workers)
        t_labelled = time.perf_counter()
        rows = {str(r["id"]): r for r in read_jsonl(labels_path)} if labels_path.exists() else {}
        labels = [rows[str(s["id"])] for s in samples if str(s["id"]) in rows]
        write_jsonl(labels_path, labels)  # finished: same order as --samples (appends came as completed)
        label_stats = _stats_snapshot(judge)

        table, by_mode = None, {}
        if not args.no_accuracy:
            table, by_mode = _accuracy(samples, labels, judge, args, verifiable, hh_file, label_one, label_accuracy,
                              load_hh_pairs)
        t_end = time.perf_counter()

    write_jsonl(out / "pairs.jsonl", pair_rows(labels))
    summary = summarize(labels) | {
        "mode": args.mode, "redteam": args.redteam, "samples": str(args.samples),
        "judge": {"url": judge.url, "model": judge.config.model,
                  "embedded": args.judge_url is None, "startup_s": judge.startup_s, "server_log": judge.server_log},
        "skipped_already_labelled": len(done),
        "labelling": label_stats | {"wall_s": t_labelled - t_ready, "prompts": len(todo),
                                    "judgements_per_s": label_stats["requests"] / max(t_labelled - t_ready, 1e-9)},
        "judge_totals": _stats_snapshot(judge),
        "wall_s": t_end - t0,
    }
    if by_mode.get("basic") and args.mode != "basic":
        # Position bias is only measurable on pairwise calls; hybrid may make few of its own.
        summary["accuracy_basic_labels"] = {k: v for k, v in summarize(by_mode["basic"]).items()
                                            if k in ("prompts", "pairwise_judgements", "invalid_pairwise", "position_bias")}
    write_json(out / "summary.json", summary)
    if table is not None:
        write_json(out / "label_accuracy.json", table)
        print(format_accuracy_table(table) if table else "label accuracy: no prompts with ground truth")
    pb = summary["position_bias"]["first_slot_win_share"]
    print(f"labelled {len(labels)} prompts ({len(todo)} new), {summary['pairs']} pairs, "
          f"{summary['invalid_judgements']} invalid judgements, position bias "
          f"{'n/a' if pb is None else f'{pb:.2f}'} -> {out}")
    return 0


def _stats_snapshot(judge) -> dict:
    from dataclasses import asdict

    d = asdict(judge.stats)
    d.pop("extra", None)
    return d


def _accuracy(samples, labels, judge, args, verifiable, hh_file, label_one, label_accuracy, load_hh_pairs):
    """Both modes' labels on every prompt with ground truth, then the table."""
    from trainers.feedback.labelling import ground_truth_pairs

    other = "basic" if args.mode == "hybrid" else "hybrid"
    gt_rows = [r for r in labels if ground_truth_pairs(r)]
    by_mode = {args.mode: list(gt_rows), other: []}
    for r in gt_rows:
        s = next(x for x in samples if str(x["id"]) == str(r["id"]))
        # Hybrid's verified pairs need no judge; basic re-uses cached calls on reruns.
        by_mode[other].append(label_one(s, judge, other, verifiable, judge_correct=False))
    if hh_file is not None:
        def both(item):
            s = {"id": item["id"], "prompt": item["prompt"], "category": "harmlessness",
                 "responses": [item["chosen"], item["rejected"]], "std_answer": None, "gt_pairs": [[0, 1]]}
            tag = {"category": "harmlessness (hh-rlhf)"}
            # Hybrid on harmlessness = basic judging + red-team flags (rewrites do not touch the pair);
            # its pairwise calls are the basic ones, served from the cache.
            return (label_one(s, judge, "basic") | tag,
                    label_one(s, judge, "hybrid", verifiable, redteam=True, rewrite=False) | tag)

        with ThreadPoolExecutor(max_workers=max(1, args.workers)) as ex:
            for b, h in ex.map(both, load_hh_pairs(hh_file, args.hh_limit)):
                by_mode["basic"].append(b)
                by_mode["hybrid"].append(h)
    return label_accuracy(by_mode), by_mode
