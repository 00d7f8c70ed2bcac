"""Generate, extract the answer, compare (GSM8K): greedy generation through the official lm-eval
task, whose filters extract the answer. The spec's `generate_extract:` section names the filters (the
primary one gives `score`, each other one `score_<name>`) and where the reference answer sits (`target`)."""
from __future__ import annotations

from hrlaif.core import stats
from hrlaif.evalsets import scoring
from hrlaif.evalsets.lmeval_run import gen_len, simple_evaluate, use_chat
from hrlaif.evalsets.lmeval_tasks import task_configs


def short(filter_name: str) -> str:
    """'strict-match' -> 'strict', the suffix of its row fields and metric."""
    return filter_name.split("-")[0]


def reference(doc: dict, target) -> str:
    """The reference answer: the text after `after` in `field`, stripped, `remove` characters removed."""
    text = str(doc[target.field])
    if target.after:
        text = text.split(target.after)[-1]
    text = text.strip()
    for ch in target.remove:
        text = text.replace(ch, "")
    return text


def settings(sp, cfg, lm, ctx) -> dict:
    return {"chat": use_chat(cfg, sp, lm), "max_gen_toks": gen_len(cfg, sp)}


def run(data, sp, lm, cfg, ctx) -> list[dict]:
    gl, chat, own = gen_len(cfg, sp), use_chat(cfg, sp, lm), sp.generate_extract
    configs = task_configs(data, sp, {"max_gen_toks": gl} if gl else None, chat=chat)
    samples = simple_evaluate(configs, lm, cfg, sp, chat)
    by_doc: dict[str, dict] = {}
    for items in samples.values():
        for s in items:
            doc = s["doc"]
            row = by_doc.setdefault(doc["doc_id"], {
                "doc_id": doc["doc_id"], "group": doc["group"], "target": reference(doc, own.target),
                "output": s["resps"][0][0], "doc_hash": s.get("doc_hash")})
            extracted = s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"]
            suffix = "" if s["filter"] == own.primary_filter else f"_{short(s['filter'])}"
            row[f"score{suffix}"], row[f"extracted{suffix}"] = float(s[sp.metric]), extracted
    return sorted(by_doc.values(), key=lambda r: r["doc_id"])


def summarize(sp, samples: list[dict]) -> dict:
    out = scoring.mean_summary(sp, samples)
    for f in sp.generate_extract.filters:
        key = f"{sp.metric}_{short(f)}"
        if f == sp.generate_extract.primary_filter:
            out["metrics"][key] = {k: out[k] for k in ("score", "n", "ci95")}
        else:
            out["metrics"][key] = stats.mean_ci([s[f"score_{short(f)}"] for s in samples])
    return out
