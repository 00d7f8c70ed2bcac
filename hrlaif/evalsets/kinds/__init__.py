"""Runner kinds: how a benchmark is run and summarized, chosen by its spec's `kind`.

Each kind module has (sp: the benchmark's hrlaif/evalsets/spec.py BenchmarkSpec; a kind's own fields are
in the spec's section named after the kind, e.g. sp.generate_extract)
  run(data, sp, lm, cfg, ctx) -> per-sample rows {doc_id, group, target, output, score, ...}
  summarize(sp, samples) -> the results.json entry, computed from those rows only
  settings(sp, cfg, lm, ctx) -> what besides weights and items changes its outputs (cache key)
and may have score_file(data, sp, path) (score outputs produced elsewhere, no model).
"""
from __future__ import annotations

from hrlaif.core.errors import UserError
from hrlaif.evalsets import scoring
from hrlaif.evalsets.kinds import classify, execute, generate_extract, judge, multiple_choice

KINDS = {"multiple_choice": multiple_choice, "generate_extract": generate_extract, "execute": execute,
         "classify": classify, "judge": judge}


def module(sp):
    try:
        return KINDS[sp.kind]
    except KeyError:  # a spec read by the registry has a registered kind (hrlaif/evalsets/spec.py)
        raise UserError(f"benchmark {sp.name}: unknown kind {sp.kind!r} (known: {', '.join(KINDS)})")


def run(data, sp, lm, cfg, ctx) -> list[dict]:
    return module(sp).run(data, sp, lm, cfg, ctx)


def settings(sp, cfg, lm, ctx) -> dict:
    return module(sp).settings(sp, cfg, lm, ctx)


def generates(sp) -> bool:
    """Does the kind generate text (so a generation backend such as vLLM would serve it)?"""
    return getattr(module(sp), "GENERATES", True)


def summarize(sp, samples: list[dict]) -> dict:
    """The results.json entry of a benchmark or derived metric (registry.metric), from its sample rows only."""
    if sp.aggregate:
        return scoring.AGGREGATES[sp.aggregate](sp, samples)
    return module(sp).summarize(sp, samples)


def check(sp, completions: bool = False) -> None:
    """Fail before any data is read: an unknown kind, or --completions for a kind that cannot score a file."""
    if completions and not hasattr(module(sp), "score_file"):
        able = ", ".join(k for k, m in KINDS.items() if hasattr(m, "score_file"))
        raise UserError(f"completions: a completions file scores {able} benchmarks only, not {sp.name} "
                        f"({sp.kind})")


def score_file(data, sp, path: str) -> list[dict]:
    check(sp, completions=True)
    return module(sp).score_file(data, sp, path)
