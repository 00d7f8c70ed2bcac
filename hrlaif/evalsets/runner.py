"""Evaluate one model on a list of benchmarks: load data, run, score, write results.

Flow per benchmark: its spec (hrlaif.evalsets.registry) -> load items (local / hub / embedded) ->
apply --limit -> cache lookup (keyed by weights hash) -> on a miss, load the model once and
run the spec's kind (hrlaif.evalsets.kinds) -> per-sample rows -> summary (score, n, CI, breakdown)
computed from those rows only, so `results.json` is always reproducible from
`samples/<bench>.jsonl`. Derived metrics of a spec (the win ratio) are summarized from the
same rows. Nothing here names a benchmark.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import time
from dataclasses import asdict
from pathlib import Path

from hrlaif.core import hardware
from hrlaif.core.layout import EvalDir
from hrlaif.core.store import stable_hash, write_json, write_jsonl
from hrlaif.core.trackers import Trackers
from hrlaif.evalsets import cache, engine, kinds, registry
from hrlaif.evalsets.config import EvalConfig
from hrlaif.evalsets.lazy_model import LazyModel
from hrlaif.evalsets.lmeval_run import use_chat
from hrlaif.evalsets.lmeval_tasks import task_name
from hrlaif.evalsets.loaders import load
from hrlaif.judges.config import JudgeConfig
from hrlaif.judges.prompts import EVAL_VERSION

log = logging.getLogger(__name__)
__all__ = ["EvalConfig", "LazyModel", "evaluate", "evaluate_to_dir", "evaluate_in_process", "versions"]


def versions() -> dict:
    """Versions of the packages that decide the numbers, recorded in results.json and manifests."""
    import importlib.metadata as md
    out = {}
    for pkg in ("hrlaif-harness", "torch", "transformers", "lm_eval"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


class Context:
    """Things shared across benchmarks of one evaluation: the judge session (started lazily)."""

    def __init__(self, cfg: EvalConfig, out_dir: str | Path | None = None, judge: JudgeConfig | None = None):
        self.cfg = cfg
        self.out_dir = out_dir
        self.judge_config = judge or JudgeConfig()  # the evaluation judge; url none: the embedded one
        self._stack = contextlib.ExitStack()
        self._judge = None

    def judge(self):
        if self._judge is None:
            from hrlaif.judges.server import LOG_NAME, session_for
            log_path = str(Path(self.out_dir) / LOG_NAME) if self.out_dir else None
            self._judge = self._stack.enter_context(session_for(self.judge_config, log_path))
        return self._judge

    def judge_fingerprint(self) -> dict:
        # The evaluation prompts' version too: editing a grading prompt re-grades cached outputs.
        return self.judge_config.identity() | {"prompts": EVAL_VERSION}

    def judge_usage(self) -> dict | None:
        """{role: requests, cache hits, tokens ...} of this evaluation's judge (None: never started)."""
        return {"evaluation": self._judge.usage()} if self._judge is not None else None

    def close(self):
        self._stack.close()


def settings_for(sp: registry.BenchmarkSpec, cfg: EvalConfig, lm: LazyModel, ctx: Context) -> dict:
    """Everything besides weights and items that changes a benchmark's outputs (precision and
    device type included: bf16 and fp32 outputs are never mixed up)."""
    return {"spec": registry.cache_fields(sp), "seed": cfg.seed, "batch_independent": True,
            "engine": lm.engine.cache_fields(kinds.generates(sp)), **kinds.settings(sp, cfg, lm, ctx)}


def engine_for(lm: LazyModel, cfg: EvalConfig) -> engine.Engine:
    """The engine of this evaluation. A model handed in (PPO's drift evaluation) stays where it is,
    in its own process: only the precision of its forward passes is chosen."""
    if lm.in_memory:
        device = str(lm.load()[0].device)
        return engine.Engine(device, hardware.resolve_precision(cfg.precision, device))
    return engine.resolve(cfg.device, cfg.precision, cfg.backend)


def evaluate(lm: LazyModel, cfg: EvalConfig, out_dir: str | Path | None = None,
             progress: bool = True, judge: JudgeConfig | None = None, labeller: JudgeConfig | None = None,
             on_samples=None, base_model: str | None | bool = False) -> dict:
    """Run every benchmark of `cfg` on `lm`; write results.json + samples/ when out_dir is set.
    `judge` (the evaluation judge) serves the benchmarks that need one (none: the embedded judge);
    `labeller`, when known, is the judge that labelled the training data (results.json records
    whether the grader is the labeller; `base_model`, the policy's base model spec when known (None =
    the embedded model; False = unknown), whether it is the grader); `on_samples(name, rows)` receives
    each benchmark's per-item rows (PPO's drift files pair checkpoints by item)."""
    specs = {n: registry.spec(n, cfg.spec_dirs) for n in cfg.benchmarks}
    for sp in specs.values():
        kinds.check(sp, completions=bool(cfg.completions))  # before any data is read
    lm.engine = eng = engine_for(lm, cfg)
    # Several processes: no cache reads (another node's cache could disagree and stall the others).
    use_cache = cfg.use_cache and eng.world_size == 1
    ctx = Context(cfg, out_dir, judge)
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    results = {"model": None, "host": hardware.describe(), "created": created,
               "versions": versions(), "config": {k: v for k, v in asdict(cfg).items()}, "benchmarks": {}}
    if cfg.completions:
        results["config"]["completions"] = str(cfg.completions)
    # Scoring a completions file uses every embedded HumanEval task, not the default-run subset.
    datas = {n: load(sp, cfg.data_dir, cfg.hub, cfg.category_mapping(), full=bool(cfg.completions)).limited(cfg.limit)
             for n, sp in specs.items()}
    try:
        for name, sp in specs.items():
            t0 = time.time()
            data = datas[name]
            if cfg.completions:
                samples = kinds.score_file(data, sp, cfg.completions)
                results["model"] = results["model"] or {"name": f"completions:{cfg.completions}", "kind": "completions"}
                cached, judged = False, False
            else:
                ident = lm.identity
                results["model"] = {**ident, **eng.describe()}
                sett = settings_for(sp, cfg, lm, ctx)
                judged = "judge" in sett  # graded by the evaluation judge: recorded below
                k = cache.key(weights=ident["weights_sha"], bench=name,
                              items=stable_hash([data.docs, data.fewshot]), settings=sett)
                hit = cache.get(k) if use_cache else None
                cached = hit is not None
                samples = hit["samples"] if hit else kinds.run(data, sp, lm, cfg, ctx)
                if not eng.main:  # rank 0 gathered this process's share: it summarizes and writes
                    continue
                if not hit:
                    cache.put(k, {"samples": samples})
            summary = kinds.summarize(sp, samples)
            summary.update(source=data.source, seconds=round(time.time() - t0, 2), cached=cached)
            if not cfg.completions:
                # How the model was prompted: chat template or plain completion (and which lm-eval task).
                chat = use_chat(cfg, sp, lm)
                summary["extra"]["chat_template"] = chat
                if task_name(sp, chat):
                    summary["extra"]["lm_eval_task"] = task_name(sp, chat)
            results["benchmarks"][name] = summary
            if on_samples is not None:
                on_samples(name, samples)
            if judged:
                summary["judge"] = ctx.judge_fingerprint()
                results.update(grader_record(ctx.judge_config, labeller, base_model))
            results["judge_usage"] = ctx.judge_usage()
            for dname in sp.derived:
                dsp = registry.metric(dname, cfg.spec_dirs)
                if any(dsp.requires in s for s in samples):
                    d = kinds.summarize(dsp, samples)
                    d.update(source=data.source, seconds=0.0, cached=cached)
                    if judged:
                        d["judge"] = summary["judge"]
                    results["benchmarks"][dname] = d
                    if progress:
                        _print_line(dname, d)
            if progress:
                _print_line(name, summary)
            if out_dir:  # write as we go: a crash in benchmark 4 keeps benchmarks 1-3
                _write(out_dir, results, {name: samples})
    finally:
        ctx.close()
    if cfg.report_to and out_dir and eng.main:  # final results with their n and 95% CI (report_to)
        with Trackers(cfg.report_to, out_dir, Path(out_dir).name, results["config"], "eval") as tr:
            tr.results(results["benchmarks"], "eval")
    return results


def grader_record(grader: JudgeConfig, labeller: JudgeConfig | None, base_model: str | None | bool = False) -> dict:
    """`judges` (the identities: evaluation, labelling, the policy's base model), `grader_is_labeller`
    and `grader_is_base_model` (null when unknown): hrlaif.reports.verdict_trust reads them. The base model
    is recognised by its weights (hrlaif.core.models.source_weights_id; the embedded judge records the hash
    of the GGUF it serves) or, for an endpoint, by serving the base model's name."""
    ident = grader.identity()
    base = None
    if base_model is not False:
        from hrlaif.core.models import source_weights_id

        base = {"model": base_model or "embedded", "weights": source_weights_id(base_model)}
    is_base = None if base is None else bool(
        (ident.get("weights") and ident["weights"] == base["weights"])
        or (grader.url is not None and ident["model"] == base["model"]))
    return {"judges": {"evaluation": ident, "labelling": labeller.identity() if labeller else None,
                       "base_model": base},
            "grader_is_labeller": grader.same_judge(labeller) if labeller else None,
            "grader_is_base_model": is_base}


def _write(out_dir, results, samples_by_bench):
    out = EvalDir(Path(out_dir))
    for name, samples in samples_by_bench.items():
        write_jsonl(out.sample_file(name), samples)
    write_json(out.results, results)


def _print_line(name: str, s: dict) -> None:
    from hrlaif.core.console import fmt_score
    tag = " (cached)" if s.get("cached") else ""
    score = fmt_score(s.get("score"), *(s.get("ci95") or [None, None]), permille=s.get("unit") == "‰")
    print(f"  {name:<12} {s['metric']:<18} {score}  n={s['n']}  [{s['seconds']:.1f}s]{tag}", flush=True)


def evaluate_to_dir(model_spec: str | None, out_dir: str | Path, cfg: EvalConfig | None = None,
                    judge: JudgeConfig | None = None, labeller: JudgeConfig | None = None,
                    base_model: str | None | bool = False, **kw) -> dict:
    cfg = cfg or EvalConfig(**kw)
    return evaluate(LazyModel(model_spec), cfg, out_dir, judge=judge, labeller=labeller, base_model=base_model)


def evaluate_in_process(model, tokenizer, benchmarks: list[str], limit: int | None = None,
                        data_dir: str | None = None, judge: JudgeConfig | None = None, **kw) -> dict:
    """For the PPO drift hook: score an in-memory model; returns {bench: {score, ci95, n, items}},
    items = [{doc_id, score}] (score None for an invalid judge answer): checkpoints pair by item.
    `judge`: the evaluation judge of judged benchmarks (none: the embedded one)."""
    from hrlaif.core.models import model_identity
    was_training = model.training
    model.eval()
    items: dict[str, list[dict]] = {}

    def keep(bench: str, rows: list[dict]) -> None:
        items[bench] = [{"doc_id": r["doc_id"], "score": r.get("score")} for r in rows]

    try:
        lm = LazyModel(model=model, tokenizer=tokenizer, identity=model_identity(model, tokenizer))
        cfg = EvalConfig(benchmarks=list(benchmarks), limit=limit, data_dir=data_dir, **kw)
        with engine.lent_bf16_matmul_weights(model, engine_for(lm, cfg)):
            res = evaluate(lm, cfg, out_dir=None, progress=False, judge=judge, on_samples=keep)
    finally:
        model.train(was_training)
    return {b: {"score": r["score"], "ci95": r["ci95"], "n": r["n"], "items": items.get(b, [])}
            for b, r in res["benchmarks"].items()}
