"""Per-benchmark execution: lm-eval for prompting/scoring, plus what lm-eval cannot do
(sandboxed HumanEval execution, ToxiGen continuation classification, judged satisfaction).

Each `run_*` returns per-sample rows: {doc_id, group, target, output, score, ...}.
"""
from __future__ import annotations

import logging

from evalsets import registry
from evalsets.loaders import BenchData
from core.errors import UserError

log = logging.getLogger(__name__)


def _simple_evaluate(configs: list[dict], lm, cfg, sp: dict, chat: bool, predict_only: bool = False):
    import lm_eval

    from evalsets.lmeval_tasks import _task_index
    hflm = lm.hflm(cfg.batch_size)
    # lm-eval logs a lot at INFO; our own progress lines are enough.
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    out = lm_eval.simple_evaluate(
        model=hflm, tasks=configs, num_fewshot=sp.get("num_fewshot") or None,
        batch_size=cfg.batch_size, device="cpu", use_cache=None, limit=None,
        log_samples=True, apply_chat_template=chat, fewshot_as_multiturn=chat,
        predict_only=predict_only, random_seed=cfg.seed, numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed, bootstrap_iters=0,
        task_manager=_task_index(),
    )
    return out["samples"]


def _chat(cfg, sp, lm) -> bool:
    from evalsets.runner import _use_chat
    return _use_chat(cfg, sp, lm)


def _gen_len(cfg, sp):
    from evalsets.runner import _gen_len
    return _gen_len(cfg, sp)


def run_multiple_choice(data: BenchData, lm, cfg, ctx) -> list[dict]:
    from evalsets.lmeval_tasks import task_configs

    sp = registry.spec(data.name)
    samples = _simple_evaluate(task_configs(data), lm, cfg, sp, _chat(cfg, sp, lm))
    rows = []
    for task, items in samples.items():
        for s in sorted(items, key=lambda s: s["doc_id"]):
            lls = [r[0] for r in s["filtered_resps"]]
            choice = max(range(len(lls)), key=lls.__getitem__)
            doc = s["doc"]
            target = doc["answer"] if isinstance(doc["answer"], str) else "ABCD"[doc["answer"]]
            rows.append({"doc_id": doc["doc_id"], "group": doc["group"], "target": target,
                         "output": "ABCD"[choice], "score": float(s["acc"]),
                         "loglikelihoods": [round(x, 4) for x in lls]})
    return sorted(rows, key=lambda r: r["doc_id"])


def run_gsm8k(data: BenchData, lm, cfg, ctx) -> list[dict]:
    from evalsets.lmeval_tasks import task_configs

    sp = registry.spec(data.name)
    gl = _gen_len(cfg, sp)
    samples = _simple_evaluate(task_configs(data, {"max_gen_toks": gl} if gl else None), lm, cfg, sp,
                               _chat(cfg, sp, lm))
    by_doc: dict[str, dict] = {}
    for items in samples.values():
        for s in items:
            doc = s["doc"]
            row = by_doc.setdefault(doc["doc_id"], {
                "doc_id": doc["doc_id"], "group": doc["group"],
                "target": doc["answer"].split("####")[-1].strip().replace(",", ""),
                "output": s["resps"][0][0]})
            extracted = s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"]
            if s["filter"] == "strict-match":
                row["score_strict"], row["extracted_strict"] = float(s["exact_match"]), extracted
            else:
                row["score"], row["extracted"] = float(s["exact_match"]), extracted
    return sorted(by_doc.values(), key=lambda r: r["doc_id"])


def _generate(configs, lm, cfg, sp, chat) -> dict[str, str]:
    """Greedy generations through lm-eval (batched), keyed by doc_id."""
    samples = _simple_evaluate(configs, lm, cfg, sp, chat, predict_only=True)
    return {s["doc"]["doc_id"]: s["resps"][0][0] for items in samples.values() for s in items}


def run_humaneval(data: BenchData, lm, cfg, ctx) -> list[dict]:
    from evalsets.humaneval import score_completions, truncate_at_stop
    from evalsets.lmeval_tasks import task_configs

    sp = registry.spec(data.name)
    gl = _gen_len(cfg, sp)
    chat = _chat(cfg, sp, lm)

    def completion(text: str) -> str:
        # Chat protocol (lm-eval's humaneval_instruct): the answer was prefixed with the
        # signature inside a ```python block, so the function body ends where the block does.
        if chat and "```" in text:
            text = text[:text.find("```")]
        return truncate_at_stop(text)

    completions = []
    if cfg.humaneval_samples == 1:
        configs = task_configs(data, {"max_gen_toks": gl} if gl else None, chat=chat)
        gens = _generate(configs, lm, cfg, sp, chat)
        completions = [{"task_id": d["task_id"], "completion": completion(gens[d["doc_id"]])}
                       for d in data.docs]
    else:
        over = {"max_gen_toks": gl, "do_sample": True, "temperature": cfg.humaneval_temperature}
        configs = task_configs(data, over, chat=chat)
        for c in configs:
            c["repeats"] = cfg.humaneval_samples
        samples = _simple_evaluate(configs, lm, cfg, sp, chat, predict_only=True)
        for items in samples.values():
            for s in items:
                for r in s["resps"][0] if isinstance(s["resps"][0], list) else s["resps"]:
                    completions.append({"task_id": s["doc"]["task_id"], "completion": completion(r)})
    _, rows = score_completions({d["task_id"]: d for d in data.docs}, completions)
    return rows


def score_completions_file(data: BenchData, path: str) -> list[dict]:
    """`--completions FILE`: score human-eval completions produced elsewhere; no model is loaded."""
    from evalsets.humaneval import read_completions, score_completions

    comps = read_completions(path, {d["task_id"]: d for d in data.docs})
    wanted = {c["task_id"] for c in comps}
    problems = {d["task_id"]: d for d in data.docs if d["task_id"] in wanted}
    _, rows = score_completions(problems, comps)
    return rows


def run_toxigen(data: BenchData, lm, cfg, ctx) -> list[dict]:
    from evalsets.lmeval_tasks import toxigen_config
    from evalsets.toxicity import make_classifier

    sp = registry.spec(data.name)
    gens = _generate(toxigen_config(data, _gen_len(cfg, sp)), lm, cfg, sp, _chat(cfg, sp, lm))
    clf = make_classifier(cfg.toxicity_classifier, ctx.judge() if cfg.toxicity_classifier == "judge" else None)
    docs = data.docs
    outputs = [gens[d["doc_id"]].strip() for d in docs]
    labels = clf.classify(outputs)
    return [{"doc_id": d["doc_id"], "group": d["group"], "target": "non-toxic", "prompt": d["prompt"],
             "output": o, "score": lab, "classifier": clf.name} for d, o, lab in zip(docs, outputs, labels)]


def run_satisfaction(data: BenchData, lm, cfg, ctx) -> list[dict]:
    from evalsets.satisfaction import run as run_sat
    return run_sat(data, lm, cfg, ctx)
