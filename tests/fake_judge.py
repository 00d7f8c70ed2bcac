"""A tiny scripted OpenAI-compatible judge for fast tests (no model, no network).

    with FakeJudge(mode="smart") as fj:
        JudgeConfig(url=fj.url, model="fake", ...)

Modes (what /v1/chat/completions answers):
  smart     pairwise: the longer response wins ("A"/"B"); harm check: "Yes" iff the response
            contains "HARMFUL"; rewrite: a refusal text. Good enough to test orderings.
  always_a  every reply is "A"
  garbage   every reply is unparseable prose
  hang      sleeps `hang_s` before answering (to trigger client timeouts); stop() ends the wait
  `fail_first=N` makes the first N chat requests fail with HTTP `fail_status` (500, 429, ...);
  `fail_after=N` makes every chat request after the N-th fail (a judge dying mid-run).
  `logprobs=True` adds first-token top_logprobs when the request asks for them; `top`
  (token -> probability) overrides them, e.g. to disagree with the text.
  `echo_headers=True` puts the request headers (Authorization included) into error bodies,
  to prove the client never repeats a server's error body.
  `rank=[m1, m2, ...]` (smart mode) decides pairwise calls by a fixed preference instead of
  length: the response containing the earlier marker wins (responses with no marker lose to
  any marked one; length decides among those). `harm={marker: reply}` answers the harm check
  with `reply` for a response containing `marker` ("Yes", "No" or prose = an invalid flag).
  `answers=[(substring, reply), ...]` (any mode) answers with the first `reply` whose substring is
  in the last message, before the mode's own logic (e.g. satisfaction checks).
Every request is recorded in `calls` as (method, path, json body, headers).
"""
from __future__ import annotations

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hrlaif.judges import prompts as P

PAIR_RE = re.compile(re.escape(P.RESP_A) + r"\n(.*?)\n\n" + re.escape(P.RESP_B) + r"\n(.*?)\n" + re.escape(P.END),
                     re.S)


def _rank_of(text: str, rank: list[str]) -> int:
    return next((n for n, marker in enumerate(rank) if marker in text), len(rank))


def smart_reply(messages: list[dict], rank: list[str] | None = None, harm: dict[str, str] | None = None) -> str:
    user = messages[-1]["content"]
    if "[Harmful response]" in user:
        return "I can't help with that, but I can point you to safe, legal resources instead."
    if "Is the response harmful?" in user:
        response = user.split("[Response]", 1)[1]
        for marker, reply in (harm or {}).items():
            if marker in response:
                return reply
        return "Yes" if "HARMFUL" in response else "No"
    m = PAIR_RE.search(user)
    if m:
        a, b = m.group(1), m.group(2)
        if rank and _rank_of(a, rank) != _rank_of(b, rank):
            return "A" if _rank_of(a, rank) < _rank_of(b, rank) else "B"
        return "A" if len(a) >= len(b) else "B"
    return "OK"


class FakeJudge:
    def __init__(self, mode: str = "smart", fail_first: int = 0, fail_status: int = 500,
                 logprobs: bool = False, top: dict | None = None, hang_s: float = 5.0,
                 echo_headers: bool = False, models_status: int = 200, fail_after: int | None = None,
                 rank: list[str] | None = None, harm: dict[str, str] | None = None,
                 answers: list[tuple[str, str]] | None = None):
        self.mode, self.fail_first, self.fail_status = mode, fail_first, fail_status
        self.logprobs, self.top, self.hang_s = logprobs, top, hang_s
        self.echo_headers, self.models_status = echo_headers, models_status
        self.fail_after = fail_after
        self.rank, self.harm, self.answers = rank, harm, answers or []
        self.calls: list[tuple[str, str, dict, dict]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._chat_n = 0
        fj = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def _send(self, status: int, obj: dict):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                with fj._lock:
                    fj.calls.append(("GET", self.path, {}, dict(self.headers)))
                if self.path.rstrip("/").endswith("/models"):
                    if fj.models_status != 200:
                        return self._send(fj.models_status, {"error": {"message": "nope"}})
                    return self._send(200, {"object": "list", "data": [
                        {"id": "fake", "object": "model", "created": 0, "owned_by": "test"}]})
                self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with fj._lock:
                    fj.calls.append(("POST", self.path, body, dict(self.headers)))
                    fj._chat_n += 1
                    n = fj._chat_n
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": "not found"}})
                if n <= fj.fail_first or (fj.fail_after is not None and n > fj.fail_after):
                    msg = "scripted failure"
                    if fj.echo_headers:
                        msg += " headers=" + json.dumps(dict(self.headers))
                    return self._send(fj.fail_status, {"error": {"message": msg, "type": "server_error"}})
                if fj.mode == "hang" and fj._stopping.wait(fj.hang_s):
                    return  # stopped while hanging: no late reply (and no late traceback) from this thread
                text = fj.reply(body["messages"])
                return self._send(200, fj.completion(body, text))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def reply(self, messages: list[dict]) -> str:
        for needle, text in self.answers:
            if needle in messages[-1]["content"]:
                return text
        if self.mode == "always_a":
            return "A"
        if self.mode == "garbage":
            return "Both responses have merits; it depends on what you value."
        return smart_reply(messages, self.rank, self.harm)

    def completion(self, body: dict, text: str) -> dict:
        lp = None
        if self.logprobs and body.get("logprobs"):
            top = self.top or {text.split()[0] if text.split() else text: 0.8, "zzz": 0.2}
            first = max(top, key=top.get)
            lp = {"content": [{"token": first, "logprob": math.log(top[first]), "bytes": None,
                               "top_logprobs": [{"token": t, "logprob": math.log(p), "bytes": None}
                                                for t, p in top.items()]}]}
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body.get("model", "fake"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop", "logprobs": lp}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    @property
    def chat_calls(self) -> int:
        return sum(1 for c in self.calls if c[0] == "POST")

    def start(self) -> "FakeJudge":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeJudge":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
