"""The label stage: AI-feedback preference labels for samples.jsonl, and the label-accuracy table.

    summary = label_samples(LabelConfig(samples=..., mode="hybrid", out=...), JudgeConfig())

Labels are appended to OUT/labels.jsonl one prompt at a time (fsynced), and a rerun skips ids
already there, so a judge that dies mid-run (after its retries) costs nothing that was
finished; the judge's request cache makes the rerun's repeated calls free. The embedded judge
(JudgeConfig url none) logs to OUT/judge-server.log.

The label-accuracy table compares basic and hybrid labels wherever independent truth exists
(hrlaif/trainers/feedback/accuracy.py): verifiable prompts in the samples, judged by the second answer
check (the other mode's labels are computed for them too; hybrid needs no judge calls for those
pairs), human preferences from `hrlaif annotate import` (cfg.human_pairs) and, with data_dir,
hh-rlhf harmless chosen/rejected pairs (redteam/hh_harmless_test.jsonl).

Red teaming (hybrid) flags and rewrites with the harmlessness judge (`harm_judge_cfg`; default
the labelling judge, whose session is shared when both name the same endpoint and model).
"""
from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from hrlaif.core.errors import UserError
from hrlaif.core.judge_audit import AUDIT_FILE, HARM_AUDIT_FILE, format_audit
from hrlaif.core.layout import LabelDir
from hrlaif.core.store import append_jsonl, read_jsonl, write_json, write_jsonl
from hrlaif.judges.config import JudgeConfig
from hrlaif.trainers.configs import LabelConfig
from hrlaif.trainers.feedback.accuracy import DISAGREEMENTS, TRUTH_HH

HH_FILE = Path("redteam") / "hh_harmless_test.jsonl"


def label_samples(cfg: LabelConfig, judge_cfg: JudgeConfig | None = None,
                  harm_judge_cfg: JudgeConfig | None = None) -> dict:
    """Label cfg.samples into cfg.out (labels.jsonl, pairs.jsonl, summary.json, label_accuracy.json);
    returns the summary."""
    import contextlib

    from hrlaif.judges.server import LOG_NAME, session_for
    from hrlaif.trainers.feedback.accuracy import format_accuracy_table, load_human_pairs
    from hrlaif.trainers.feedback.judge_audit import harmlessness_audit, labelling_audit
    from hrlaif.trainers.feedback.labelling import pair_rows, summarize, validate_samples

    judge_cfg = judge_cfg or JudgeConfig()
    samples = read_jsonl(cfg.samples)
    if not samples:
        raise UserError(f"{cfg.samples} has no samples")
    validate_samples(samples, where=str(cfg.samples))
    # Human truth is checked before any judge call: a sheet from another run fails at once.
    human = load_human_pairs(cfg.human_pairs, {str(s["id"]): s for s in samples}) if cfg.human_pairs else {}
    out = Path(cfg.out)
    labels_path = out / "labels.jsonl"
    done = _check_existing(labels_path, {str(s["id"]): s for s in samples}, cfg.mode)
    todo = [s for s in samples if str(s["id"]) not in done]
    redteam = cfg.redteam and cfg.mode == "hybrid"  # basic RLAIF has no red teaming

    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        judge = stack.enter_context(session_for(judge_cfg, str(out / LOG_NAME)))
        harm = judge
        if redteam and harm_judge_cfg is not None and not harm_judge_cfg.same_judge(judge_cfg):
            harm = stack.enter_context(session_for(harm_judge_cfg, str(out / ("harm-" + LOG_NAME))))
        t_ready = time.perf_counter()
        # The session's own concurrency: the embedded server takes one request at a time, and one
        # prompt at a time keeps its pairs' shared prefix (request + first response) in its KV cache.
        _label_all(todo, (judge, harm), cfg, redteam, labels_path, judge.config.workers)
        t_labelled = time.perf_counter()
        rows = {str(r["id"]): r for r in read_jsonl(labels_path)} if labels_path.exists() else {}
        labels = [rows[str(s["id"])] for s in samples if str(s["id"]) in rows]
        write_jsonl(labels_path, labels)  # finished: the samples' order (appends came as completed)
        label_stats = judge.usage()
        table, by_mode = None, {}
        if cfg.accuracy:
            table, by_mode = _accuracy(samples, labels, (judge, harm), cfg, human)
        # The judge audit (hrlaif/judges/audit.py): order consistency, position and length bias, agreement
        # with truth (basic labels only), repeatability; after `label_stats`, so its requests are its own.
        audit = labelling_audit(labels, by_mode.get("basic") or [], judge, cfg.mode, cfg.audit_repeat)
        harm_audit = harmlessness_audit([r for r in by_mode.get("hybrid") or [] if r.get("truth") == TRUTH_HH],
                                        harm, cfg.audit_repeat) if redteam else None
        t_end = time.perf_counter()
        usage = {"labelling": judge.usage()} | ({"harmlessness": harm.usage()} if harm is not judge else {})

    write_jsonl(out / "pairs.jsonl", pair_rows(labels))
    summary = summarize(labels) | {
        "mode": cfg.mode, "redteam": redteam, "samples": str(cfg.samples),
        "judge": {"url": judge.url, "model": judge.config.model, "embedded": judge_cfg.url is None,
                  "startup_s": judge.startup_s, "server_log": judge.server_log},
        "skipped_already_labelled": len(done),
        "labelling": label_stats | {"wall_s": t_labelled - t_ready, "prompts": len(todo),
                                    "judgements_per_s": label_stats["requests"] / max(t_labelled - t_ready, 1e-9)},
        # what the judge(s) did in this stage: requests, cache hits, tokens (the report states them)
        "judge_usage": usage,
        "wall_s": t_end - t0,
    }
    if by_mode.get("basic") and cfg.mode != "basic":
        # Position bias is only measurable on pairwise calls; hybrid may make few of its own.
        summary["accuracy_basic_labels"] = {k: v for k, v in summarize(by_mode["basic"]).items()
                                            if k in ("prompts", "pairwise_judgements", "invalid_pairwise",
                                                     "position_bias")}
    write_json(out / "summary.json", summary)
    write_json(out / AUDIT_FILE, audit)
    if harm_audit is not None:  # the harmlessness judge (hybrid labelling's red teaming)
        write_json(out / HARM_AUDIT_FILE, harm_audit)
    print("labelling judge audit (95% CIs): " + "; ".join(format_audit(audit)[:3]) + "; "
          + format_audit(audit)[-1])
    if table is not None:
        write_json(LabelDir(out).accuracy, table)
        has_truth = any(k != DISAGREEMENTS for k in table)
        print(format_accuracy_table(table) if has_truth else "label accuracy: no prompts with ground truth")
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


def _label_all(todo: list[dict], judges: tuple, cfg: LabelConfig, redteam: bool, path: Path, workers: int) -> None:
    from tqdm import tqdm

    from hrlaif.trainers.feedback.labelling import label_one

    verifiable = set(cfg.verifiable)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex, \
            tqdm(total=len(todo), desc=f"label {cfg.mode}", unit="prompt") as bar:
        pending = {ex.submit(label_one, s, judges[0], cfg.mode, verifiable, redteam=redteam, harm_judge=judges[1])
                   for s in todo}
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


def _accuracy(samples: list[dict], labels: list[dict], judges: tuple, cfg: LabelConfig, human: dict):
    """Both modes' labels on every prompt with independent truth, then the table (accuracy.py)."""
    from hrlaif.trainers.feedback.accuracy import check_all, check_disagreements, ground_truth_pairs, label_accuracy
    from hrlaif.trainers.feedback.labelling import label_one
    from hrlaif.trainers.feedback.redteam import load_hh_pairs

    judge, harm = judges
    check_all(samples)
    verifiable = set(cfg.verifiable)
    other = "basic" if cfg.mode == "hybrid" else "hybrid"
    by_id = {str(s["id"]): s for s in samples}
    ours = {str(r["id"]): r for r in labels}
    need = [sid for sid in ours if ground_truth_pairs(ours[sid]) or sid in human]
    # Hybrid's verified pairs need no judge; basic re-uses cached calls on reruns.
    theirs = {sid: label_one(by_id[sid], judge, other, verifiable, judge_correct=False, harm_judge=harm,
                             redteam=other == "hybrid" and cfg.redteam, rewrite=False) for sid in need}
    by_mode: dict[str, list[dict]] = {cfg.mode: [], other: []}
    for sid in need:
        for mode, row in ((cfg.mode, ours[sid]), (other, theirs[sid])):
            if ground_truth_pairs(row):
                by_mode[mode].append(row)
            if sid in human:  # the same labels, scored against the human sheet
                by_mode[mode].append(row | {"gt_pairs": human[sid], "truth": None,
                                            "category": f"{row['category']} (human)"})
    if cfg.data_dir:
        def both(item):
            s = {"id": item["id"], "prompt": item["prompt"], "category": "harmlessness",
                 "responses": [item["chosen"], item["rejected"]], "std_answer": None, "gt_pairs": [[0, 1]]}
            tag = {"category": "harmlessness (hh-rlhf)", "truth": TRUTH_HH}
            # Hybrid on harmlessness = basic judging + red-team flags (rewrites do not touch the pair);
            # its pairwise calls are the basic ones, served from the cache.
            return (label_one(s, judge, "basic") | tag,
                    label_one(s, judge, "hybrid", verifiable, redteam=True, rewrite=False, harm_judge=harm) | tag)

        with ThreadPoolExecutor(max_workers=max(1, judge.config.workers)) as ex:
            for b, h in ex.map(both, load_hh_pairs(Path(cfg.data_dir) / HH_FILE, cfg.hh_limit)):
                by_mode["basic"].append(b)
                by_mode["hybrid"].append(h)
    table = label_accuracy(by_mode)
    table[DISAGREEMENTS] = check_disagreements(samples)
    return table, by_mode
