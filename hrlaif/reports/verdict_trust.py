"""Which judge-graded verdicts a decision may count: one rule for the report's cells, the alarms and
the gate.

A benchmark is judge-graded when its results.json entry names the judge that graded it (`judge`:
satisfaction, the win ratios, ToxiGen with the judge classifier). Its verdicts are not evaluable
when a check in REASONS gives a reason for the evaluation that produced them. Every cell of such a
benchmark says the reason; the gate and the alarms leave it out and say "not evaluable: <reason>",
unless the reason is allowed (`allow_self_graded: true` in the run config, `--allow-self-graded`
on the gate).

Reasons (add one as a (name, check) pair in REASONS; a check takes (results.json dict, eval dir or
None) and returns None or the reason's text, which starts with its name; `allow` takes names):
- "self-graded": the evaluation judge is the labelling judge, or the policy's own base model.
  Decided from what the evaluation recorded (`grader_is_labeller`, `grader_is_base_model`), else
  from the judge identities in results.json `judges`: by weights hash where both carry one (the
  embedded llama.cpp judge: its GGUF's; a base model: its weights'), else by endpoint URL + model.
- "degenerate judge": the evaluation's judge audit (EVAL/judge_audit.json, hrlaif.core.judge_audit)
  finds the judge degenerate (hrlaif.core.judge_audit.DEGENERATE_RULE).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from hrlaif.core.judge_audit import AUDIT_FILE, HARM_AUDIT_FILE, degenerate, pct, read_audit
from hrlaif.core.layout import MODES, VARIANTS, RunLayout, eval_name, label_name
from hrlaif.core.store import read_json

SELF_GRADED = "self-graded"
DEGENERATE = "degenerate judge"
NOT_EVALUABLE = "not evaluable"
RUN_CONFIG = "run_config.json"  # the run's allow_self_graded, written by its report stage


def same_identity(a: dict | None, b: dict | None) -> bool:
    """Two judge identities name the same grader: equal `weights` hashes where both have one, else
    the same endpoint URL and model (the embedded judge is url = model = "embedded")."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    if a.get("weights") and b.get("weights"):
        return a["weights"] == b["weights"]
    keys = ("url", "model")
    return all(a.get(k) is not None for k in keys) and all(a.get(k) == b.get(k) for k in keys)


def judge_is_model(judge: dict | None, model: dict | None) -> bool:
    """The judge serves the base model: the same weights hash, or an endpoint serving its hub id."""
    if not isinstance(judge, dict) or not isinstance(model, dict):
        return False
    if judge.get("weights") and model.get("weights") and judge["weights"] == model["weights"]:
        return True
    return judge.get("url") != "embedded" and bool(model.get("model")) and judge.get("model") == model.get("model")


def self_graded(res: dict, eval_dir: Path | None = None) -> str | None:
    """'self-graded (...)' when the evaluation judge graded a model trained on its own labels, or
    the policy's own base model."""
    judges = res.get("judges") or {}
    ev = judges.get("evaluation")
    labeller = res.get("grader_is_labeller")
    if labeller is None:
        labeller = same_identity(ev, judges.get("labelling"))
    base = res.get("grader_is_base_model")
    if base is None:
        base = judge_is_model(ev, judges.get("base_model"))
    why = [w for w, flag in (("the labelling judge", labeller), ("the policy's base model", base)) if flag]
    return f"{SELF_GRADED} (the evaluation judge is {' and '.join(why)})" if why else None


def degenerate_judge(res: dict, eval_dir: Path | None = None) -> str | None:
    """'degenerate judge (...)' when the evaluation's judge audit finds its judge degenerate, or (an
    evaluation inside a run whose grader is the labeller) the run's labelling judge's audit does."""
    if eval_dir is None:
        return None
    why = degenerate(read_audit(Path(eval_dir) / AUDIT_FILE))
    if why is None and res.get("grader_is_labeller"):
        lab = degenerate(read_audit(RunLayout(Path(eval_dir).parent).label("basic").dir / AUDIT_FILE))
        why = None if lab is None else f"the grader is the labelling judge, whose audit finds: {lab}"
    return f"{DEGENERATE} ({why})" if why else None


REASONS: list[tuple[str, Callable[[dict, Path | None], str | None]]] = [
    (SELF_GRADED, self_graded), (DEGENERATE, degenerate_judge)]


def judge_graded(entry) -> bool:
    return isinstance(entry, dict) and bool(entry.get("judge"))


def reasons(res: dict | None, eval_dir: Path | str | None = None, allow: Iterable[str] = ()) -> list[str]:
    """Why the judge-graded verdicts of one evaluation cannot be counted ([] when they can)."""
    allowed = set(allow)
    if not res:
        return []
    d = Path(eval_dir) if eval_dir is not None else None
    return [why for name, check in REASONS if name not in allowed and (why := check(res, d))]


def _side(side) -> tuple[dict | None, Path | None]:
    if isinstance(side, dict):
        return side, None
    from hrlaif.reports.collect import read_results

    return read_results(Path(side)), Path(side)


def untrusted(*sides, allow: Iterable[str] = ()) -> dict[str, str]:
    """{benchmark: "reason; reason"} for the judge-graded benchmarks of these evaluations (eval dirs
    or results.json dicts; for a paired decision both sides: a reason on either side counts)."""
    out: dict[str, list[str]] = {}
    for side in sides:
        res, d = _side(side)
        why = reasons(res, d, allow)
        for bench, entry in ((res or {}).get("benchmarks") or {}).items():
            if why and judge_graded(entry):
                out.setdefault(bench, [])
                out[bench] += [r for r in why if r not in out[bench]]
    return {b: "; ".join(r) for b, r in out.items()}


def allowed(allow_self_graded: bool) -> tuple[str, ...]:
    return (SELF_GRADED,) if allow_self_graded else ()


def run_allows(run_dir: Path | str) -> tuple[str, ...]:
    """The reasons a run's config allows (`allow_self_graded`), from RUN/run_config.json or the
    config recorded in RUN/run_summary.json."""
    lay = RunLayout(run_dir)
    for p in (lay.root / RUN_CONFIG, lay.run_summary):
        if p.exists():
            data = read_json(p) or {}
            cfg = data.get("config", data) if p == lay.run_summary else data
            return allowed(bool((cfg or {}).get("allow_self_graded")))
    return ()


def run_untrusted(run_dir: Path | str, allow: Iterable[str] | None = None) -> dict[tuple[str, str], str]:
    """{(variant, benchmark): reason} over a run's eval_<variant> dirs (allow None: the run config's)."""
    allow = run_allows(run_dir) if allow is None else tuple(allow)
    out = {}
    for v in VARIANTS:
        d = RunLayout(run_dir).eval(v)
        if d.results.exists():
            out.update({(v, b): why for b, why in untrusted(d.dir, allow=allow).items()})
    return out


def not_evaluable(reason: str) -> str:
    return f"{NOT_EVALUABLE}: {reason}"


def cell_marks(by: dict) -> dict:
    """{key: 'self-graded; ...'}: the reasons' names only, for table cells."""
    return {k: "; ".join(n for n, _ in REASONS if n in why) for k, why in by.items()}


# ---------------------------------------------------------------- the judge audits in a report
AUDIT_DIRS = (*(label_name(m) for m in MODES.values()), *(eval_name(v) for v in VARIANTS))


def _audits(run_dir: Path | str) -> dict[str, dict]:
    out, lay = {}, RunLayout(run_dir)
    for stage in AUDIT_DIRS:
        a = read_audit(lay.stage(stage).dir / AUDIT_FILE)
        if a:
            out[stage] = a
        h = read_audit(lay.stage(stage).dir / HARM_AUDIT_FILE)
        if h:
            out[f"{stage} (harm checks)"] = h
    return out


# What rests on each audited stage's pairwise verdicts (the notice names it).
RESTS_ON = {
    label_name("basic"): "the basic labels, the basic reward model (rm_basic) and its accuracy, RLAIF's policy "
                         "(ppo_rlaif) and so every RLAIF cell, and the basic column of the label-accuracy table",
    label_name("hybrid"): "the hybrid labels' judge pairs (non-verifiable prompts, reasoning among correct answers), "
                          "so the hybrid reward model (rm_hybrid) and HRLAIF in part (verified and red-team pairs "
                          "do not)",
    "eval": "the win ratios (vs SFT, HRLAIF vs RLAIF) and every other cell this judge graded (satisfaction, "
            "ToxiGen when the judge classifies)",
}


def degenerate_notice(run_dir: Path | str) -> str | None:
    """The report's first-lines warning when an audited judge of the run is degenerate: which tables
    rest on its pairwise verdicts."""
    bad = {s: degenerate(a) for s, a in _audits(run_dir).items()}
    bad = {s: why for s, why in bad.items() if why}
    if not bad:
        return None
    parts = [f"the {(_audits(run_dir)[s].get('role') or 'judge')} judge of {s} ({why}): "
             f"{RESTS_ON['eval' if s.startswith('eval') else s]} rest on its pairwise verdicts"
             for s, why in bad.items()]
    return ("Degenerate judge: " + "; ".join(parts) + ". They carry no signal from it: read them as noise, not as "
            "the method's effect. The cells it graded are flagged, and the gate and the alarms leave them out "
            "('not evaluable: degenerate judge'); the Judge audit table gives the figures, Definitions the rule.")


def audit_blocks(run_dir: Path | str) -> list[tuple]:
    """The report's Judge audit section: every judge audit in the run (label_*/ and eval_*/judge_audit.json)."""
    audits = _audits(run_dir)
    if not audits:
        return []
    rows = {}
    for stage, a in audits.items():
        why = degenerate(a)
        rows[f"{stage} · {a.get('role') or '?'}"] = {
            "order consistency": pct(a.get("order_consistency")), "first-slot rate": pct(a.get("first_slot_rate")),
            "length bias": pct(a.get("length_bias"), signed=True),
            "agreement with truth": pct(a.get("agreement")) if a.get("agreement") else "no truth in this run",
            "repeatability": pct(a.get("repeatability")) if a.get("repeatability") else "not measured",
            "flag rate": pct(a.get("flag_rate")),
            "invalid": f"{a.get('invalid_verdicts', 0)} of {2 * a.get('pairs', 0)}",
            "verdict": f"DEGENERATE: {why}" if why else "ok" if a.get("order_consistency") else "n/a (one verdict "
                                                                                             "per response)"}
    t = pd.DataFrame.from_dict(rows, orient="index")
    t.index.name = "Stage · judge"
    truths = sorted({x for a in audits.values() for x in ((a.get("agreement") or {}).get("truth") or [])})
    return [("h2", "Judge audit"), ("table", t, "judge_audit"),
            ("note", "Can each judge tell two responses apart? From the pairs it compared in both orders in this run "
                     "(Definitions: judge audit, and the degenerate rule; 95% Wilson CIs). Truth: "
                     + ("; ".join(truths) if truths else "none in this run (data_dir gives the hh-rlhf pairs)")
                     + ". `hrlaif audit-judge` audits any judge on a preference file before a run.")]
