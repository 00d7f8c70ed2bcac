"""Generate a response, have a judge decide (satisfaction rate), and with a baseline model,
compare the two responses pairwise (the win ratio, a derived metric of the spec)."""
from __future__ import annotations

from hrlaif.core.store import stable_hash
from hrlaif.evalsets import cache, scoring
from hrlaif.evalsets.lazy_model import LazyModel
from hrlaif.evalsets.lmeval_run import gen_len, generate, use_chat
from hrlaif.evalsets.lmeval_tasks import generation_configs
from hrlaif.evalsets.satisfaction import judge_pairwise, judge_satisfaction


def settings(sp, cfg, lm, ctx) -> dict:
    out = {"chat": use_chat(cfg, sp, lm), "max_gen_toks": gen_len(cfg, sp), "judge": ctx.judge_fingerprint()}
    if cfg.baseline_model:
        out["baseline"] = LazyModel(cfg.baseline_model).identity["weights_sha"]
    return out


def responses(data, sp, lm, cfg) -> dict[str, str]:
    """The model's responses, cached by its weights like any model output: the SFT model's responses
    from its own evaluation serve again as the baseline of the RLAIF and HRLAIF win ratios."""
    k = cache.key(weights=lm.identity["weights_sha"], bench=f"{sp.name}_responses",
                  items=stable_hash(data.docs), gen=gen_len(cfg, sp), chat=use_chat(cfg, sp, lm),
                  engine=lm.engine.cache_fields(generates=True))
    hit = cache.get(k) if cfg.use_cache and lm.engine.world_size == 1 else None
    if hit:
        return hit["responses"]
    gens = generate(generation_configs(data, sp.judge.until, gen_len(cfg, sp)), lm, cfg, sp, use_chat(cfg, sp, lm))
    out = {k: v.strip() for k, v in gens.items()}
    if out and lm.engine.main:
        cache.put(k, {"responses": out})
    return out


def baseline_responses(data, sp, cfg, engine) -> dict[str, str]:
    """The baseline model's responses, on the same engine (device, precision, backend)."""
    base = LazyModel(cfg.baseline_model)
    base.engine = engine
    return responses(data, sp, base, cfg)


def run(data, sp, lm, cfg, ctx) -> list[dict]:
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


def summarize(sp, samples: list[dict]) -> dict:
    out = scoring.mean_summary(sp, samples)
    out["extra"]["invalid"] = scoring.invalid(samples)
    return out
