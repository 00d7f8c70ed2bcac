"""`hrlaif audit-judge`: can a judge tell two responses apart? Order consistency, first-slot rate,
length bias, agreement with the pairs' truth (chosen > rejected) and repeatability, with 95% CIs
(hrlaif/judges/audit.py), for any judge endpoint (the embedded one by default) on a preference file in
the formats `eval-rm` takes. `--dry-run` gives the requests, tokens and cost first."""
from __future__ import annotations

import argparse

from hrlaif.core import settings
from hrlaif.judges.audit import AuditConfig
from hrlaif.judges.config import JudgeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    settings.add_arguments(p, AuditConfig, required=("pairs",))
    settings.add_arguments(p, JudgeConfig, prefix="judge", group_title="judge (default: the embedded llama.cpp judge)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the requests, prompt/completion tokens and (with --judge-price-per-1k-*) the cost; "
                        "send nothing")


def configs(args) -> tuple[AuditConfig, JudgeConfig]:
    return settings.from_args(AuditConfig, args), settings.from_args(JudgeConfig, args, prefix="judge")


def _messages(prompt: str):
    from hrlaif.judges import prompts as P

    return P.pairwise_messages if prompt == "labelling" else P.eval_pairwise_messages


def dry_run(cfg: AuditConfig, jc: JudgeConfig, items: list[dict]) -> dict:
    """Requests, tokens and cost of the audit (counted as `hrlaif run --dry-run` counts them)."""
    from hrlaif.harness.dryrun import Tokens, cost

    make = _messages(cfg.prompt)
    msgs = [make(it["prompt"], a, b) for it in items for a, b in ((it["chosen"], it["rejected"]),
                                                                    (it["rejected"], it["chosen"]))]
    repeat = min(cfg.repeat, len(msgs))
    tok = Tokens(jc)
    ptoks = sum(tok.prompt(m) for m in msgs)
    ptoks += round(ptoks / max(len(msgs), 1) * repeat)  # the repeated ones: average size
    requests = len(msgs) + repeat
    ctoks = requests * jc.choice_max_tokens
    c = cost(jc, ptoks, ctoks)
    print(f"hrlaif audit-judge --dry-run: nothing is sent to {_who(jc)}")
    print(f"  {len(items)} pairs x 2 orders + {repeat} repeated (cache bypassed) = {requests:,} requests "
          f"(cached ones cost nothing; the repeated ones always cost)")
    print(f"  prompt tokens {ptoks:,}, completion tokens {ctoks:,} at most ({tok.how}); cost "
          + ("not priced (--judge-price-per-1k-prompt-tokens / --judge-price-per-1k-completion-tokens)"
             if c is None else f"{c:,.4f}"))
    return {"requests": requests, "prompt_tokens": ptoks, "completion_tokens": ctoks, "cost": c}


def _who(jc: JudgeConfig) -> str:
    return "the embedded llama.cpp judge" if jc.url is None else f"{jc.identity()['model']} at {jc.identity()['url']}"


def run(args) -> int:
    import time

    from hrlaif.core.judge_audit import audit, format_audit
    from hrlaif.core.store import write_json
    from hrlaif.judges.audit import judge_both_orders, repeatability
    from hrlaif.judges.server import session_for
    from hrlaif.trainers.reward_eval import load_pairs

    cfg, jc = configs(args)
    items = load_pairs(cfg.pairs, cfg.limit)
    if args.dry_run:
        dry_run(cfg, jc, items)
        return 0
    t0 = time.time()
    with session_for(jc) as judge:
        pairs, msgs = judge_both_orders(judge, items, _messages(cfg.prompt))
        rep = repeatability(judge, msgs, n=cfg.repeat)
        usage = judge.usage()
    a = audit(pairs, cfg.prompt, jc.identity(), rep, truth_sources=[f"{cfg.pairs} (chosen > rejected)"],
              prompt=cfg.prompt, usage=usage, wall_s=round(time.time() - t0, 1), pair_records=pairs)
    print(f"judge audit of {_who(jc)} ({cfg.prompt} prompt) on {len(items)} pairs of {cfg.pairs}, "
          f"95% CIs (Wilson):")
    for line in format_audit(a):
        print("  " + line)
    print(f"  {usage['requests']} requests ({usage['cache_hits']} from the cache) in {a['wall_s']:.0f}s")
    if cfg.out:
        write_json(cfg.out, a)
    return 0
