"""Generate a response, have a judge decide (satisfaction rate), and with a baseline model,
compare the two responses pairwise (the win ratio, a derived metric of the spec)."""
from __future__ import annotations

from evalsets import cache, scoring
from evalsets.lazy_model import LazyModel
from evalsets.lmeval_run import gen_len, generate, use_chat
from evalsets.lmeval_tasks import generation_configs
from evalsets.satisfaction import judge_pairwise, judge_satisfaction
from core.store import stable_hash


def settings(sp: dict, cfg, lm, ctx) -> dict:
    out = {"chat": use_chat(cfg, sp, lm), "max_gen_toks": gen_len(cfg, sp), "judge": ctx.judge_fingerprint()}
    if cfg.baseline_model:
        out["baseline"] = LazyModel(cfg.baseline_model).identity["weights_sha"]
    return out


def responses(data, sp: dict, lm, cfg) -> dict[str, str]:
    gens = generate(generation_configs(data, sp, gen_len(cfg, sp)), lm, cfg, sp, use_chat(cfg, sp, lm))
    return {k: v.strip() for k, v in gens.items()}


def baseline_responses(data, sp: dict, cfg, engine) -> dict[str, str]:
    """Baseline responses, cached by the baseline's weights like any model output; the baseline
    runs on the same engine (device, precision, backend) as the model under evaluation."""
    base = LazyModel(cfg.baseline_model)
    base.engine = engine
    k = cache.key(weights=base.identity["weights_sha"], bench=f"{sp['name']}_responses",
                  items=stable_hash(data.docs), gen=gen_len(cfg, sp), chat=cfg.chat_template,
                  engine=engine.cache_fields(generates=True))
    hit = cache.get(k) if cfg.use_cache else None
    if hit:
        return hit["responses"]
    out = responses(data, sp, base, cfg)
    if out and engine.main:
        cache.put(k, {"responses": out})
    return out


def run(data, sp: dict, lm, cfg, ctx) -> list[dict]:
    docs = data.docs
    gens = responses(data, sp, lm, cfg)
    # Both models generate before any judging: with several processes both are collective steps.
    base = baseline_responses(data, sp, cfg, lm.engine) if cfg.baseline_model else None
    if not gens:  # another process's share of the work: rank 0 judges
        return []
    ours = [gens[d["doc_id"]] for d in docs]
    judge = ctx.judge()
    sat = judge_satisfaction(docs, ours, judge)
    rows = [{"doc_id": d["doc_id"], "group": d["category"], "lang": d.get("lang"), "prompt": d["prompt"],
             "target": d.get("std_answer") or "", "output": r, **s} for d, r, s in zip(docs, ours, sat)]
    if base is not None:
        theirs = [base[d["doc_id"]] for d in docs]
        for row, pw, b in zip(rows, judge_pairwise(docs, ours, theirs, judge), theirs):
            row.update(pw)
            row["baseline_output"] = b
    return rows


def summarize(sp: dict, samples: list[dict]) -> dict:
    out = scoring.mean_summary(sp, samples)
    out["extra"]["invalid"] = scoring.invalid(samples)
    return out
