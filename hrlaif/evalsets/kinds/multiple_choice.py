"""Multiple choice scored by log-likelihood (MMLU, C-Eval, any CSV benchmark with a spec): the
option letter with the highest log-likelihood (per character with `metric: acc_norm`) is the answer.
Prompts come from the official lm-eval task the spec names, or from the spec's own template
(hrlaif.evalsets.lmeval_tasks)."""
from __future__ import annotations

import string

from hrlaif.evalsets import scoring
from hrlaif.evalsets.lmeval_run import gen_len, simple_evaluate, use_chat
from hrlaif.evalsets.lmeval_tasks import task_configs

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
            choice = _choice(lls, s, sp.metric)
            doc = s["doc"]
            target = doc["answer"] if isinstance(doc["answer"], str) else letters[doc["answer"]]
            rows.append({"doc_id": doc["doc_id"], "group": doc["group"], "target": target,
                         "output": letters[choice], "score": float(s[sp.metric]),
                         "loglikelihoods": [round(x, 4) for x in lls],
                         # lm-eval's hash of the document: an lm-eval run on the same documents pairs with it
                         "doc_hash": s.get("doc_hash")})
    return sorted(rows, key=lambda r: r["doc_id"])


def _choice(lls: list[float], sample: dict, metric: str) -> int:
    """The option the metric picks: the highest log-likelihood (acc), or per character of the option's
    text (acc_norm, lm-eval's length normalisation: cloze forms, where options differ in length)."""
    if metric == "acc_norm":  # lm-eval divides by the option's text, without the " " that joins it to the prompt
        lens = [max(1, len(args[1][1:] if args[1].startswith(" ") else args[1])) for args in sample["arguments"]]
        return max(range(len(lls)), key=lambda i: lls[i] / lens[i])
    return max(range(len(lls)), key=lls.__getitem__)


def summarize(sp, samples: list[dict]) -> dict:
    return scoring.mean_summary(sp, samples)
