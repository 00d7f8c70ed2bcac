"""Final-answer extraction and verification for the verifiable categories (HRLAIF step 1).

`verify(category, response, std_answer, prompt=None)` returns
  True / False  the response's final answer does / does not match the standard answer
                (a response with no extractable answer is wrong);
  None          not verifiable: the category is not verifiable, or the standard answer
                cannot be parsed (callers fall back to basic labelling and count it).
`check(...)` returns the same decision with what was extracted, for reports and tests.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

VERIFIABLE = ("math", "multiple_choice")
"""The verifiable categories: the one definition. Hybrid labelling checks their answers by
default (hrlaif/trainers/feedback/labelling.py, the run config's label.verifiable) and the satisfaction
benchmark scores them by checking too (hrlaif/evalsets/satisfaction.py)."""
# Other spellings of a verifiable category that prompt files use.
ALIASES = {"mcq": "multiple_choice", "multiple-choice": "multiple_choice"}
REL_TOL = 1e-6

# A number: optional sign, thousands commas, decimals, an optional "/denominator", an optional %.
_NUM = r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?\s*%?|[-−]?\.\d+\s*%?"
NUM_RE = re.compile(_NUM)
# Phrases after which the final answer follows; the last one in the text wins.
_MARKERS = r"(?:answer\s+is|answer\s*[:：]|answer\s*=|答案是|答案为|答案[:：]|####|\\boxed\{)"
MARKED_NUM_RE = re.compile(_MARKERS + r"\s*[:：]?\s*\$?\s*(" + _NUM + ")", re.IGNORECASE)
FRAC_TEX_RE = re.compile(r"\\d?frac\{\s*([-−]?\d+(?:\.\d+)?)\s*\}\{\s*(\d+(?:\.\d+)?)\s*\}")

LETTERS = "ABCD"
_L = f"[{LETTERS}]"
MARKED_LETTER_RE = re.compile(
    r"(?:answer\s+is|answer\s*[:：]|correct\s+(?:answer|option|choice)\s+is|option\s+is|choice\s+is|"
    r"答案是|答案为|答案[:：]|答案选|选择|选)\s*[:：]?\s*(?:option\s+)?[(（]?(" + _L + r")(?![A-Za-z])", re.IGNORECASE)
LEADING_LETTER_RE = re.compile(r"^\s*[(（]?(" + _L + r")(?:[)）.．、:：]|\s*$)")
PAREN_LETTER_RE = re.compile(r"[(（](" + _L + r")[)）]")
OPTION_LINE_RE = re.compile(r"^\s*[(（]?(" + _L + r")[)）.．、:：]\s*(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)  # shared: second_check keeps one per checked response
class Verdict:
    correct: bool | None
    extracted: str | None   # the response's final answer as parsed, None if none found
    standard: str | None    # the standard answer as parsed, None if unparseable
    reason: str


def _parse_num(s: str) -> tuple[float, bool] | None:
    """'1,234.5' -> (1234.5, False); '3/4' -> (0.75, False); '50%' -> (50.0, True)."""
    s = s.replace("−", "-").replace(",", "").strip()
    pct = s.endswith("%")
    s = s.rstrip("%").strip()
    try:
        if "/" in s:
            num, den = (x.strip() for x in s.split("/", 1))
            if float(den) == 0:
                return None
            return float(Fraction(num) / Fraction(den)), pct
        return float(s), pct
    except (ValueError, ZeroDivisionError):
        return None


def extract_number(text: str) -> str | None:
    """The final numeric answer: after the last 'answer is' / '答案是' / '####' / \\boxed{, else the last number."""
    if not text:
        return None
    text = FRAC_TEX_RE.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text)
    marked = MARKED_NUM_RE.findall(text)
    if marked:
        return marked[-1].strip()
    nums = NUM_RE.findall(text)
    return nums[-1].strip() if nums else None


def _candidates(v: tuple[float, bool]) -> list[float]:
    # "50%" may be meant as 50 or as 0.5: accept either reading.
    return [v[0], v[0] / 100] if v[1] else [v[0]]


def numbers_match(a: tuple[float, bool], b: tuple[float, bool]) -> bool:
    return any(abs(x - y) <= max(REL_TOL * max(abs(x), abs(y)), 1e-12)
               for x in _candidates(a) for y in _candidates(b))


def parse_options(prompt: str | None) -> dict[str, str]:
    """Option texts from lines like 'A. text', '(B) text', 'C：text' in the prompt."""
    if not prompt:
        return {}
    opts: dict[str, str] = {}
    for letter, text in OPTION_LINE_RE.findall(prompt):
        opts.setdefault(letter.upper(), text)
    return opts


def _norm(s: str) -> str:
    return re.sub(r"[\s。.,，!！?？;；:：\"'“”‘’]+", " ", s).strip().lower()


def extract_letter(text: str, options: dict[str, str] | None = None) -> str | None:
    if not text:
        return None
    marked = MARKED_LETTER_RE.findall(text)
    if marked:
        return marked[-1].upper()
    m = LEADING_LETTER_RE.match(text)
    if m:
        return m.group(1).upper()
    parens = {x.upper() for x in PAREN_LETTER_RE.findall(text)}
    if len(parens) == 1:
        return parens.pop()
    if options:
        body = _norm(text)
        hits = [k for k, v in options.items() if _norm(v) and _norm(v) in body]
        if len(hits) == 1:
            return hits[0]
    return None


def standard_letter(std: str, options: dict[str, str]) -> str | None:
    """The standard answer as an option letter: "B", "(B)", "B. text" or the option text itself."""
    s = std.strip()
    m = re.fullmatch(r"[(（]?(" + _L + r")[)）]?[.．、]?", s, re.IGNORECASE)
    if m:
        return m.group(1).upper()
    m = re.match(r"^[(（]?(" + _L + r")[)）.．、:：]\s", s)
    if m:
        return m.group(1).upper()
    for k, v in options.items():
        if _norm(v) == _norm(s):
            return k
    return None


def canonical_category(category: str | None) -> str:
    """Lower-case category name with aliases resolved ("MCQ" -> "multiple_choice")."""
    cat = (category or "").strip().lower()
    return ALIASES.get(cat, cat)


def is_verifiable(category: str | None) -> bool:
    return canonical_category(category) in VERIFIABLE


def check(category: str, response: str, std_answer: str | None, prompt: str | None = None) -> Verdict:
    cat = canonical_category(category)
    if cat not in VERIFIABLE:
        return Verdict(None, None, None, "category not verifiable")
    if std_answer is None or not str(std_answer).strip():
        return Verdict(None, None, None, "no standard answer")
    std_answer = str(std_answer)
    if cat == "math":
        std_txt = extract_number(std_answer)
        std = _parse_num(std_txt) if std_txt else None
        if std is None:
            return Verdict(None, None, None, "standard answer has no number")
        got_txt = extract_number(response)
        got = _parse_num(got_txt) if got_txt else None
        if got is None:
            return Verdict(False, None, std_txt, "no number in response")
        ok = numbers_match(got, std)
        return Verdict(ok, got_txt, std_txt, "match" if ok else "mismatch")
    options = parse_options(prompt)
    std = standard_letter(std_answer, options)
    if std is None:
        return Verdict(None, None, None, "standard answer is not an option letter or option text")
    got = extract_letter(response, options)
    if got is None:
        return Verdict(False, None, std, "no option in response")
    return Verdict(got == std, got, std, "match" if got == std else "mismatch")


def verify(category: str, response: str, std_answer: str | None, prompt: str | None = None) -> bool | None:
    return check(category, response, std_answer, prompt).correct
