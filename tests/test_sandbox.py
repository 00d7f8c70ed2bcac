"""The sandbox contains hostile programs. Each attack runs with the Python guards on
(every machine) and, where the OS layer is available, with the guards off: the kernel
(uid drop, namespaces, rlimits) must hold on its own."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from evalsets import humaneval, sandbox
from evalsets.sandbox import Limits, run_program, run_programs

ISO = sandbox.isolation()
needs_uid_drop = pytest.mark.skipif(ISO.uid is None, reason="no unprivileged uid (not root)")
needs_netns = pytest.mark.skipif(not ISO.netns, reason="no network namespace")
needs_pidns = pytest.mark.skipif(not ISO.pidns, reason="no PID namespace")

GUARDS = [pytest.param(True, id="guards"), pytest.param(False, id="os-only", marks=needs_uid_drop)]


def lim(guards: bool = True, **kw) -> Limits:
    return Limits(**{"timeout_s": 3.0, "guards": guards, **kw})


def test_isolation_as_root_uses_every_layer():
    if os.geteuid() != 0 or subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode:
        pytest.skip("needs root and a working `unshare --net`")
    assert ISO.uid not in (None, 0) and ISO.netns and ISO.pidns


def test_clean_program_passes_in_fresh_isolated_tempdir():
    prog = "import os, sys\nprint(sys.flags.isolated, os.getcwd())\nopen('scratch.txt', 'w').write('x')\n"
    a, b = run_programs([prog, prog], lim())
    assert a.passed and a.status == "passed" and a.returncode == 0
    flag, cwd_a = a.stdout.split()
    assert flag == "1"
    assert cwd_a != b.stdout.split()[1]  # a new directory per program ...
    assert not Path(cwd_a).exists()  # ... deleted afterwards
    assert a.duration_s < 3.0


def test_errors_fail_with_their_traceback():
    res = run_programs(["raise ValueError('boom')", "def f(:\n", "assert 1 == 2"], lim())
    assert [r.status for r in res] == ["failed"] * 3
    assert "ValueError: boom" in res[0].stderr
    assert "SyntaxError" in res[1].stderr
    assert "AssertionError" in res[2].stderr


def test_early_exit_is_never_a_pass():
    # exit(0) before the tests run would otherwise look like a pass (reward hacking).
    res = run_programs(["import sys\nsys.exit(0)", "raise SystemExit", "import os\nos._exit(0)"], lim())
    assert [r.passed for r in res] == [False, False, False]


@pytest.mark.parametrize("guards", GUARDS)
def test_deleting_files_outside_the_sandbox_is_contained(tmp_path, guards):
    victim = tmp_path / "victim"
    victim.mkdir()
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
    assert time.monotonic() - t0 < 6.0
    assert subprocess.run(["true"]).returncode == 0  # the host can still start processes


@needs_pidns
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
    assert all(r.duration_s < 3.0 for r in res)


def test_infinite_loops_time_out_within_the_limit():
    res = run_programs(["while True:\n    pass", "import time\ntime.sleep(60)"], lim(timeout_s=1.0))
    assert [r.status for r in res] == ["timeout", "timeout"]  # CPU-bound and sleeping
    assert all(1.0 <= r.duration_s < 2.5 for r in res)


@pytest.mark.parametrize("guards", [pytest.param(True, id="guards"),
                                    pytest.param(False, id="os-only", marks=needs_netns)])
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
    read_proc = ISO.uid is not None  # another uid cannot read our /proc/<pid>/environ
    prog = "import os\nprint(dict(os.environ))\n"
    if read_proc:
        prog += f"try:\n    print(open('/proc/{os.getpid()}/environ').read())\nexcept OSError as e:\n    print(e)\n"
    res = run_program(prog, lim())
    assert res.passed, res.stderr
    assert "OPENAI_API_KEY" not in res.stdout and secret not in res.stdout + res.stderr
    if read_proc:
        assert "Permission denied" in res.stdout


def test_output_flood_is_capped():
    res = run_program("while True:\n    print('x' * 100000)", lim(fsize_mb=1))
    assert res.status == "failed" and "File too large" in res.stderr
    assert len(res.stdout) <= sandbox.TAIL_CHARS and res.duration_s < 3.0


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
