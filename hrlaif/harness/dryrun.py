"""`hrlaif run [CONFIG] --dry-run`: the stage plan and, for every stage that calls a judge, the
requests and prompt/completion tokens it will send, with the cost when the config prices the
judge. It loads no model, starts no judge and sends no request: it reads the run's prompt and
benchmark files only (so it also validates a config and its data).

Counts are upper bounds, stated as such: a response's tokens are its generation limit (its
length is unknown before the models run); every verifiable response is assumed correct (hybrid
then judges all of their reasoning) and every red-team response harmful (each then costs a
rewrite and a second check). Requests that repeat an earlier stage's exactly (hybrid's pairwise
calls on non-verifiable prompts repeat basic's; later evaluations repeat the classifier audit)
are counted as cache hits, which cost nothing. A choice is one request; with `first_token_first` (the
embedded judge always) a choice whose first-token logprobs name no option is asked again with the full
reply budget, one request more (judge_usage.json counts them; `by_text` choices). Tokens: the judge's own
tokenizer when it is local (`tokenizer` in its section, else the embedded judge's), else an estimate of 4 characters
per token. After a run, RUN/judge_usage.json holds the real counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from hrlaif.core.errors import UserError
from hrlaif.core.layout import PPO_VARIANTS, VARIANTS, eval_name, label_name, ppo_name
from hrlaif.harness.config import RunConfig
from hrlaif.harness.run_judges import hh_audit_items
from hrlaif.harness.stages import instances, training_seeds
from hrlaif.judges import prompts as P
from hrlaif.judges.audit import REPEAT_N
from hrlaif.judges.config import JudgeConfig

ROLES = {"labelling": "judge", "harmlessness": "harm_judge", "evaluation": "eval_judge"}
CHARS_PER_TOKEN = 4


class Tokens:
    """Token counts of chat requests for one judge (see the module docstring)."""

    def __init__(self, jc: JudgeConfig):
        self.tok, self.how = None, f"estimate: {CHARS_PER_TOKEN} characters per token"
        if jc.tokenizer or jc.url is None:
            from transformers import AutoTokenizer

            try:
                if jc.tokenizer:
                    self.tok, self.how = AutoTokenizer.from_pretrained(jc.tokenizer), f"tokenizer {jc.tokenizer}"
                else:
                    self.tok, self.how = embedded_tokenizer(), "the embedded judge's tokenizer"
            except (OSError, ValueError) as e:
                raise UserError(f"cannot load the judge tokenizer {jc.tokenizer or 'of the embedded judge'}: "
                                f"{str(e).splitlines()[0]}")

        self._seen: dict[str, int] = {}

    def prompt(self, messages: list[dict]) -> int:
        key = "\0".join(m["role"] + "\1" + m["content"] for m in messages)
        if key not in self._seen:  # a stage repeats one request shape many times
            self._seen[key] = self._count(messages)
        return self._seen[key]

    def _count(self, messages: list[dict]) -> int:
        if self.tok is None:
            return math.ceil(sum(len(m["content"]) + 8 for m in messages) / CHARS_PER_TOKEN)
        if getattr(self.tok, "chat_template", None):
            ids = self.tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
            return len(ids["input_ids"] if hasattr(ids, "keys") else ids)
        return sum(len(self.tok(m["content"])["input_ids"]) + 4 for m in messages)


def embedded_tokenizer():
    """The embedded GGUF's tokenizer: from its converted copy when there is one, else the GGUF's own."""
    from transformers import AutoTokenizer

    from hrlaif.core.models import embedded_gguf_path
    from hrlaif.core.store import cache_dir, file_hash

    gguf = embedded_gguf_path()
    converted = cache_dir() / "models" / f"{gguf.stem}-{file_hash(gguf, 12)}"
    if (converted / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(str(converted))
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@dataclass
class Calls:
    """One kind of request in one stage: `n` requests, each with `slots` responses of `length` tokens."""
    stage: str
    role: str
    what: str
    messages: list[list[dict]] = field(default_factory=list)  # one per request (placeholders for responses)
    slots: int = 0
    length: int = 0
    completion: int = 0  # completion tokens per request (its max_tokens)
    cached: bool = False


def choice(role_cfg: JudgeConfig) -> int:
    return role_cfg.choice_max_tokens


def plan(cfg: RunConfig) -> list[Calls]:
    """Every judge request the run will send, stage by stage in run order (upper bounds): the
    requests of a per-seed stage (ppo_rlaif, eval_hrlaif, ...) are sent once per training seed."""
    calls = _calls(cfg)
    return [replace(c, stage=i.name) for i in instances(cfg) if i.enabled(cfg) for c in calls if c.stage == i.base]


LABEL_BASIC, LABEL_HYBRID, EVAL_SFT = label_name("basic"), label_name("hybrid"), eval_name("sft")


def _calls(cfg: RunConfig) -> list[Calls]:
    """The judge requests of each stage of one training seed (its single-seed name)."""
    from hrlaif.judges.answers import is_verifiable
    from hrlaif.trainers.data_formats import load_prompts
    from hrlaif.trainers.feedback.redteam import HARMLESS
    from hrlaif.trainers.sampling import stratified

    prompts = load_prompts(cfg.sample.prompts)
    prompts = stratified(prompts, cfg.sample.limit) if cfg.sample.limit else prompts
    k, L = cfg.sample.k, cfg.sample.max_new_tokens
    pairs = k * (k - 1)  # both orders of every pair
    lab, harm = cfg.judge, cfg.harm_judge
    out: list[Calls] = []
    verif = [p for p in prompts if p["category"] in cfg.label.verifiable and is_verifiable(p["category"])]
    other = [p for p in prompts if p not in verif]
    out.append(Calls(LABEL_BASIC, "labelling", f"pairwise, {len(prompts)} prompts x {pairs}",
                     [P.pairwise_messages(p["prompt"], "", "") for p in prompts for _ in range(pairs)], 2, L,
                     choice(lab)))
    hh = hh_audit_items(cfg)
    if hh and cfg.label.accuracy:
        out.append(Calls(LABEL_BASIC, "labelling", f"label audit, {len(hh)} hh-rlhf pairs x 2 orders",
                         [P.pairwise_messages(h["prompt"], h["chosen"], h["rejected"]) for h in hh for _ in (0, 1)],
                         0, 0, choice(lab)))
        out.append(Calls(LABEL_BASIC, "harmlessness", f"label audit, {len(hh)} hh-rlhf pairs x 2 harm checks",
                         [P.harmful_messages(h["prompt"], r) for h in hh for r in (h["chosen"], h["rejected"])],
                         0, 0, choice(harm)))
    out.append(Calls(LABEL_HYBRID, "labelling", f"reasoning, {len(verif)} verifiable prompts x {pairs}",
                     [P.reasoning_messages(p["prompt"], "", "", str(p.get("std_answer"))) for p in verif
                      for _ in range(pairs)], 2, L, choice(lab)))
    out.append(Calls(LABEL_HYBRID, "labelling", f"pairwise, {len(other)} other prompts ({LABEL_BASIC}'s)",
                     [P.pairwise_messages(p["prompt"], "", "") for p in other for _ in range(pairs)], 2, L,
                     choice(lab), cached=True))
    if cfg.label.audit_repeat and prompts:  # the judge audit's repeatability sample: never from the cache
        for stage in (LABEL_BASIC, LABEL_HYBRID):
            out.append(Calls(stage, "labelling", f"judge audit, {cfg.label.audit_repeat} pairwise requests sent again",
                             [P.pairwise_messages(prompts[0]["prompt"], "", "")] * cfg.label.audit_repeat, 2, L,
                             choice(lab)))
    if cfg.label.redteam:
        harmless = [p for p in prompts if p["category"] == HARMLESS]
        out += _redteam_calls(LABEL_HYBRID, harmless, k, L, harm)
        out += _redteam_calls("redteam", _redteam_prompts(cfg, hh), cfg.redteam.k, cfg.redteam.max_new_tokens, harm)
    out += _gold_calls(cfg)
    out += _eval_calls(cfg)
    return out


def _redteam_prompts(cfg: RunConfig, hh: list[dict]) -> list[dict]:
    from hrlaif.trainers.feedback.redteam_stage import harmful_prompts
    return harmful_prompts(replace(cfg.redteam, data_dir=cfg.data_dir), {h["id"] for h in hh})


def _redteam_calls(stage: str, prompts: list[dict], k: int, length: int, harm: JudgeConfig) -> list[Calls]:
    n = f"{len(prompts)} prompts x {k}"
    return [Calls(stage, "harmlessness", f"harm checks, {n}",
                  [P.harmful_messages(p["prompt"], "") for p in prompts for _ in range(k)], 1, length, choice(harm)),
            Calls(stage, "harmlessness", f"rewrites (all flagged), {n}",
                  [P.rewrite_messages(p["prompt"], "") for p in prompts for _ in range(k)], 1, length, harm.max_tokens),
            Calls(stage, "harmlessness", f"re-checks of rewrites, {n}",
                  [P.harmful_messages(p["prompt"], "") for p in prompts for _ in range(k)], 1, harm.max_tokens,
                  choice(harm))]


def _gold_calls(cfg: RunConfig) -> list[Calls]:
    from hrlaif.trainers.data_formats import DATA_DIR, load_prompts

    ppo = cfg.ppo
    path = ppo.heldout_prompts or (DATA_DIR / "heldout_prompts.jsonl")
    if not ppo.drift_every or not ppo.heldout_limit or not Path(path).exists():
        return []
    held = load_prompts(path)[:ppo.heldout_limit]
    checkpoints = 1 + ppo.steps // ppo.drift_every
    out = [Calls(ppo_name(v), "evaluation", f"gold verdicts, {checkpoints} checkpoints x {len(held)} held-out",
                 [P.eval_satisfaction_messages(p["prompt"], "") for _ in range(checkpoints) for p in held], 1,
                 ppo.max_new_tokens, choice(cfg.eval_judge)) for v in PPO_VARIANTS]
    # drift benchmarks that need the judge: every checkpoint grades them (the evaluation's calls per item)
    drift_eval = replace(cfg, eval=replace(cfg.eval, benchmarks=list(ppo.drift_benchmarks), limit=ppo.drift_limit))
    for c in _eval_calls(drift_eval, stages=(EVAL_SFT,)):
        for v in PPO_VARIANTS:
            out.append(replace(c, stage=ppo_name(v), what=f"drift {c.what}, {checkpoints} checkpoints",
                               messages=c.messages * checkpoints))
    return out


def _eval_calls(cfg: RunConfig, stages=tuple(eval_name(v) for v in VARIANTS)) -> list[Calls]:
    from hrlaif.evalsets import registry
    from hrlaif.evalsets.loaders import load
    from hrlaif.evalsets.toxicity import audit_set

    ecfg, ev = cfg.eval, cfg.eval_judge
    out: list[Calls] = []
    for name in ecfg.benchmarks:
        sp = registry.spec(name, ecfg.spec_dirs)
        judged = sp.kind == "judge" or (sp.kind == "classify" and ecfg.toxicity_classifier == "judge")
        if not judged:
            continue
        if ecfg.hub and sp.hub is not None and not cfg.data_dir:  # the dry run downloads nothing
            if not ecfg.limit:
                raise UserError(f"--dry-run cannot count {name}'s items: eval.hub reads them from the hub and "
                                f"eval.limit is not set (set it, or give data_dir)")
            # prompts of the embedded copy stand in for the hub's; the count is the limit
            docs = load(sp, None, False, ecfg.category_mapping()).docs
            docs = [docs[i % len(docs)] for i in range(ecfg.limit)]
        else:
            docs = load(sp, cfg.data_dir, False, ecfg.category_mapping()).limited(ecfg.limit).docs
        length = ecfg.max_gen_toks.get(name) or sp.max_gen_toks or 256
        n = f"{len(docs)} items"
        for stage in stages:
            if sp.kind == "classify":
                out.append(Calls(stage, "evaluation", f"{name} classifier, {n}",
                                 [P.eval_toxicity_messages("") for _ in docs], 1, length, choice(ev)))
                texts, _, _ = audit_set(sp, docs, cfg.data_dir)
                out.append(Calls(stage, "evaluation", f"{name} classifier audit, {len(texts)} labelled sentences",
                                 [P.eval_toxicity_messages(t) for t in texts], 0, 0, choice(ev),
                                 cached=stage != EVAL_SFT))
                continue
            out.append(Calls(stage, "evaluation", f"{name}, {n}",
                             [P.eval_satisfaction_messages(d["prompt"], "", d.get("std_answer")) for d in docs], 1,
                             length, choice(ev)))
            if stage != EVAL_SFT:
                out.append(Calls(stage, "evaluation", f"win ratio vs SFT, {n} x 2 orders",
                                 [P.eval_pairwise_messages(d["prompt"], "", "") for d in docs for _ in (0, 1)], 2,
                                 length, choice(ev)))
            if stage == eval_name("hrlaif"):
                out.append(Calls(stage, "evaluation", f"HRLAIF vs RLAIF, {n} x 2 orders",
                                 [P.eval_pairwise_messages(d["prompt"], "", "") for d in docs for _ in (0, 1)], 2,
                                 length, choice(ev)))
                out.append(Calls(stage, "evaluation", f"judge audit, {min(REPEAT_N, 2 * len(docs))} pairwise requests "
                                 "sent again", [P.eval_pairwise_messages(d["prompt"], "", "") for d in docs
                                                for _ in (0, 1)][:REPEAT_N], 2, length, choice(ev)))
    return out


def count(cfg: RunConfig, calls: list[Calls]) -> list[dict]:
    """Rows {stage, role, what, requests, cached, prompt_tokens, completion_tokens, cost}."""
    counters: dict[str, Tokens] = {}
    rows = []
    for c in calls:
        jc = getattr(cfg, ROLES[c.role])
        key = str(jc.identity()) + str(jc.tokenizer)
        if key not in counters:
            counters[key] = Tokens(jc)
        tok = counters[key]
        n = len(c.messages)
        ptoks = 0 if c.cached else sum(tok.prompt(m) for m in c.messages) + n * c.slots * c.length
        ctoks = 0 if c.cached else n * c.completion
        rows.append({"stage": c.stage, "role": c.role, "what": c.what, "requests": n, "cached": n if c.cached else 0,
                     "prompt_tokens": ptoks, "completion_tokens": ctoks, "cost": cost(jc, ptoks, ctoks),
                     "tokens_by": tok.how})
    return rows


def cost(jc: JudgeConfig, prompt_tokens: int, completion_tokens: int) -> float | None:
    if jc.price_per_1k_prompt_tokens is None and jc.price_per_1k_completion_tokens is None:
        return None
    return (prompt_tokens / 1000 * (jc.price_per_1k_prompt_tokens or 0.0)
            + completion_tokens / 1000 * (jc.price_per_1k_completion_tokens or 0.0))


def _judge_line(cfg: RunConfig, role: str) -> str:
    jc = getattr(cfg, ROLES[role])
    ident = "the embedded llama.cpp judge" if jc.url is None else f"{jc.identity()['model']} at {jc.identity()['url']}"
    if role != "labelling" and jc.same_judge(cfg.judge):
        ident += " (the labelling judge's model" + (": the grader is the labeller, so its verdicts are self-graded "
                                                   "and the alarms and gate leave them out unless allow_self_graded)"
                                                   if role == "evaluation" and not cfg.allow_self_graded else
                                                   ": the grader is the labeller)" if role == "evaluation" else ")")
    return f"  {role:<13} {ident}"


def _fmt_cost(v: float | None) -> str:
    return "not priced" if v is None else f"{v:,.4f}"


def dry_run(cfg: RunConfig, source: str) -> dict:
    """Print the plan and the judge bill (module docstring); returns {rows, totals}."""
    rows = count(cfg, plan(cfg))  # in stage order
    seeds = training_seeds(cfg)
    print(f"hrlaif run --dry-run ({source}): nothing is loaded, trained, or sent to a judge")
    print("stages" + (f" ({len(seeds)} training seeds {', '.join(map(str, seeds))}: a reward model, PPO and "
                      "evaluation per seed and variant)" if len(seeds) > 1 else "") + ":")
    for n, inst in enumerate(instances(cfg), 1):
        what = inst.stage.plan + (f" (seed {inst.seed})" if len(seeds) > 1 and inst.stage.per == "seed" else "")
        print(f"  {n:2d} {inst.name:<15} {what if inst.enabled(cfg) else '(off in this config)'}")
    print("judges:")
    for role in ROLES:
        print(_judge_line(cfg, role))
    hows: dict[str, list[str]] = {}
    for r in rows:
        if r["role"] not in hows.setdefault(r["tokens_by"], []):
            hows[r["tokens_by"]].append(r["role"])
    print("judge requests (upper bounds: responses counted at their length limit; a choice that its first token's "
          "logprobs do not decide costs one more request where first_token_first is on; tokens by "
          + "; ".join(f"{how} ({', '.join(roles)})" for how, roles in hows.items()) + "):")
    head = (f"  {'stage':<15} {'judge':<13} {'requests':>9} {'cached':>7} {'prompt tok':>12} {'compl. tok':>11} "
            f"{'cost':>11}  what")
    print(head)
    totals: dict[str, dict] = {}
    for r in rows:
        print(f"  {r['stage']:<15} {r['role']:<13} {r['requests']:>9,} {r['cached']:>7,} {r['prompt_tokens']:>12,} "
              f"{r['completion_tokens']:>11,} {_fmt_cost(r['cost']):>11}  {r['what']}")
        t = totals.setdefault(r["role"], {"requests": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                          "cost": None})
        for k in ("requests", "cached", "prompt_tokens", "completion_tokens"):
            t[k] += r[k]
        if r["cost"] is not None:
            t["cost"] = (t["cost"] or 0.0) + r["cost"]
    for role, t in totals.items():
        print(f"  {'total':<15} {role:<13} {t['requests']:>9,} {t['cached']:>7,} {t['prompt_tokens']:>12,} "
              f"{t['completion_tokens']:>11,} {_fmt_cost(t['cost']):>11}")
    print("after a run, RUN/judge_usage.json (and the report) give the real counts")
    return {"rows": rows, "totals": totals}
