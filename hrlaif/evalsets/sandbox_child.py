"""The trusted code the sandboxed child runs before the program (see hrlaif/evalsets/sandbox.py).

The host writes `runner_source(...)` as the child's `-c` program: it sets the rlimits, reads
prog.py from the host's temp dir, confines itself (mounts, namespaces, capabilities, uid) with
CONFINE, installs the Python GUARDS, then runs the program. Any failure before the program
starts exits with SETUP_FAILED (fail closed); an early exit() by the program with EXIT_CALLED.
"""
from __future__ import annotations

import os

SETUP_FAILED = 121  # runner exit code: the sandbox itself could not be set up
EXIT_CALLED = 122  # runner exit code: the program tried to exit early (never a pass)

# Only built-in modules are touched here: importing socket/subprocess/shutil would
# triple the start-up time. shutil and subprocess reach the OS through the os
# functions and `_posixsubprocess` patched below, so they are covered when imported later.
GUARDS = r'''
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

# Runs as the namespaces' root (real root, or root of a user namespace) and pid 1 of the
# new PID namespace, in a private mount namespace (`unshare` made propagation private, so
# nothing here reaches the host). Any failure raises: the runner then exits with
# SETUP_FAILED before the program is even read (fail closed).
CONFINE = r'''
def _sandbox_confine(name, uid, gid, proc, tmp_bytes, host_mntns):
    import codecs, ctypes, errno, os
    if os.readlink("/proc/self/ns/mnt") == host_mntns:  # never remount the host's mounts
        raise RuntimeError("not in a mount namespace of its own")
    libc = ctypes.CDLL(None, use_errno=True)
    RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, MOVE, REC, PRIVATE = (
        1, 2, 4, 8, 32, 4096, 8192, 16384, 1 << 18)
    # Per-mount flags a bind remount must restate: in a user namespace the ones set by
    # the host are locked, and dropping them is refused.
    KEEP = {b"nosuid": NOSUID, b"nodev": NODEV, b"noexec": NOEXEC, b"nosymfollow": 256}

    def check(ret, what):
        if ret != 0:
            e = ctypes.get_errno()
            raise OSError(e, "%s: %s" % (what, os.strerror(e)))

    def mount(src, dst, fstype, flags, data=None):
        enc = lambda s: s.encode() if isinstance(s, str) else s
        check(libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)),
              "mount %r" % (dst,))

    def prctl(*args):
        check(libc.prctl(*[ctypes.c_ulong(a) for a in args]), "prctl%r" % (args,))

    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    mount(None, "/", None, REC | PRIVATE)
    with open("/proc/self/mountinfo", "rb") as f:
        # Mount points are octal-escaped (\040 for a space).
        table = [(codecs.escape_decode(line.split(b" ")[4])[0], line.split(b" ")[5])
                 for line in f.read().splitlines()]
    # 1. Every mount read-only.
    for target, opts in table:
        flags = REMOUNT | BIND | RDONLY | NOSUID
        for opt in opts.split(b","):
            flags |= KEEP.get(opt, 0)
        try:
            mount(None, target, None, flags)
        except OSError as e:
            # Overmounted (no longer a mount root, or gone) or, in a user namespace, behind
            # a directory we may not search: checked below.
            if e.errno not in (errno.EINVAL, errno.ENOENT, errno.EACCES):
                raise
    # Whatever a path reaches is read-only now; a mount no path reaches is out of the
    # program's reach too.
    for target, _ in table:
        try:
            st_flag = os.statvfs(target).f_flag
        except OSError:
            continue
        if not st_flag & RDONLY:
            raise RuntimeError("%r is still writable" % (target,))
    # 2. A private /tmp with the working directory in it: everything the program can
    # write is in this one size-capped tmpfs, gone with the namespace.
    mount("tmpfs", "/tmp", "tmpfs", NOSUID | NODEV, "mode=1777,size=%d" % tmp_bytes)
    work = "/tmp/" + name
    os.mkdir(work, 0o700)
    if uid is not None:
        os.chown(work, uid, gid)
    os.chdir(work)
    # 3. A minimal /dev, built in the private /tmp and moved over the host's.
    dev = "/tmp/.dev"
    os.mkdir(dev)
    mount("tmpfs", dev, "tmpfs", NOSUID | NOEXEC, "mode=755,size=16k")
    for node in ("null", "zero", "full", "random", "urandom"):
        os.close(os.open(dev + "/" + node, os.O_CREAT | os.O_WRONLY, 0o666))
        mount("/dev/" + node, dev + "/" + node, None, BIND)  # writes to a device stay allowed
    for link, to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                     ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(to, dev + "/" + link)
    mount(None, dev, None, REMOUNT | BIND | RDONLY | NOSUID | NOEXEC)
    mount(dev, "/dev", None, MOVE)
    os.rmdir(dev)
    # 4. /proc: the host's would show host processes, and /proc/<pid>/root leads into
    # their (writable) mount namespaces.
    if proc == "private":
        mount("proc", "/proc", "proc", RDONLY | NOSUID | NODEV | NOEXEC)
    else:
        mount("tmpfs", "/proc", "tmpfs", RDONLY | NOSUID | NODEV | NOEXEC, "size=4k")
    # 5. No way back: no capability can come back through exec (empty bounding set,
    # no ambient set, uid 0 not special: securebits NOROOT, locked), then lose the
    # ones we hold, then no_new_privs (no setuid/file-capability gains).
    for cap in range(last_cap + 1):
        prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
    prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    prctl(28, 0x1 | 0x2 | 0x20, 0, 0, 0)  # PR_SET_SECUREBITS: NOROOT(+LOCKED), KEEP_CAPS_LOCKED
    if uid is not None:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # clears every capability (KEEP_CAPS is off and locked)
    else:
        hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
        check(libc.capset(hdr, (ctypes.c_uint32 * 6)()), "capset")
    prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    hdr, caps = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
    check(libc.capget(hdr, caps), "capget")
    if any(caps) or libc.prctl(39, 0, 0, 0, 0) != 1:
        raise RuntimeError("capabilities or no_new_privs not as set")
_sandbox_confine(**{params!r})
del _sandbox_confine
'''

RUNNER = r'''
import sys
try:
    import resource
    for _name, _soft, _hard in {rlimits!r}:
        resource.setrlimit(getattr(resource, _name), (_soft, _hard))
    del resource, _name, _soft, _hard
    with open("prog.py", encoding="utf-8") as _f:  # from the host's temp dir, our cwd until confined
        _src = _f.read()
{confine}
{guards}
    with open("prog.py", "w", encoding="utf-8") as _f:  # the program's copy: tracebacks quote it
        _f.write(_src)
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


def indent(src: str) -> str:
    """Indent a source block one level (the runner's try: body)."""
    return "\n".join("    " + line for line in src.strip("\n").splitlines())


def runner_source(limits, iso, workdir_name: str) -> str:
    """The child's whole program: rlimits, confinement (`iso`: sandbox.Isolation), guards, then prog.py."""
    params = dict(name=workdir_name, uid=iso.uid, gid=iso.gid, proc=iso.proc,
                  tmp_bytes=limits.tmp_mb << 20, host_mntns=os.readlink("/proc/self/ns/mnt"))
    confine = indent(CONFINE.replace("{params!r}", repr(params)))
    guards = indent(GUARDS) if limits.guards else ""
    return RUNNER.format(rlimits=limits.rlimits(), confine=confine, guards=guards,
                         setup_failed=SETUP_FAILED, exit_called=EXIT_CALLED)
