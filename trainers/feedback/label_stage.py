"""The label stage: AI-feedback preference labels for samples.jsonl, and the label-accuracy table.

    summary = label_samples(LabelConfig(samples=..., mode="hybrid", out=...), JudgeConfig())

Labels are appended to OUT/labels.jsonl one prompt at a time (fsynced), and a rerun skips ids
already there, so a judge that dies mid-run (after its retries) costs nothing that was
finished; the judge's request cache makes the rerun's repeated calls free. The embedded judge
(JudgeConfig url none) logs to OUT/judge-server.log.

The label-accuracy table compares basic and hybrid labels wherever ground truth exists:
verifiable prompts in the samples (the other mode's labels are computed for them too; hybrid
needs no judge calls for those pairs) and, with data_dir, hh-rlhf harmless chosen/rejected
pairs (redteam/hh_harmless_test.jsonl).
"""
from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

from core.errors import UserError
from core.store import append_jsonl, read_jsonl, write_json, write_jsonl
from judges.config import JudgeConfig
from trainers.configs import LabelConfig

HH_FILE = Path("redteam") / "hh_harmless_test.jsonl"


def label_samples(cfg: LabelConfig, judge_cfg: JudgeConfig | None = None) -> dict:
    """Label cfg.samples into cfg.out (labels.jsonl, pairs.jsonl, summary.json, label_accuracy.json);
    returns the summary."""
    from judges.server import LOG_NAME, session_for
    from trainers.feedback.labelling import format_accuracy_table, pair_rows, summarize, validate_samples

    cfg.validate()
    judge_cfg = judge_cfg or JudgeConfig()
    judge_cfg.validate()
    samples = read_jsonl(cfg.samples)
    if not samples:
        raise UserError(f"{cfg.samples} has no samples")
    validate_samples(samples, where=str(cfg.samples))
    out = Path(cfg.out)
    labels_path = out / "labels.jsonl"
    done = _check_existing(labels_path, {str(s["id"]): s for s in samples}, cfg.mode)
    todo = [s for s in samples if str(s["id"]) not in done]
    redteam = cfg.redteam and cfg.mode == "hybrid"  # basic RLAIF has no red teaming

    t0 = time.perf_counter()
    with session_for(judge_cfg, str(out / LOG_NAME)) as judge:
        t_ready = time.perf_counter()
        _label_all(todo, judge, cfg, redteam, labels_path, judge_cfg.workers)
        t_labelled = time.perf_counter()
        rows = {str(r["id"]): r for r in read_jsonl(labels_path)} if labels_path.exists() else {}
        labels = [rows[str(s["id"])] for s in samples if str(s["id"]) in rows]
        write_jsonl(labels_path, labels)  # finished: the samples' order (appends came as completed)
        label_stats = _stats_snapshot(judge)
        table, by_mode = None, {}
        if cfg.accuracy:
            table, by_mode = _accuracy(samples, labels, judge, cfg, judge_cfg.workers)
        t_end = time.perf_counter()

    write_jsonl(out / "pairs.jsonl", pair_rows(labels))
    summary = summarize(labels) | {
        "mode": cfg.mode, "redteam": redteam, "samples": str(cfg.samples),
        "judge": {"url": judge.url, "model": judge.config.model, "embedded": judge_cfg.url is None,
                  "startup_s": judge.startup_s, "server_log": judge.server_log},
        "skipped_already_labelled": len(done),
        "labelling": label_stats | {"wall_s": t_labelled - t_ready, "prompts": len(todo),
                                    "judgements_per_s": label_stats["requests"] / max(t_labelled - t_ready, 1e-9)},
        "judge_totals": _stats_snapshot(judge),
        "wall_s": t_end - t0,
    }
    if by_mode.get("basic") and cfg.mode != "basic":
        # Position bias is only measurable on pairwise calls; hybrid may make few of its own.
        summary["accuracy_basic_labels"] = {k: v for k, v in summarize(by_mode["basic"]).items()
                                            if k in ("prompts", "pairwise_judgements", "invalid_pairwise",
                                                     "position_bias")}
    write_json(out / "summary.json", summary)
    if table is not None:
        write_json(out / "label_accuracy.json", table)
        print(format_accuracy_table(table) if table else "label accuracy: no prompts with ground truth")
    pb = summary["position_bias"]["first_slot_win_share"]
    print(f"labelled {len(labels)} prompts ({len(todo)} new), {summary['pairs']} pairs, "
          f"{summary['invalid_judgements']} invalid judgements, position bias "
          f"{'n/a' if pb is None else f'{pb:.2f}'} -> {out}")
    return summary


def _check_existing(path: Path, by_id: dict, mode: str) -> dict[str, dict]:
    """Finished labels from an earlier (interrupted) run, validated against the samples."""
    if not path.exists():
        return {}
    done = {}
    for row in read_jsonl(path):
        sid = str(row.get("id"))
        if sid not in by_id:
            raise UserError(f"{path} has id {sid!r} that is not in the samples (labels/samples mismatch)")
        if row.get("mode") != mode:
            raise UserError(f"{path} holds {row.get('mode')!r} labels, not {mode!r}: use another output dir")
        k = len(by_id[sid]["responses"])
        if row.get("responses", [])[:k] != by_id[sid]["responses"]:
            raise UserError(f"{path}: responses of id {sid!r} differ from the samples (labels/samples mismatch)")
        done[sid] = row
    return done


def _label_all(todo: list[dict], judge, cfg: LabelConfig, redteam: bool, path: Path, workers: int) -> None:
    from tqdm import tqdm

    from trainers.feedback.labelling import label_one

    verifiable = set(cfg.verifiable)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex, \
            tqdm(total=len(todo), desc=f"label {cfg.mode}", unit="prompt") as bar:
        pending = {ex.submit(label_one, s, judge, cfg.mode, verifiable, redteam=redteam) for s in todo}
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


def _stats_snapshot(judge) -> dict:
    d = asdict(judge.stats)
    d.pop("extra", None)
    return d


def _accuracy(samples: list[dict], labels: list[dict], judge, cfg: LabelConfig, workers: int):
    """Both modes' labels on every prompt with ground truth, then the table."""
    from trainers.feedback.labelling import ground_truth_pairs, label_accuracy, label_one
    from trainers.feedback.redteam import load_hh_pairs

    verifiable = set(cfg.verifiable)
    other = "basic" if cfg.mode == "hybrid" else "hybrid"
    gt_rows = [r for r in labels if ground_truth_pairs(r)]
    by_mode = {cfg.mode: list(gt_rows), other: []}
    by_id = {str(s["id"]): s for s in samples}
    for r in gt_rows:
        # Hybrid's verified pairs need no judge; basic re-uses cached calls on reruns.
        by_mode[other].append(label_one(by_id[str(r["id"])], judge, other, verifiable, judge_correct=False))
    if cfg.data_dir:
        def both(item):
            s = {"id": item["id"], "prompt": item["prompt"], "category": "harmlessness",
                 "responses": [item["chosen"], item["rejected"]], "std_answer": None, "gt_pairs": [[0, 1]]}
            tag = {"category": "harmlessness (hh-rlhf)"}
            # Hybrid on harmlessness = basic judging + red-team flags (rewrites do not touch the pair);
            # its pairwise calls are the basic ones, served from the cache.
            return (label_one(s, judge, "basic") | tag,
                    label_one(s, judge, "hybrid", verifiable, redteam=True, rewrite=False) | tag)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
            for b, h in ex.map(both, load_hh_pairs(Path(cfg.data_dir) / HH_FILE, cfg.hh_limit)):
                by_mode["basic"].append(b)
                by_mode["hybrid"].append(h)
    return label_accuracy(by_mode), by_mode
