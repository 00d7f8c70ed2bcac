"""Multiple choice scored by log-likelihood (MMLU, C-Eval, any CSV benchmark with a spec): the
option letter with the highest log-likelihood is the answer. Prompts come from the official
lm-eval task the spec names, or from the spec's own template (evalsets.lmeval_tasks)."""
from __future__ import annotations

import string

from evalsets import scoring
from evalsets.lmeval_run import gen_len, simple_evaluate, use_chat
from evalsets.lmeval_tasks import task_configs

GENERATES = False  # log-likelihoods only: always the HF model with the shared-prefix KV cache


def settings(sp, cfg, lm, ctx) -> dict:
    return {"chat": use_chat(cfg, sp, lm), "max_gen_toks": gen_len(cfg, sp)}


def run(data, sp, lm, cfg, ctx) -> list[dict]:
    chat = use_chat(cfg, sp, lm)
    samples = simple_evaluate(task_configs(data, sp, chat=chat), lm, cfg, sp, chat)
    letters = string.ascii_uppercase
    rows = []
    for items in samples.values():
        for s in sorted(items, key=lambda s: s["doc_id"]):
            lls = [r[0] for r in s["filtered_resps"]]
            choice = max(range(len(lls)), key=lls.__getitem__)
            doc = s["doc"]
            target = doc["answer"] if isinstance(doc["answer"], str) else letters[doc["answer"]]
            rows.append({"doc_id": doc["doc_id"], "group": doc["group"], "target": target,
                         "output": letters[choice], "score": float(s[sp.metric]),
                         "loglikelihoods": [round(x, 4) for x in lls],
                         # lm-eval's hash of the document: an lm-eval run on the same documents pairs with it
                         "doc_hash": s.get("doc_hash")})
    return sorted(rows, key=lambda r: r["doc_id"])


def summarize(sp, samples: list[dict]) -> dict:
    return scoring.mean_summary(sp, samples)
