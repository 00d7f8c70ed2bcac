"""Judge settings: one dataclass for the run config's `judge:` section, the `--judge-*` flags of
`hrlaif label` / `hrlaif eval`, and the `Judge` client (hrlaif/judges/client.py)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from hrlaif.core.settings import Settings, greater_than, setting

EMBEDDED = "embedded"  # the url and model of the embedded judge in identities


def safe_url(url: str | None) -> str:
    """The endpoint without any user:password@ part, for messages and records."""
    if not url:
        return "https://api.openai.com/v1"
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urlunsplit((p.scheme, host, p.path, "", ""))


# Formats the embedded judge can serve (hrlaif/judges/server.py).
EMBEDDED_WEIGHTS = ("auto", "q4_1", "q8_0", "f16", "bf16")


@dataclass
class JudgeConfig(Settings):
    """An OpenAI-compatible chat endpoint, or (url none) the embedded llama.cpp judge."""

    url: str | None = setting(
        None, "OpenAI-compatible base URL (OpenAI, vLLM, llama.cpp server), e.g. https://api.openai.com/v1; "
              "none = the embedded llama.cpp judge, started when needed")
    model: str = setting("default", "model name at the endpoint (llama.cpp and vLLM serve their one model "
                                    "under any name; OpenAI needs e.g. gpt-4o-mini)")
    key_env: str | None = setting(
        "OPENAI_API_KEY", "NAME of the environment variable holding the API key (never the key itself); "
                          "none = no key (local servers)")
    workers: int = setting(2, "concurrent judge requests (labelling also judges this many prompts at once); "
                              "the embedded judge takes one at a time",
                           min=1, aliases=("--workers",))
    retries: int = setting(4, "retries per request after the first attempt (429, 5xx, timeouts)", min=0)
    timeout: float = setting(120.0, "seconds per request to an external judge (the embedded one allows 300)",
                             check=greater_than(0))
    backoff: float = setting(1.0, "first retry delay in seconds; doubles each retry, +-25% jitter", min=0)
    backoff_max: float = setting(30.0, "retry delay ceiling in seconds", min=0)
    temperature: float = setting(0.0, "sampling temperature (0 = greedy: judging is deterministic)", min=0)
    max_tokens: int = setting(384, "reply budget of free-text calls (red-team rewrites)", min=1)
    choice_max_tokens: int = setting(4, "reply budget of choice calls: room for 'A' or '(B).', not an essay",
                                     min=1)
    logprobs: bool = setting(True, "decide choices from first-token log-probabilities when the endpoint "
                                   "returns them")
    top_logprobs: int = setting(10, "alternatives read for P(option)", min=1, max=20)
    first_token_first: bool = setting(
        False, "choice calls ask for the first token alone and spend choice_max_tokens only when its "
               "logprobs name no option (same verdicts, fewer tokens); for endpoints that return logprobs; "
               "the embedded judge always does this")
    cache_dir: str | None = setting(None, "request cache directory (none = $HRLAIF_CACHE/judge; '' = off)",
                                    aliases=("--cache-dir",))
    cache_namespace: str | None = setting(
        None, "the endpoint's name in cache keys (none = its URL); the embedded judge names its model file, "
              "so its random port keeps the cache")

    price_per_1k_prompt_tokens: float | None = setting(
        None, "price per 1000 prompt tokens (any currency), for the cost line of `hrlaif run --dry-run`; "
              "none = not priced", min=0)
    price_per_1k_completion_tokens: float | None = setting(
        None, "price per 1000 completion tokens, for the cost line of `hrlaif run --dry-run`; none = not priced",
        min=0)
    tokenizer: str | None = setting(
        None, "HF tokenizer (local dir) that `hrlaif run --dry-run` counts this judge's tokens with; none = the "
              "embedded judge's own tokenizer, or an estimate of 4 characters per token for an endpoint")

    embedded_weights: str = setting(
        "auto", "weights of the embedded judge (url none): auto = a bf16 copy of the shipped Q4_1 GGUF on CPUs "
                "with AVX512-BF16 (about 2.5x its prompt speed there, same verdicts), a Q8_0 requantisation elsewhere "
                "(1.28x on AVX2, same verdicts); or q4_1 (the shipped file), q8_0, f16, bf16", choices=EMBEDDED_WEIGHTS)

    def identity(self) -> dict:
        """Which grader this is, for records and comparisons: endpoint (no credentials) and model; for
        the embedded judge also `weights`, the hash of the GGUF it is served from (every format the
        embedded judge serves is made from the shipped file), so a judge is recognised by its weights."""
        if self.url is None:
            return {"url": EMBEDDED, "model": EMBEDDED, "weights": embedded_weights_id()}
        return {"url": safe_url(self.url), "model": self.model}

    def same_judge(self, other: "JudgeConfig | None") -> bool:
        """The same grader: the same weights where both identities carry a hash, else the same endpoint
        and model (settings such as workers or timeouts do not matter)."""
        if other is None:
            return False
        a, b = self.identity(), other.identity()
        if a.get("weights") and b.get("weights"):
            return a["weights"] == b["weights"]
        return (a["url"], a["model"]) == (b["url"], b["model"])


@functools.lru_cache(maxsize=1)
def embedded_weights_id() -> str | None:
    """sha256 (12 hex) of the shipped GGUF the embedded judge serves (None without the package): the
    same hash the embedded base model records as its source (hrlaif.core.models.source_weights_id)."""
    from hrlaif.core.errors import UserError
    from hrlaif.core.models import source_weights_id

    try:
        return source_weights_id(None)
    except UserError:
        return None
