"""No new program inside the sandbox: every process there is a fork of the guarded child.

The guard (guard.py) lives in the child's own Python process; a second interpreter
started inside the sandbox (`subprocess.Popen([sys.executable, ...])`, `os.posix_spawn`,
multiprocessing's spawn and forkserver start methods, `pty.spawn`, a shebang script in
/tmp, `/lib64/ld-linux-x86-64.so.2 python`, ctypes calling `execve`) would run without
it. So, after the guard and before the harness or any student code, the child asks the
kernel to refuse every later `execve`/`execveat` of itself and of every process it forks:

* CPU path (`allow` empty): a seccomp filter that fails `execve` and `execveat` with
  EPERM, whatever the path. `fork` stays allowed (the ring's ranks): a fork inherits the
  filter and the guard.
* GPU path (`allow` lists programs): Triton runs `ptxas` and builds its launcher with
  the C compiler, so a Landlock ruleset that handles only `LANDLOCK_ACCESS_FS_EXECUTE`
  lets `execve` succeed on the listed files and folders and nowhere else. What it cannot
  stop: a listed dynamic loader (every dynamically linked compiler needs its ELF
  interpreter to be executable) can itself be run with any program as its argument;
  the README's threat model says so, and the static scan flags every way to start one.

Both are one-way: neither a seccomp filter nor a Landlock domain can be removed by the
process that installed it or by anything it forks. Needs no privilege (no_new_privs is
set first). The child calls `lock()` once and reports what it got; the judge keeps that
report as a note (the lock itself is the kernel's).
"""

from __future__ import annotations

import ctypes
import os
import platform
import stat
import struct

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000
# (execve, execveat) system call numbers.
EXEC_CALLS = {"x86_64": (59, 322), "aarch64": (221, 281)}
EPERM = 1

# Classic BPF opcodes.
LD_W_ABS, JEQ_K, JGE_K, RET_K = 0x20, 0x15, 0x35, 0x06
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000

# Landlock (the same numbers on x86_64 and aarch64).
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_ACCESS_FS_EXECUTE = 1 << 0
LANDLOCK_ACCESS_FS_READ_FILE = 1 << 2
LANDLOCK_ACCESS_FS_REFER = 1 << 13
FILE_ACCESS = LANDLOCK_ACCESS_FS_EXECUTE | (1 << 1) | LANDLOCK_ACCESS_FS_READ_FILE | (1 << 8)  # + WRITE_FILE, TRUNCATE


def _arch() -> str | None:
    machine = platform.machine()
    return {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(machine)


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def exec_filter(arch: str | None = None) -> bytes | None:
    """A seccomp program refusing execve and execveat (and any call of a foreign
    architecture's ABI, which could reach execve under another number)."""
    arch = arch or _arch()
    if arch not in EXEC_CALLS:
        return None
    audit = AUDIT_ARCH_X86_64 if arch == "x86_64" else AUDIT_ARCH_AARCH64
    execve, execveat = EXEC_CALLS[arch]
    # 0 ld arch; 1 jeq audit ? next : ERRNO; 2 ld nr; [3 x32 -> ERRNO]; execve -> ERRNO;
    # execveat -> ERRNO; ALLOW; ERRNO
    prog = [_ins(LD_W_ABS, 4), None, _ins(LD_W_ABS, 0)]
    checks = ([("ge", X32_SYSCALL_BIT)] if arch == "x86_64" else []) + [("eq", execve), ("eq", execveat)]
    n = 3 + len(checks) + 2
    errno_at = n - 1
    prog[1] = _ins(JEQ_K, audit, 0, errno_at - 1 - 1)
    for i, (op, k) in enumerate(checks):
        at = 3 + i
        prog.append(_ins(JGE_K if op == "ge" else JEQ_K, k, errno_at - at - 1, 0))
    prog.append(_ins(RET_K, RET_ALLOW))
    prog.append(_ins(RET_K, RET_ERRNO | EPERM))
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.syscall.restype = ctypes.c_long
    return libc


def _no_new_privs(libc) -> None:
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def _seccomp_refuse_exec(libc) -> None:
    prog = exec_filter()
    if prog is None:
        raise OSError(0, f"no exec filter for this CPU ({platform.machine()})")
    buf = ctypes.create_string_buffer(prog)
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none)."""
    libc = _libc()
    v = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                     ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return max(int(v), 0)


def _landlock(libc, handled: int, rules: list[tuple[str, int]], scoped: int = 0) -> list[str]:
    """Restrict this process (and what it forks) to a Landlock domain handling `handled`
    accesses, allowed only beneath the rules' paths (path, access), and `scoped` IPC
    (ABI 6: abstract Unix sockets, signals). The paths it could add."""
    abi = landlock_abi()
    if abi < 1:
        raise OSError(0, "this kernel has no Landlock")
    if abi >= 2:
        # A domain that does not handle REFER refuses every rename or link across folders
        # (EXDEV): Triton moves each compiled kernel into its cache that way. Handled and
        # allowed everywhere, it only asks that a moved file keep its rights, which it does.
        handled |= LANDLOCK_ACCESS_FS_REFER
        rules = [*rules, ("/", LANDLOCK_ACCESS_FS_REFER)]
    # struct landlock_ruleset_attr: handled_access_fs [, handled_access_net, scoped (ABI 6)]
    attr = struct.pack("<QQQ", handled, 0, scoped) if scoped else struct.pack("<Q", handled)
    abuf = ctypes.create_string_buffer(attr)
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, abuf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    added = []
    try:
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    access &= FILE_ACCESS       # a rule on a file takes file rights only
                # struct landlock_path_beneath_attr { __u64 allowed_access; __s32 parent_fd; } packed
                rule = ctypes.create_string_buffer(struct.pack("<Qi", access, fd))
                if libc.syscall(SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                                rule, ctypes.c_uint32(0)) == 0:
                    added.append(path)
            finally:
                os.close(fd)
        _no_new_privs(libc)
        if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return added


def _ancestors(files: set[str]) -> set[str]:
    out: set[str] = set()
    for f in files:
        d = os.path.dirname(f)
        while d not in out:
            out.add(d)
            if d == "/":
                break
            d = os.path.dirname(d)
    return out


def _everything_but(hidden: set[str]) -> list[str]:
    """Paths whose subtrees together hold every file of the file system except `hidden`
    (real paths): the siblings of each hidden file and of each of its ancestors. Landlock
    only allows; "all but these files" is "each of these subtrees"."""
    ancestors = _ancestors(hidden)
    out = []
    for d in sorted(ancestors):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            p = os.path.join(d, name)
            # A symlink is only another name: what it points to is covered where it lies
            # (a rule through `.venv/lib64 -> lib` would open the hidden files' own folder).
            if p not in ancestors and p not in hidden and not os.path.islink(p):
                out.append(p)
    return out


def hide(files: list[str]) -> dict:
    """Make `files` unreadable to this process and its forks (Landlock READ_FILE handled,
    allowed beneath everything else): the source of the library routines an assignment
    forbids cannot be read and run again, whatever reads it (open, linecache, inspect,
    importlib, runpy). The modules themselves were imported before; nothing needs their
    source again."""
    hidden = set()
    for f in files:
        if os.path.isfile(f):
            hidden.add(os.path.realpath(f))
    if not hidden:
        return {"method": None, "hidden": []}
    import linecache
    import tempfile

    # A folder above a hidden file gets no rule of its own (it would cover the file), so
    # what is made in it later cannot be read: where the Python lives under /tmp (a clone
    # in /tmp), temporary files and Triton's cache go to folders made now instead. (The
    # child's own start-up: it reads and sets its environment itself, it imports nothing
    # of the engine's settings, as child/ imports only protocol/.)
    blocked = {d for d in _ancestors(hidden) if os.access(d, os.W_OK)}
    if blocked:
        for var in ("TRITON_CACHE_DIR", "TMPDIR"):
            folder = os.environ.get(var) or "/tmp"  # the child's own start-up
            if folder in blocked:
                os.environ[var] = folder = os.path.join(folder, f"{var.lower()}-own")  # (start-up)
            os.makedirs(folder, exist_ok=True)
        tempfile.tempdir = None
    for f in list(linecache.cache):
        if os.path.realpath(f) in hidden:
            linecache.cache.pop(f, None)
    libc = _libc()
    _landlock(libc, LANDLOCK_ACCESS_FS_READ_FILE,
              [(p, LANDLOCK_ACCESS_FS_READ_FILE) for p in _everything_but(hidden)])
    return {"method": "landlock", "hidden": sorted(hidden), "unreadable_new_files_in": sorted(blocked)}


def gpu_programs() -> list[str]:
    """What Triton runs on a GPU: ptxas, the C compiler (and the programs gcc runs:
    cc1, as, collect2, ld), the dynamic loader they need, and ldconfig (Triton's search
    for libcuda). Files and folders, resolved to real paths."""
    import glob
    import shutil

    found: list[str] = []

    def add(p: str | None) -> None:
        if p and os.path.exists(p):
            found.append(os.path.realpath(p))

    try:  # Triton's own ptxas (triton/backends/nvidia/bin), or the one it is told to use
        import triton

        add(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin"))
        # Triton finds libcuda by running `ldconfig -p` (a shell script on Debian and
        # Ubuntu) once and caching the answer: ask now, while programs may still start.
        from triton.backends.nvidia.driver import libcuda_dirs

        libcuda_dirs()
    except Exception:  # noqa: BLE001  (no Triton: nothing of it to allow)
        pass
    for env in ("TRITON_PTXAS_PATH", "CC"):  # the child's own environment, at its start-up
        add(os.environ.get(env))
    for prog in ("cc", "gcc", "clang", "as", "ld", "ld.bfd", "ld.gold", "ptxas"):
        add(shutil.which(prog, path="/usr/bin:/bin:/usr/local/cuda/bin"))
    for d in glob.glob("/usr/lib/gcc/*/*") + glob.glob("/usr/libexec/gcc/*/*"):
        add(d)                                     # cc1, collect2, lto-wrapper
    for loader in glob.glob("/lib64/ld-linux-*.so.*") + glob.glob("/lib/ld-linux-*.so.*") \
            + glob.glob("/lib/*-linux-gnu/ld-linux-*.so.*"):
        add(loader)
    add(shutil.which("ldconfig", path="/sbin:/usr/sbin"))
    return sorted(set(found))


# Rights that create, change or remove files (Landlock ABI 1-3).
WRITE_ACCESS = ((1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10)
                | (1 << 11) | (1 << 12))           # WRITE_FILE, REMOVE_*, MAKE_* (char, dir, reg, sock, fifo, block, sym)
LANDLOCK_ACCESS_FS_TRUNCATE = 1 << 14
LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0


def confine_files(private: list[str]) -> dict:
    """From now on this process (and what it forks) writes no file anywhere, reads none
    beneath the `private` folders (the sandbox's shared /tmp and /dev/shm), and connects to
    no abstract Unix socket made outside its own domain (ABI 6). For processes that must
    exchange data only through a channel the judge counts (the ring's ranks: a rank that
    swapped chunks through files in /tmp, then sent junk over the loopback, looked like a
    ring). Files already open stay usable."""
    libc = _libc()
    abi = landlock_abi()
    if abi < 1:
        raise OSError(0, "this kernel has no Landlock")
    import sys

    private_real = {os.path.realpath(p) for p in private if os.path.isdir(p)}
    readable = [p for p in _everything_but(private_real) if os.path.realpath(p) not in private_real]
    # What the process itself still needs beneath a private folder (a Python installed
    # under /tmp, say): its installation and the engine's runtime stay readable.
    runtime = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for keep in {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
                 runtime}:
        keep = os.path.realpath(keep)
        if any(keep.startswith(p.rstrip("/") + "/") for p in private_real):
            readable.append(keep)
    handled = LANDLOCK_ACCESS_FS_READ_FILE | WRITE_ACCESS | (LANDLOCK_ACCESS_FS_TRUNCATE if abi >= 3 else 0)
    _landlock(libc, handled, [(p, LANDLOCK_ACCESS_FS_READ_FILE) for p in readable],
              scoped=LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET if abi >= 6 else 0)
    return {"method": "landlock", "private": sorted(private_real), "abstract_sockets_scoped": abi >= 6}


def interpreters() -> list[str]:
    """Every Python interpreter binary this machine has in the usual places, and the one
    running: real paths (what the loader would open)."""
    import glob
    import sys

    found = {sys.executable, getattr(sys, "_base_executable", sys.executable)}
    for d in ("/usr/bin", "/usr/local/bin", "/bin", os.path.dirname(sys.executable),
              os.path.join(sys.base_prefix, "bin")):
        found.update(glob.glob(os.path.join(d, "python*")))
    return sorted({os.path.realpath(p) for p in found if os.path.isfile(p) and not p.endswith("-config")})


def lock(allow: list[str] | None) -> dict:
    """Refuse every later execve: outright (`allow` empty: the CPU path), or outside the
    `allow` paths (the GPU path). Returns {"method": ..., "allowed": [...]}, or raises
    OSError where the kernel offers neither."""
    libc = _libc()
    if not allow:
        _no_new_privs(libc)
        _seccomp_refuse_exec(libc)
        return {"method": "seccomp", "allowed": []}
    return {"method": "landlock", "allowed": _landlock(libc, LANDLOCK_ACCESS_FS_EXECUTE,
                                                       [(p, LANDLOCK_ACCESS_FS_EXECUTE) for p in allow])}
