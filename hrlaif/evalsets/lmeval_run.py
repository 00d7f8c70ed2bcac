"""Running lm-eval tasks on a model: prompt settings (chat template, generation length) and
`lm_eval.simple_evaluate` with our fixed choices. Every kind that prompts a model goes through here."""
from __future__ import annotations

import contextlib
import logging

from hrlaif.evalsets.lmeval_tasks import spec_dirs, task_index


def use_chat(cfg, sp, lm) -> bool:
    """Prompt through the tokenizer's chat template? --chat-template wins over the spec; only when
    the model has a template."""
    wanted = cfg.chat_template if cfg.chat_template is not None else sp.chat_template
    return wanted and lm.has_chat_template


def gen_len(cfg, sp) -> int | None:
    """Generation length: --max-gen-toks BENCH=N, else the spec's max_gen_toks."""
    return cfg.max_gen_toks.get(sp.name, sp.max_gen_toks)


def simple_evaluate(configs: list[dict], lm, cfg, sp, chat: bool, predict_only: bool = False) -> dict:
    """lm-eval's per-sample records {task: [sample, ...]} for in-memory task configs.

    With several processes every rank scores its share and rank 0 gets all the records; the
    other ranks get {} (their kinds return no rows and the runner writes nothing there)."""
    import lm_eval

    generation = any(c.get("output_type") == "generate_until" for c in configs)
    model = lm.lm_eval_model(cfg.batch_size, generation=generation, seed=cfg.seed)
    # lm-eval logs a lot at INFO; our own progress lines are enough.
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    with _without_env_report():
        out = lm_eval.simple_evaluate(
            model=model, tasks=configs, num_fewshot=sp.num_fewshot or None,
            batch_size=cfg.batch_size, use_cache=None, limit=None,
            log_samples=True, apply_chat_template=chat, fewshot_as_multiturn=chat,
            predict_only=predict_only, random_seed=cfg.seed, numpy_random_seed=cfg.seed,
            torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed, bootstrap_iters=0,
            task_manager=task_index(spec_dirs(sp)),
        )
    return out["samples"] if out is not None else {}


@contextlib.contextmanager
def _without_env_report():
    """lm-eval adds torch's environment report to every result it returns, which runs `pip list` and
    other probes in subprocesses: 0.7 s per call, one call per benchmark and per drift benchmark (over
    20 s of the quickstart). Only the samples are kept here (results.json records versions and host
    itself), so the report is skipped for the call."""
    from lm_eval import evaluator

    real = evaluator.add_env_info
    evaluator.add_env_info = lambda storage: None
    try:
        yield
    finally:
        evaluator.add_env_info = real


def generate(configs: list[dict], lm, cfg, sp, chat: bool) -> dict[str, str]:
    """Greedy generations through lm-eval (batched), keyed by doc_id."""
    samples = simple_evaluate(configs, lm, cfg, sp, chat, predict_only=True)
    return {s["doc"]["doc_id"]: s["resps"][0][0] for items in samples.values() for s in items}
