"""A stand-in for `llama_cpp.server` in a separate process, for judge-server fault tests.

Takes llama_cpp.server's flags (only --port matters), answers GET /v1/models and chat
completions (with first-token logprobs, the `smart` rules of tests/fake_judge.py), and can
die the way a crashing llama.cpp backend does:
  FAKE_LLAMA_CRASH_ON=N    SIGSEGV on the N-th chat request (1 = the first, like the AMX crash)
  FAKE_LLAMA_ANSWERED=F    append a hash of every answered request's messages to file F
  FAKE_LLAMA_DELAY=S       take S seconds per chat request (a slow judge, to be killed mid-stage)
  FAKE_LLAMA_OTHER=TEXT    the reply to prompts the `smart` rules do not know (their "OK"), e.g.
                           "Yes" for the evaluation's satisfaction checks
It also serves as an external OpenAI-compatible judge (judge.url), one that a test can kill -9.
"""
import argparse
import faulthandler
import hashlib
import json
import math
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fake_judge import smart_reply  # noqa: E402

CRASH_ON = int(os.environ.get("FAKE_LLAMA_CRASH_ON", "0"))
ANSWERED = os.environ.get("FAKE_LLAMA_ANSWERED")
DELAY = float(os.environ.get("FAKE_LLAMA_DELAY", "0"))
OTHER = os.environ.get("FAKE_LLAMA_OTHER")
lock = threading.Lock()
count = [0]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("fake-llama: " + fmt % args + "\n")

    def _send(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "t"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with lock:
            count[0] += 1
            n = count[0]
        if n == CRASH_ON:
            sys.stderr.write(f"fake-llama: crashing on chat request {n}\n")
            sys.stderr.flush()
            faulthandler._sigsegv()  # a real, synchronous segfault in this thread, like a bad kernel
        time.sleep(DELAY)
        text = smart_reply(body["messages"])
        if text == "OK" and OTHER:
            text = OTHER
        tok = text.split()[0] if text.split() else text
        lp = {"content": [{"token": tok, "logprob": math.log(0.9), "bytes": None,
                           "top_logprobs": [{"token": tok, "logprob": math.log(0.9), "bytes": None},
                                            {"token": "zzz", "logprob": math.log(0.1), "bytes": None}]}]}
        if ANSWERED:
            key = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()
            with lock, open(ANSWERED, "a") as f:
                f.write(key + "\n")
        self._send({"id": "x", "object": "chat.completion", "created": 0, "model": "fake",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop", "logprobs": lp}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args, _ = ap.parse_known_args()
    sys.stderr.write("fake-llama: loading\n")
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
