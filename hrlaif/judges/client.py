"""AI judge client: any OpenAI-compatible chat endpoint, cached, retried, rate-limited.

- The API key is read from the environment variable *named* in the config and lives only
  inside the openai client; it is never stored in the config, the cache, logs or errors.
- Every request goes through a disk cache (one JSON file per key, written atomically, so
  concurrent threads and worker processes can share it). The key covers the endpoint
  identity, model, full messages and all sampling parameters: a rerun costs no calls.
- We own the retry loop (the client's max_retries=0): exponential backoff with jitter
  on 429, 408/409, 5xx, timeouts and refused connections; when the budget is spent we
  raise `JudgeUnavailable` so callers can stop cleanly with finished labels on disk.
- `choose` turns a reply into a label: first-token log-probabilities when the endpoint
  returns them, otherwise a strictly parsed reply; anything else is "invalid".
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from hrlaif.core.errors import UserError
from hrlaif.core.store import cache_dir as default_cache_root
from hrlaif.core.store import stable_hash, write_text
from hrlaif.judges.config import JudgeConfig, safe_url

log = logging.getLogger(__name__)

INVALID = "invalid"
NO_KEY = "sk-no-key-required"  # local servers ignore the key, but the client needs one


class JudgeUnavailable(UserError):
    """The judge kept failing after all retries (finished labels are already on disk)."""


class JudgeServerDied(JudgeUnavailable):
    """The embedded judge's process is gone: stop at once instead of retrying a dead port."""


@dataclass
class Response:
    text: str
    # per generated token: {"token", "logprob", "top": [[token, logprob], ...]}; None if not returned
    logprobs: list[dict] | None = None
    usage: dict | None = None  # the endpoint's token counts {"prompt_tokens", "completion_tokens"}


@dataclass
class JudgeStats:
    requests: int = 0       # chat calls asked of the Judge (cached or not)
    http_calls: int = 0     # HTTP attempts actually sent
    cache_hits: int = 0
    retries: int = 0
    choices: int = 0
    invalid: int = 0
    by_logprobs: int = 0    # choices decided from first-token probabilities
    by_text: int = 0        # choices decided by strict parsing of the reply
    # Tokens of the requests actually sent (cache hits cost nothing), as the endpoint reported them.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    extra: dict = field(default_factory=dict)


def option_regex(options: Sequence[str]) -> re.Pattern:
    alts = "|".join(re.escape(o) for o in options)
    return re.compile(rf"^\s*(?:answer\s*[:：]\s*)?\(?({alts})\)?[.\s]*$", re.IGNORECASE)


def decide(resp: Response, options: Sequence[str]) -> tuple[str, dict]:
    """(label | "invalid", probabilities over options, method)."""
    if resp.logprobs and resp.logprobs[0].get("top"):
        mass = {o: 0.0 for o in options}
        for tok, lp in resp.logprobs[0]["top"]:
            norm = tok.strip().strip("(").rstrip(").:").lower()
            for o in options:
                if norm == o.lower():
                    mass[o] += math.exp(lp)
        total = sum(mass.values())
        if total > 0:
            probs = {o: m / total for o, m in mass.items()}
            best = max(probs.values())
            winners = [o for o, p in probs.items() if p == best]
            return (winners[0] if len(winners) == 1 else INVALID), probs | {"method": "logprobs"}
    m = option_regex(options).match(resp.text or "")
    if not m:
        return INVALID, {o: 0.0 for o in options} | {"method": "text"}
    label = next(o for o in options if o.lower() == m.group(1).lower())
    return label, {o: float(o == label) for o in options} | {"method": "text"}


class Judge:
    def __init__(self, config: JudgeConfig, health: Callable[[], str | None] | None = None):
        """`health()` returns None while the backend lives, else why it died (embedded server)."""
        import openai  # imported here: `hrlaif --help` must stay instant

        self.config = config
        self._openai = openai
        self._key_from_env = bool(config.key_env and os.environ.get(config.key_env))
        if config.url is None and not self._key_from_env:
            raise UserError(f"the judge API key is not set: export {config.key_env or 'OPENAI_API_KEY'}=...")
        self._client = openai.OpenAI(
            api_key=os.environ[config.key_env] if self._key_from_env else NO_KEY,
            base_url=config.url, max_retries=0, timeout=config.timeout)
        self.url = safe_url(config.url)
        self.identity = config.identity()  # the embedded judge's session renames itself "embedded"
        self.stats = JudgeStats()
        self._lock = threading.Lock()
        self._sem = threading.BoundedSemaphore(max(1, config.workers))
        root = config.cache_dir
        self._cache = None if root == "" else Path(root) if root else default_cache_root() / "judge"
        self.startup_s: float | None = None  # set by judge_session for the embedded server
        self.server_log: str | None = None  # the embedded server's log file
        self._health = health

    def __repr__(self) -> str:  # the client (and its key) stays out of reprs and logs
        return f"Judge(url={self.url!r}, model={self.config.model!r})"

    # -- plumbing -------------------------------------------------------------------
    def _count(self, **kw: int) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def _key(self, messages: list[dict], params: dict) -> str:
        ident = {"endpoint": self.config.cache_namespace or self.url, "model": self.config.model,
                 "messages": messages, "params": params}
        return stable_hash(ident, 40)

    def _cache_path(self, key: str) -> Path | None:
        return None if self._cache is None else self._cache / key[:2] / f"{key}.json"

    def _cache_get(self, key: str) -> Response | None:
        p = self._cache_path(key)
        if p is None or not p.exists():
            return None
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            return Response(text=d["text"], logprobs=d.get("logprobs"), usage=d.get("usage"))
        except (OSError, ValueError, KeyError):
            return None  # a corrupt entry is just a miss; it is rewritten below

    def _cache_put(self, key: str, resp: Response) -> None:
        p = self._cache_path(key)
        if p is not None:
            write_text(p, json.dumps(asdict(resp), ensure_ascii=False))

    def _retryable(self, e: Exception) -> bool:
        o = self._openai
        if isinstance(e, (o.APITimeoutError, o.APIConnectionError, o.RateLimitError, o.InternalServerError)):
            return True
        return isinstance(e, o.APIStatusError) and (e.status_code in (408, 409, 429) or e.status_code >= 500)

    def _describe(self, e: Exception) -> str:
        # Only the class and status: server bodies may echo request headers.
        status = getattr(e, "status_code", None)
        return f"{type(e).__name__}" + (f" (HTTP {status})" if status else "")

    def _request(self, messages: list[dict], params: dict) -> Response:
        cfg = self.config
        last: Exception | None = None
        for attempt in range(cfg.retries + 1):
            self._raise_if_dead()
            if attempt:
                delay = min(cfg.backoff_max, cfg.backoff * 2 ** (attempt - 1)) * random.uniform(0.75, 1.25)
                log.info("judge retry %d/%d in %.2fs after %s", attempt, cfg.retries, delay, self._describe(last))
                self._count(retries=1)
                time.sleep(delay)
            try:
                with self._sem:
                    self._count(http_calls=1)
                    out = self._client.chat.completions.create(model=cfg.model, messages=messages, **params)
            except self._openai.APIError as e:
                if not self._retryable(e):
                    if getattr(e, "status_code", None) in (401, 403):
                        raise UserError(f"judge at {self.url} rejected the API key from "
                                        f"${cfg.key_env} ({self._describe(e)})") from None
                    raise UserError(f"judge at {self.url} rejected the request: {self._describe(e)}") from None
                if isinstance(e, (self._openai.APIConnectionError, self._openai.APITimeoutError)):
                    self._raise_if_dead(wait_s=1.0)
                last = e
                continue
            return _to_response(out)
        raise JudgeUnavailable(f"judge at {self.url} unavailable after {cfg.retries + 1} attempts: "
                               f"{self._describe(last)}") from None

    def _raise_if_dead(self, wait_s: float = 0.0) -> None:
        if self._health is None:
            return
        deadline = time.monotonic() + wait_s
        while True:  # a refused connection can come a moment before the process is reaped
            reason = self._health()
            if reason is not None:
                raise JudgeServerDied(reason)
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)

    # -- public API -------------------------------------------------------------------
    def check(self) -> None:
        """Ping the endpoint once; UserError if it is down or refuses us."""
        o = self._openai
        try:
            self._client.with_options(timeout=min(self.config.timeout, 15.0)).models.list()
        except o.NotFoundError:
            return  # endpoint without /models: it answered, which is what we wanted to know
        except (o.APIConnectionError, o.APITimeoutError) as e:
            raise UserError(f"judge unreachable at {self.url}: {self._describe(e)}") from None
        except o.APIStatusError as e:
            if e.status_code in (401, 403):
                raise UserError(f"judge at {self.url} rejected the API key from ${self.config.key_env} "
                                f"({self._describe(e)})") from None
            raise UserError(f"judge unreachable at {self.url}: {self._describe(e)}") from None

    def chat(self, messages: list[dict], fresh: bool = False, **sampling) -> Response:
        """One reply, from the cache when it has it; `fresh`: sent to the endpoint whatever the cache
        holds, and not cached (the judge audit's repeatability check)."""
        params = {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens, **sampling}
        self._count(requests=1)
        key = self._key(messages, params)
        hit = None if fresh else self._cache_get(key)
        if hit is not None:
            self._count(cache_hits=1)
            return hit
        resp = self._request(messages, params)
        usage = resp.usage or {}
        self._count(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(usage.get("completion_tokens") or 0))
        if not fresh:
            self._cache_put(key, resp)
        return resp

    def usage(self) -> dict:
        """The counts a stage records as `judge_usage` (what the report states after a run)."""
        d = asdict(self.stats)
        d.pop("extra", None)
        return d | {"judge": self.identity}

    def choose(self, messages: list[dict], options: Sequence[str] = ("A", "B"),
               fresh: bool = False) -> tuple[str, dict]:
        sampling: dict = {"max_tokens": self.config.choice_max_tokens}
        label = probs = None
        if self.config.logprobs:
            sampling |= {"logprobs": True, "top_logprobs": self.config.top_logprobs}
            # The first token's log-probabilities decide whenever they name an option, so that token can
            # be asked for alone; the reply budget is spent only when they don't (the text then decides).
            if self.config.first_token_first and self.config.choice_max_tokens > 1:
                label, probs = decide(self.chat(messages, fresh=fresh, **(sampling | {"max_tokens": 1})), options)
                if probs["method"] != "logprobs":
                    label = probs = None
        if label is None:
            label, probs = decide(self.chat(messages, fresh=fresh, **sampling), options)
        method = probs.pop("method")
        self._count(choices=1, invalid=int(label == INVALID), by_logprobs=int(method == "logprobs"),
                    by_text=int(method == "text" and label != INVALID))
        return label, probs

    def choose_many(self, batch: Sequence[list[dict]], options: Sequence[str] = ("A", "B")) -> list[tuple[str, dict]]:
        """`choose` over many prompts, at most `concurrency` at a time; results in input order."""
        if len(batch) <= 1 or self.config.workers <= 1:
            return [self.choose(m, options) for m in batch]
        with ThreadPoolExecutor(max_workers=min(self.config.workers, len(batch))) as ex:
            futures = [ex.submit(self.choose, m, options) for m in batch]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise


def _to_response(out) -> Response:
    choices = getattr(out, "choices", None) or []
    if not choices:
        return Response(text="")
    ch = choices[0]
    text = (ch.message.content if ch.message else None) or ""
    lps = None
    content = getattr(getattr(ch, "logprobs", None), "content", None)
    if content:
        lps = [{"token": t.token, "logprob": t.logprob,
                "top": [[a.token, a.logprob] for a in (t.top_logprobs or [])]} for t in content]
    u = getattr(out, "usage", None)
    usage = {"prompt_tokens": getattr(u, "prompt_tokens", None) or 0,
             "completion_tokens": getattr(u, "completion_tokens", None) or 0} if u is not None else None
    return Response(text=text, logprobs=lps, usage=usage)
