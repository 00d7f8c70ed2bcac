"""The sandbox contains hostile programs. Attacks run with the Python guards off (many
also with them on): the kernel (namespaces, read-only mounts, dropped privileges,
rlimits) must hold on its own.

The sandbox behaves differently when the harness is root (drop to `nobody`) and when it
is not (a user namespace); the filesystem tests run both, whoever runs the suite: as
root, the unprivileged harness is a child process under an unused uid; unprivileged,
the root harness is a child process in `unshare --user --map-root-user`."""
from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from hrlaif.evalsets import humaneval, sandbox
from hrlaif.evalsets.sandbox import Limits, run_program, run_programs

ISO = sandbox.isolation()
REAL_ROOT = os.geteuid() == 0 and sandbox._in_initial_userns()
REPO = Path(__file__).resolve().parents[1]

GUARDS = [pytest.param(True, id="guards"), pytest.param(False, id="os-only")]


def lim(guards: bool = True, **kw) -> Limits:
    return Limits(**{"timeout_s": 3.0, "guards": guards, **kw})


@pytest.fixture
def outside():
    """A world-writable directory outside /tmp (the sandbox's /tmp is its own): only the
    read-only mounts keep a program (any uid) from writing here."""
    d = Path(tempfile.mkdtemp(prefix="hrlaif-sbx-test-", dir="/var/tmp"))
    d.chmod(0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_isolation_matches_our_privilege():
    if REAL_ROOT:
        assert ISO.uid == pwd.getpwnam("nobody").pw_uid and ISO.uid != 0 and "--user" not in ISO.prefix
    else:
        assert ISO.uid is None and "--map-root-user" in ISO.prefix
    for ns in ("--mount", "--net", "--pid", "--ipc"):
        assert ns in ISO.prefix
    assert "private /tmp" in ISO.describe() and f"/proc {ISO.proc}" in ISO.describe()


def test_clean_program_passes_in_fresh_isolated_tempdir():
    prog = "import os, sys\nprint(sys.flags.isolated, os.getcwd())\nopen('scratch.txt', 'w').write('x')\n"
    a, b = run_programs([prog, prog], lim())
    assert a.passed and a.status == "passed" and a.returncode == 0
    flag, cwd_a = a.stdout.split()
    assert flag == "1"
    assert cwd_a != b.stdout.split()[1]  # a new directory per program ...
    assert not Path(cwd_a).exists()  # ... deleted afterwards
    assert a.duration_s < 30.0  # a generous bound (busy shared runners); the status says it beat the 3 s limit


def test_errors_fail_with_their_traceback():
    res = run_programs(["raise ValueError('boom')", "def f(:\n", "assert 1 == 2"], lim())
    assert [r.status for r in res] == ["failed"] * 3
    assert "ValueError: boom" in res[0].stderr and "raise ValueError('boom')" in res[0].stderr
    assert "SyntaxError" in res[1].stderr
    assert "AssertionError" in res[2].stderr


def test_early_exit_is_never_a_pass():
    # exit(0) before the tests run would otherwise look like a pass (reward hacking).
    res = run_programs(["import sys\nsys.exit(0)", "raise SystemExit", "import os\nos._exit(0)"], lim())
    assert [r.passed for r in res] == [False, False, False]


@pytest.mark.parametrize("guards", GUARDS)
def test_deleting_files_outside_the_sandbox_is_contained(outside, guards):
    victim = outside / "victim"
    victim.mkdir(mode=0o777)
    victim.chmod(0o777)  # writable by the sandbox's uid: only the read-only mount protects it
    sentinel = victim / "sentinel.txt"
    sentinel.write_text("keep me")
    prog = f"""
import os, shutil, subprocess
for attack in (lambda: os.remove({str(sentinel)!r}), lambda: os.unlink({str(sentinel)!r}),
               lambda: shutil.rmtree({str(victim)!r}), lambda: open({str(sentinel)!r}, 'w'),
               lambda: subprocess.run(["rm", "-rf", {str(victim)!r}], check=True)):
    try:
        attack()
    except Exception as e:
        print(type(e).__name__)
"""
    res = run_program(prog, lim(guards))
    assert res.status == "passed", res.stderr  # every attack raised and was caught
    assert res.stdout.count("Error") == 5
    assert sentinel.read_text() == "keep me"


@pytest.mark.parametrize("guards", GUARDS)
def test_fork_bomb_is_contained(guards):
    t0 = time.monotonic()
    res = run_program("import os\nwhile True:\n    os.fork()\n", lim(guards))
    assert not res.passed and res.status in ("failed", "timeout")
    assert time.monotonic() - t0 < 60.0  # contained at the 3 s limit; generous for a busy shared runner
    assert subprocess.run(["true"]).returncode == 0  # the host can still start processes


def test_escaped_children_are_killed():
    # Children that leave the process group (setsid) still die with the PID namespace.
    token = f"61.{os.getpid()}"
    prog = ("import os\nfor _ in range(3):\n    if os.fork() == 0:\n        os.setsid()\n"
            f"        os.execv('/bin/sleep', ['sleep', '{token}'])\nprint('parent done')\n")
    res = run_program(prog, lim(False))
    assert res.passed, res.stderr
    time.sleep(0.2)
    survivors = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                survivors.append(pid)
        except OSError:
            pass
    assert survivors == []


@pytest.mark.parametrize("guards", GUARDS)
def test_memory_bomb_hits_the_memory_limit(guards):
    res = run_programs(["x = bytearray(4 * 1024 ** 3)",
                        "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 ** 2))"],
                       lim(guards, memory_mb=256))
    assert [r.status for r in res] == ["memory", "memory"]
    assert all(r.duration_s < 30.0 for r in res)  # "memory", not the 3 s timeout, ended them (status above)


def test_infinite_loops_time_out_within_the_limit():
    res = run_programs(["while True:\n    pass", "import time\ntime.sleep(60)"], lim(timeout_s=1.0))
    assert [r.status for r in res] == ["timeout", "timeout"]  # CPU-bound and sleeping
    assert all(1.0 <= r.duration_s < 20.0 for r in res)  # cut at the limit, far before the 60 s sleep ends


@pytest.mark.parametrize("guards", GUARDS)
def test_no_connection_reaches_a_host_listener(guards):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        prog = f"""
import socket
try:
    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')
except OSError as e:
    print('blocked', type(e).__name__)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect(('127.0.0.1', {port}))
"""
        res = run_program(prog, lim(guards))
        assert not res.passed and "blocked" in res.stdout
        listener.settimeout(0.3)
        with pytest.raises(socket.timeout):
            listener.accept()


def test_host_secrets_do_not_leak(monkeypatch):
    secret = "sk-test-LEAKCHECK-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    # The sandbox's /proc shows its own PID namespace only: our pid is not there (as an
    # unprivileged harness, the same uid could otherwise read our environment).
    prog = (f"import os\nprint(dict(os.environ))\nprint(sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
            f"try:\n    print(open('/proc/{os.getpid()}/environ').read())\nexcept OSError as e:\n    print(e)\n")
    res = run_program(prog, lim(False))
    assert res.passed, res.stderr
    assert "OPENAI_API_KEY" not in res.stdout and secret not in res.stdout + res.stderr
    if ISO.proc == "private":
        assert "['1']" in res.stdout  # the runner is the only process of its namespace
    assert "No such file or directory" in res.stdout


def test_output_flood_is_capped():
    res = run_program("while True:\n    print('x' * 100000)", lim(fsize_mb=1))
    assert res.status == "failed" and "File too large" in res.stderr
    assert len(res.stdout) <= sandbox.TAIL_CHARS and res.duration_s < 30.0


def test_canonical_solutions_pass_and_a_wrong_one_fails(shared_data):
    problems = list(humaneval.load_problems(shared_data).values())[:10]
    progs = [humaneval.program_for(p, p["canonical_solution"]) for p in problems]
    progs.append(humaneval.program_for(problems[0], "    return not True\n"))
    res = run_programs(progs, lim(timeout_s=5.0))
    assert [r.status for r in res[:10]] == ["passed"] * 10
    assert res[10].status == "failed" and "AssertionError" in res[10].stderr


def test_unencodable_model_output_does_not_crash_the_host():
    res = run_program("s = '\ud800'\nprint(len(s))", lim())  # a lone surrogate, as JSON allows
    assert res.passed and res.stdout == "1\n"


# ---- writes: nowhere but the program's own directory, as root and as an unprivileged user ----

# Runs the sandbox from a separate harness process (another uid, or a user namespace).
# Only the stdlib and the repo are needed: `hrlaif.evalsets.sandbox` imports nothing else.
_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from hrlaif.evalsets import sandbox
args = json.loads(sys.argv[2])
res = [sandbox.run_program(p, sandbox.Limits(**args["limits"])) for p in args["programs"]]
print(json.dumps({"describe": sandbox.isolation().describe(), "results": [r.to_dict() for r in res]}))
"""


def _unused_uid() -> int:
    taken = {p.pw_uid for p in pwd.getpwall()}
    return next(u for u in range(61000, 65000) if u not in taken)


def _python_for(uid: int) -> str:
    """An interpreter `uid` can run (the venv's may sit under /root, mode 0700)."""
    for py in sandbox._candidate_pythons():
        try:
            if subprocess.run([py, "-I", "-S", "-c", "import json"], user=uid, group=uid, extra_groups=[],
                              env={}, cwd="/", capture_output=True).returncode == 0:
                return py
        except PermissionError:  # cannot even exec it
            pass
    raise AssertionError(f"no python is readable by uid {uid}")


class Harness:
    """Where a harness of the given kind runs from: its HOME, its cwd, and how it runs programs."""

    def __init__(self, mode: str, scratch: Path):
        self.mode = mode
        self.home, self.cwd = Path.home(), Path.cwd()
        self.child: dict | None = None
        if mode == "root" and not REAL_ROOT:
            self.child = dict(argv=["unshare", "--user", "--map-root-user", sys.executable, "-I", "-S"],
                              kw={}, env=dict(os.environ))
        elif mode == "user" and REAL_ROOT:
            uid = _unused_uid()
            # HOME and cwd outside /tmp, owned by that user: nothing but the read-only
            # mounts stops the program writing there.
            self.home, self.cwd = scratch / "home", scratch / "work"
            for d in (self.home, self.cwd):
                d.mkdir(mode=0o700)
                os.chown(d, uid, uid)
            self.child = dict(argv=[_python_for(uid), "-I", "-S"],
                              kw=dict(user=uid, group=uid, extra_groups=[]),
                              env={"HOME": str(self.home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def run(self, programs: list[str], limits: Limits) -> tuple[str, list[sandbox.Result]]:
        if self.child is None:
            return ISO.describe(), [run_program(p, limits) for p in programs]
        proc = subprocess.run([*self.child["argv"], "-c", _CHILD, str(REPO),
                               json.dumps({"programs": programs, "limits": limits.__dict__})],
                              cwd=self.cwd, env=self.child["env"], capture_output=True, text=True,
                              timeout=60, **self.child["kw"])
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout)
        return out["describe"], [sandbox.Result(**r) for r in out["results"]]


@pytest.fixture(params=["root", "user"], ids=["root-harness", "user-harness"])
def harness(request, outside):
    scratch = outside / "harness"
    scratch.mkdir()
    h = Harness(request.param, scratch)
    if request.param == "user":
        assert h.child is not None or os.geteuid() != 0  # really unprivileged, never skipped
    return h


_WRITER = r"""
import json, os
out = {}
for name, path in TARGETS.items():
    try:
        with open(path, "w") as f:
            f.write("escaped")
        out[name] = "written"
    except OSError as e:
        out[name] = e.strerror
# Through other processes' roots (a host /proc would lead into host mount namespaces).
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        with open("/proc/%s/root%s/%s-proc-%s" % (pid, OUTSIDE, UNIQUE, pid), "w") as f:
            f.write("escaped")
        out["proc-root-" + pid] = "written"
    except OSError:
        pass
with open("own.txt", "w") as f:
    f.write("mine")
with open(os.path.join(os.getcwd(), "own.txt")) as f:
    out["cwd"] = f.read()
print(json.dumps(out))
"""


def test_writes_outside_the_working_directory_leave_nothing_on_the_host(harness, outside):
    unique = f"hrlaif-sbx-{uuid.uuid4().hex}"
    targets = {"tmp": f"/tmp/{unique}", "home": f"{harness.home}/{unique}",
               "harness-cwd": f"{harness.cwd}/{unique}", "dev-shm": f"/dev/shm/{unique}",
               "outside": f"{outside}/{unique}", "var-tmp": f"/var/tmp/{unique}"}
    prog = (f"TARGETS = {targets!r}\nOUTSIDE = {str(outside)!r}\nUNIQUE = {unique!r}\n" + _WRITER)
    # The second program shows the /tmp the first one wrote to is gone.
    after = f"import os\nprint(os.path.exists('/tmp/{unique}'), sorted(os.listdir('/tmp')))\n"
    describe, (res, res_after) = harness.run([prog, after], lim(False))
    assert res.passed, res.stderr
    out = json.loads(res.stdout)
    assert out["cwd"] == "mine"
    assert out["tmp"] == "written"  # its private /tmp ...
    assert res_after.stdout.startswith("False")  # ... thrown away
    refused = {k: v for k, v in out.items() if k not in ("cwd", "tmp")}
    assert "written" not in refused.values(), (describe, out)
    for path in targets.values():
        assert not os.path.lexists(path), path
    assert [p.name for p in outside.iterdir() if p.name.startswith(unique)] == []
    assert "private /tmp" in describe
    # The harness really was of the kind the test is named after.
    if harness.mode == "user":
        assert "user namespace" in describe
    elif REAL_ROOT:
        assert f"uid={pwd.getpwnam('nobody').pw_uid} " in describe


_UNDO = r"""
import ctypes, json, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
REMOUNT, BIND = 32, 4096
out = {}

def attempt(name, ret):
    out[name] = "ok" if ret == 0 else os.strerror(ctypes.get_errno())

def attack(prefix):
    attempt(prefix + "remount-rw-root", libc.mount(None, b"/", None, REMOUNT | BIND, None))
    attempt(prefix + "remount-rw-outside", libc.mount(None, OUTSIDE.encode(), None, REMOUNT | BIND, None))
    attempt(prefix + "umount-tmp", libc.umount2(b"/tmp", 2))
    attempt(prefix + "umount-proc", libc.umount2(b"/proc", 2))
    try:
        with open(OUTSIDE + "/" + UNIQUE + "-" + prefix, "w") as f:
            f.write("escaped")
        out[prefix + "write"] = "ok"
    except OSError as e:
        out[prefix + "write"] = e.strerror

attack("")
out["setuid-mount"] = subprocess.run(["mount", "-o", "remount,rw", "/"], capture_output=True).returncode
# A new user namespace gives every capability again, over copies of our mounts that the
# kernel locks (read-only stays read-only, nothing can be unmounted to show what is under).
attempt("unshare", libc.unshare(0x10000000 | 0x00020000))  # CLONE_NEWUSER | CLONE_NEWNS
attack("nested-")
print(json.dumps(out))
"""


def test_the_program_cannot_undo_its_confinement(harness, outside):
    unique = f"hrlaif-sbx-{uuid.uuid4().hex}"
    prog = f"OUTSIDE = {str(outside)!r}\nUNIQUE = {unique!r}\n" + _UNDO
    describe, (res,) = harness.run([prog], lim(False))
    assert res.passed, res.stderr
    out = json.loads(res.stdout)
    assert out["unshare"] == "ok"  # the attack below really ran with full capabilities
    assert out.pop("setuid-mount") != 0
    assert [k for k, v in out.items() if v == "ok" and k != "unshare"] == [], (describe, out)
    assert list(outside.iterdir()) == [outside / "harness"]


def test_what_the_program_writes_is_capped():
    # The working directory lives in the private /tmp: one size cap for both.
    prog = ("chunk = b'x' * (1 << 20)\nfor path in ('big', '/tmp/big'):\n    try:\n"
            "        with open(path, 'wb') as f:\n            for _ in range(64):\n                f.write(chunk)\n"
            "    except OSError as e:\n        print(e.strerror)\n")
    res = run_program(prog, lim(False, tmp_mb=4))
    assert res.passed and res.stdout.splitlines() == ["No space left on device"] * 2, res.stderr


def test_humaneval_completion_writing_host_tmp_leaves_nothing(shared_data):
    problems = humaneval.load_problems(shared_data)
    task_id, problem = next(iter(problems.items()))
    name = f"hrlaif-sbx-he-{uuid.uuid4().hex}"
    # A correct function, then a top-level statement: it runs before the unit tests.
    completion = problem["canonical_solution"] + f"\nopen('/tmp/{name}', 'w').write('x')\n"
    summary, samples = humaneval.score_completions(problems, [{"task_id": task_id, "completion": completion}],
                                                   k=(1,), limits=lim(timeout_s=5.0))
    assert samples[0]["status"] == "passed" and summary["score"] == 1.0
    assert not os.path.lexists(f"/tmp/{name}")
    assert "private /tmp" in summary["extra"]["sandbox"]


def test_hidden_proc_layout_still_confines(outside):
    # The fallback for kernels that refuse a fresh /proc: an empty one.
    iso = dataclasses.replace(ISO, proc="hidden")
    prog = (f"import os\nprint(os.listdir('/proc'))\nopen('own.txt', 'w').write('x')\n"
            f"open({str(outside / 'x')!r}, 'w')\n")
    res = sandbox._run_one(prog, lim(False), iso)
    assert res.stdout == "[]\n" and "Read-only file system" in res.stderr
    assert list(outside.iterdir()) == []


_NO_MNTNS = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from hrlaif.evalsets import sandbox
iso = sandbox.Isolation(python=sys.argv[2], prefix=("unshare", "--net", "--pid", "--fork", "--"),
                        uid=None, gid=None, proc="private")
print(json.dumps(sandbox._run_one("print('ran')", sandbox.Limits(guards=False), iso).to_dict()))
"""


def test_a_launcher_without_a_mount_namespace_fails_closed():
    # Run from a throw-away mount namespace, so a broken check could not touch the host.
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-I", "-S",
                           "-c", _NO_MNTNS, str(REPO), ISO.python], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["status"] == "error" and res["stdout"] == ""
    assert "not in a mount namespace of its own" in res["stderr"]


def test_no_confining_layout_raises(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `unshare`
    sandbox.isolation.cache_clear()
    try:
        with pytest.raises(sandbox.UserError, match="no sandbox layout can confine"):
            sandbox.isolation()
    finally:
        sandbox.isolation.cache_clear()
