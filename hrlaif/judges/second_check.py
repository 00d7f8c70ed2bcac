"""A second answer check, independent of the hybrid labeller's (hrlaif/judges/answers.py).

Table 1 (label accuracy) must not score hybrid labels against the very check that made them,
so its truth for verifiable prompts comes from here: lm-eval's own extraction filters, read
from the installed lm-eval task files and run through lm-eval's own filter classes.
- math: the GSM8K task's filters. `flexible-extract` (the last number-like span) decides;
  `strict-match` (`#### <number>`) is recorded beside it. Both compare as lm-eval's
  exact_match does: the task's `regexes_to_ignore` (commas, `$`, everything up to `#### `, a
  final `.`) removed from both sides, then string equality (so `72.0` is not `72`, where the
  labeller's numeric check says equal: such cases show up as disagreements).
- multiple choice: the MMLU-Pro task's `custom-extract` filter (`answer is (X)`, first match)
  decides when it finds a letter; otherwise the MMLU flan-CoT zero-shot task's
  `flexible-extract` filter (multi_choice_regex: the last `(X)`, else an option's text, else
  `: X`). Both are lm-eval's code, not the labeller's "answer is X / leading letter / unique
  (X) / option text" extractor.
`check(...)` returns `hrlaif.judges.answers.Verdict`: correct True/False, or None where the prompt is
not verifiable (not a verifiable category, or a standard answer that cannot be read).
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

from hrlaif.judges.answers import Verdict, canonical_category, parse_options, standard_letter

GSM8K_TASK = ("gsm8k", "gsm8k.yaml")
MC_TASK = ("mmlu", "flan_cot_zeroshot", "_mmlu_flan_cot_zeroshot_template_yaml")
MC_PRO_TASK = ("mmlu_pro", "_default_template_yaml")
NAME = "lm-eval filters (GSM8K flexible-extract; MMLU-Pro custom-extract, then MMLU flan-CoT multi_choice_regex)"


@functools.lru_cache(maxsize=None)
def _task_yaml(*parts: str) -> dict:
    import lm_eval
    import yaml

    class _Loader(yaml.SafeLoader):  # task files name Python hooks (`!function utils.x`); only filters are read
        pass

    _Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    path = Path(lm_eval.__file__).parent / "tasks" / Path(*parts)
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)


def _filter_args(task: dict, name: str) -> dict:
    steps = next(f["filter"] for f in task["filter_list"] if f["name"] == name)
    return {k: v for k, v in steps[0].items() if k != "function"}


@functools.lru_cache(maxsize=None)
def _gsm8k():
    from lm_eval.filters.extraction import RegexFilter

    task = _task_yaml(*GSM8K_TASK)
    ignore = task["metric_list"][0].get("regexes_to_ignore") or []
    return (RegexFilter(**_filter_args(task, "flexible-extract")), RegexFilter(**_filter_args(task, "strict-match")),
            ignore, bool(task["metric_list"][0].get("ignore_case")))


@functools.lru_cache(maxsize=None)
def _mc_pro_filter():
    from lm_eval.filters.extraction import RegexFilter

    return RegexFilter(**_filter_args(_task_yaml(*MC_PRO_TASK), "custom-extract"))


@functools.lru_cache(maxsize=None)
def _mc_filter():
    from lm_eval.filters.extraction import MultiChoiceRegexFilter

    return MultiChoiceRegexFilter(**_filter_args(_task_yaml(*MC_TASK), "flexible-extract"))


def _normalise(text: str, ignore: list[str], lower: bool) -> str:
    for pattern in ignore:
        text = re.sub(pattern, "", text)
    return text.lower() if lower else text


def check_math(response: str, std_answer: str) -> Verdict:
    flexible, strict, ignore, lower = _gsm8k()
    std = _normalise(str(std_answer).strip(), ignore, lower).strip()
    if not std:
        return Verdict(None, None, None, "no standard answer")
    got = flexible.apply([[response or ""]], [{}])[0][0]
    if got == flexible.fallback:
        return Verdict(False, None, std, "no number in response (flexible-extract)")
    ok = _normalise(got, ignore, lower) == std
    strict_got = strict.apply([[response or ""]], [{}])[0][0]
    strict_ok = strict_got != strict.fallback and _normalise(strict_got, ignore, lower) == std
    return Verdict(ok, got, std, ("match" if ok else "mismatch") + f"; strict-match {'yes' if strict_ok else 'no'}")


def _choice_head(response: str, std_answer: str, prompt: str | None):
    """The custom-extract step: a Verdict, or (std, letters, doc) when the flan-CoT filter must decide."""
    options = parse_options(prompt)
    std = standard_letter(str(std_answer), options)
    if std is None or not options:
        return Verdict(None, None, None, "standard answer or options cannot be read")
    pro = _mc_pro_filter()
    said = pro.apply([[response or ""]], [{}])[0][0]
    if said != pro.fallback and said in options:
        return Verdict(said == std, said, std, ("match" if said == std else "mismatch") + " (custom-extract)")
    letters = sorted(options)
    return std, letters, {"choices": [options[k] for k in letters]}


def _choice_tail(got: str, fallback: str, std: str, letters: list[str]) -> Verdict:
    m = re.fullmatch(r"\(?([A-Z])\)?", got.strip()) if got != fallback else None
    if m is None:
        return Verdict(False, None, std, "no option in response (multi_choice_regex)")
    # The filter letters the options A, B, ... in prompt order; map back to the prompt's letters.
    idx = ord(m.group(1)) - ord("A")
    letter = letters[idx] if 0 <= idx < len(letters) else m.group(1)
    return Verdict(letter == std, letter, std, "match" if letter == std else "mismatch")


def check_choice(response: str, std_answer: str, prompt: str | None) -> Verdict:
    return check_many([("multiple_choice", response, std_answer, prompt)])[0]


# Verdicts by (category, response, standard answer, prompt). lm-eval's multi_choice_regex filter
# rebuilds a table of every Unicode punctuation character on each `apply` call (0.5 s), so the
# fallback runs once for a whole batch (`check_many`) and no response is checked twice.
_VERDICTS: dict[tuple, Verdict] = {}


def check_many(items: list[tuple[str, str, str | None, str | None]]) -> list[Verdict]:
    """`check` of each (category, response, std_answer, prompt), the flan-CoT fallback in one call."""
    keys = [(str(c), r or "", None if s is None else str(s), p) for c, r, s, p in items]
    if len(_VERDICTS) > 100_000:  # a bound for long runs; batches are far smaller
        _VERDICTS.clear()
    tails: dict[tuple, tuple] = {}
    for key in dict.fromkeys(k for k in keys if k not in _VERDICTS):
        cat, response, std, prompt = key
        if canonical_category(cat) == "multiple_choice" and std is not None and std.strip():
            head = _choice_head(response, std, prompt)
            if isinstance(head, Verdict):
                _VERDICTS[key] = head
            else:
                tails[key] = head
        else:
            _VERDICTS[key] = _check_one(cat, response, std, prompt)
    if tails:
        flt = _mc_filter()
        got = flt.apply([[k[1]] for k in tails], [t[2] for t in tails.values()])
        for (key, (std, letters, _)), g in zip(tails.items(), got):
            _VERDICTS[key] = _choice_tail(g[0], flt.fallback, std, letters)
    return [_VERDICTS[k] for k in keys]


def check(category: str, response: str, std_answer: str | None, prompt: str | None = None) -> Verdict:
    return check_many([(category, response, std_answer, prompt)])[0]


def _check_one(category: str, response: str, std_answer: str | None, prompt: str | None) -> Verdict:
    cat = canonical_category(category)
    if std_answer is None or not str(std_answer).strip():
        return Verdict(None, None, None, "no standard answer")
    if cat == "math":
        return check_math(response, str(std_answer))
    return Verdict(None, None, None, "category not verifiable")
