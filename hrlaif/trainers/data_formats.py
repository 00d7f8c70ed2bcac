"""Instruction data and prompt loading, plus the chat-template helpers every trainer shares.

Instruction data (SFT) comes in three shapes, all normalised to a list of chat messages
`[{"role": "system|user|assistant", "content": str}, ...]` ending with an assistant turn:

- alpaca:        `[{"instruction", "input", "output"}, ...]`
- sharegpt chat: `[{"conversations": [{"from": "human|gpt|system", "value"}, ...]}, ...]`
- openai chat:   `[{"messages": [{"role": "user|assistant|system", "content"}, ...]}, ...]`

Files may be a JSON array or JSONL (one object per line; read by hrlaif.core.store). Anything
malformed raises a one-line `UserError` naming the file and the item, never a traceback.

Prompts (`prompts.jsonl`, docs/FORMATS.md) are loaded by `load_prompts`.
"""
from __future__ import annotations

from pathlib import Path

from hrlaif.core.errors import UserError
from hrlaif.core.store import read_json_records

DATA_DIR = Path(__file__).resolve().parent / "data"
EMBEDDED_SFT = DATA_DIR / "sft_embedded.json"
EMBEDDED_PROMPTS = DATA_DIR / "feedback_prompts.jsonl"

# sharegpt speaker names -> chat roles
_FROM_ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
              "model": "assistant", "bot": "assistant", "system": "system"}
_ROLES = {"system", "user", "assistant"}

# Used only when a tokenizer ships without a chat template (plain base models): ChatML.
FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _text(value, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UserError(f"{where} must be a string (got {type(value).__name__})")
    return value


def normalise_example(item, where: str) -> list[dict]:
    """One record in any supported shape -> chat messages ending with an assistant turn."""
    if not isinstance(item, dict):
        raise UserError(f"{where} is not a JSON object")
    if "messages" in item or "conversations" in item:
        key = "messages" if "messages" in item else "conversations"
        turns = item[key]
        if not isinstance(turns, list) or not turns:
            raise UserError(f"{where}: `{key}` must be a non-empty list of turns")
        messages = []
        for t, turn in enumerate(turns):
            w = f"{where}.{key}[{t}]"
            if not isinstance(turn, dict):
                raise UserError(f"{w} is not a JSON object")
            if key == "messages":
                if "role" not in turn or "content" not in turn:
                    raise UserError(f"{w} needs `role` and `content` fields")
                role = turn["role"]
                if role not in _ROLES:
                    raise UserError(f"{w}: unknown role {role!r} (expected system, user or assistant)")
                content = _text(turn["content"], f"{w}.content")
            else:
                if "from" not in turn or "value" not in turn:
                    raise UserError(f"{w} needs `from` and `value` fields")
                role = _FROM_ROLE.get(str(turn["from"]).lower())
                if role is None:
                    raise UserError(f"{w}: unknown speaker {turn['from']!r} (expected human, gpt or system)")
                content = _text(turn["value"], f"{w}.value")
            messages.append({"role": role, "content": content})
        if not any(m["role"] == "assistant" for m in messages):
            raise UserError(f"{where} has no assistant turn to learn from")
        while messages[-1]["role"] != "assistant":  # trailing user turns carry no target
            messages.pop()
        return messages
    if "instruction" in item or "output" in item:
        if "instruction" not in item or "output" not in item:
            raise UserError(f"{where}: alpaca items need both `instruction` and `output`")
        instruction = _text(item["instruction"], f"{where}.instruction").strip()
        extra = _text(item.get("input"), f"{where}.input").strip()
        output = _text(item["output"], f"{where}.output")
        if not instruction:
            raise UserError(f"{where}: `instruction` is empty")
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        messages = []
        if item.get("system"):
            messages.append({"role": "system", "content": _text(item["system"], f"{where}.system")})
        return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    raise UserError(f"{where} has neither alpaca fields (instruction/input/output) nor "
                    f"chat fields (conversations or messages); keys: {sorted(item)[:6]}")


def load_instruction_data(path: str | Path | None = None) -> list[dict]:
    """Load SFT data -> `[{"messages": [...], "category": str|None}]`. None = embedded set."""
    path = Path(path) if path else EMBEDDED_SFT
    records = read_json_records(path)
    if not isinstance(records, list):
        raise UserError(f"{path}: expected a JSON array of examples (or JSONL)")
    if not records:
        raise UserError(f"{path} contains no examples")
    out = []
    for i, item in enumerate(records):
        messages = normalise_example(item, f"{path.name}[{i}]")
        out.append({"messages": messages, "category": item.get("category")})
    return out


def load_prompts(path: str | Path | None = None) -> list[dict]:
    """Load prompts.jsonl (FORMATS.md); None = the embedded feedback prompts."""
    path = Path(path) if path else EMBEDDED_PROMPTS
    records = read_json_records(path)
    if not isinstance(records, list) or not records:
        raise UserError(f"{path} contains no prompts")
    seen = set()
    out = []
    for i, r in enumerate(records):
        where = f"{path.name}[{i}]"
        if not isinstance(r, dict):
            raise UserError(f"{where} is not a JSON object")
        if "prompt" not in r:
            raise UserError(f"{where} has no `prompt` field")
        prompt = _text(r["prompt"], f"{where}.prompt")
        if not prompt.strip():
            raise UserError(f"{where}: `prompt` is empty")
        pid = str(r.get("id", i))
        if pid in seen:
            raise UserError(f"{where}: duplicate prompt id {pid!r}")
        seen.add(pid)
        out.append({**r, "id": pid, "prompt": prompt, "category": r.get("category") or "general",
                    "std_answer": r.get("std_answer"), "lang": r.get("lang") or "en"})
    return out


# ---------------------------------------------------------------- chat template helpers

def ensure_chat_template(tok) -> None:
    if not getattr(tok, "chat_template", None):
        tok.chat_template = FALLBACK_CHAT_TEMPLATE


def render_prompt(tok, prompt: str) -> str:
    """The text a policy sees before answering: user turn + generation prompt."""
    ensure_chat_template(tok)
    return tok.apply_chat_template([{"role": "user", "content": prompt}],
                                   tokenize=False, add_generation_prompt=True)


def tokenize_prompts(tok, prompts: list[dict], max_len: int) -> tuple[list[list[int]], int]:
    """Rendered prompt token ids for a policy to answer (PPO, once per run): a prompt over max_len
    keeps its last tokens. -> (ids, number truncated)."""
    out, cut = [], 0
    for p in prompts:
        ids = tok(render_prompt(tok, p["prompt"]), add_special_tokens=False)["input_ids"]
        if len(ids) > max_len:
            ids, cut = ids[-max_len:], cut + 1
        out.append(ids)
    return out, cut


def encode_prompt_response(tok, prompt: str, response: str, max_len: int) -> tuple[list[int], bool]:
    """Token ids of `render_prompt(prompt) + response` (no EOS appended), at most max_len.

    This is the exact sequence the reward model scores and the policy generates (prompt
    template, then the raw response tokens), so PPO and the RM agree on tokenisation.
    Over-long sequences lose tokens from the LEFT: the reward is read at the end.
    Returns (ids, truncated).
    """
    p = tok(render_prompt(tok, prompt), add_special_tokens=False)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"] if response else []
    ids = p + r
    if len(ids) > max_len:
        return ids[-max_len:], True
    return ids, False


def encode_chat(tok, messages: list[dict], max_len: int) -> tuple[list[int], list[int], bool]:
    """Tokenise a conversation for SFT -> (input_ids, labels, truncated).

    labels are -100 on everything but assistant replies (and the end-of-turn tokens the
    template puts after them, so the model learns to stop). We render growing prefixes
    of the conversation with the chat template and tokenise the text deltas: each
    assistant delta is `render(messages[:t+1]) - render(messages[:t], generation prompt)`.
    Sequences over max_len are cut at the right.
    """
    ensure_chat_template(tok)
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""

    def add(text: str, train: bool):
        nonlocal rendered
        if not text.startswith(rendered):
            # A template that rewrites earlier turns (rare) cannot be split into deltas.
            raise UserError("the tokenizer's chat template is not prefix-stable; cannot mask prompt tokens")
        delta = text[len(rendered):]
        rendered = text
        if delta:
            t = tok(delta, add_special_tokens=False)["input_ids"]
            ids.extend(t)
            labels.extend(t if train else [-100] * len(t))

    for t, m in enumerate(messages):
        if m["role"] == "assistant":
            add(tok.apply_chat_template(messages[:t], tokenize=False, add_generation_prompt=True)
                if t else "", False)
            add(tok.apply_chat_template(messages[:t + 1], tokenize=False), True)
        else:
            add(tok.apply_chat_template(messages[:t + 1], tokenize=False), False)
    truncated = len(ids) > max_len
    return ids[:max_len], labels[:max_len], truncated
