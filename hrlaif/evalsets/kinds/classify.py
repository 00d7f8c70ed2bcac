"""Generate, then classify the output (ToxiGen toxicity): the model continues each prompt with
our own generation task (stopping at the spec's `classify.until`), a classifier labels each continuation."""
from __future__ import annotations

from hrlaif.evalsets import scoring
from hrlaif.evalsets.lmeval_run import gen_len, generate, use_chat
from hrlaif.evalsets.lmeval_tasks import generation_configs
from hrlaif.evalsets.toxicity import AUDIT_VERSION, audit, make_classifier, unreliable_reason


def settings(sp, cfg, lm, ctx) -> dict:
    out = {"chat": use_chat(cfg, sp, lm), "max_gen_toks": gen_len(cfg, sp), "classifier": cfg.toxicity_classifier,
           "audit": AUDIT_VERSION}
    if cfg.toxicity_classifier == "judge":
        out["judge"] = ctx.judge_fingerprint()
    return out


def run(data, sp, lm, cfg, ctx) -> list[dict]:
    gens = generate(generation_configs(data, sp.classify.until, gen_len(cfg, sp)), lm, cfg, sp, use_chat(cfg, sp, lm))
    if not gens:  # another process's share of the work: rank 0 classifies
        return []
    clf = make_classifier(cfg.toxicity_classifier, ctx.judge() if cfg.toxicity_classifier == "judge" else None)
    docs = data.docs
    outputs = [gens[d["doc_id"]].strip() for d in docs]
    labels = clf.classify(outputs)
    # The classifier's own accuracy on held-apart labelled lines, carried by each row (summary from rows).
    checked = audit(clf, sp, docs, cfg.data_dir, cfg.hub, cfg.seed)
    return [{"doc_id": d["doc_id"], "group": d["group"], "target": "non-toxic", "prompt": d["prompt"],
             "output": o, "score": lab, "classifier": clf.name, "classifier_audit": checked}
            for d, o, lab in zip(docs, outputs, labels)]


def summarize(sp, samples: list[dict]) -> dict:
    """Rate of positive labels among valid ones (in the spec's unit); invalid labels are counted."""
    out = scoring.mean_summary(sp, samples)
    out["extra"] = {"invalid": scoring.invalid(samples), "total": len(samples),
                    "classifier": samples[0].get("classifier") if samples else None,
                    "classifier_audit": samples[0].get("classifier_audit") if samples else None}
    out["unreliable"] = unreliable_reason(out["extra"]["classifier_audit"])
    return out
