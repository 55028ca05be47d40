"""The child zygote: a sandboxed child in 30 ms instead of a new interpreter in 1-3 s.

Started by the local runner (`autograder/sandbox/local.py`) once per grading process
and child environment, as `python -I -B .../sandbox/child_zygote.py SOCKET` with the child's
clean environment; it imports torch (and `torch._dynamo`, which `torch.optim` imports
on its first step) and the child's runtime, and never runs student code itself.

For each child it forks (`autograder/sandbox/forkserver.py`); the fork builds a sandbox for
itself from nothing, the one bubblewrap would build from the same arguments (the
runner passes the very argument list it gives bwrap, interpreted here):
- new mount, network, PID, IPC, UTS and cgroup namespaces (and a user namespace when
  not root): nothing shared with the zygote, the judge or any other child;
- a root made of a fresh tmpfs with the system's and Python's folders bound read-only,
  a new /proc of its own PID namespace, a minimal /dev, a sized /tmp, the runtime at
  /sandbox and the judge's shared-memory folder at /xfer; then pivot_root and the old
  root detached;
- loopback up and nothing else; PID 1 of the namespace a reaper, the child PID 2;
- its own session, no new privileges, the same seccomp filter bwrap loads, then the
  child's own limits and uid drop (`main.run`), then the student's code.
The fork joins the child's memory and CPU cgroups before anything else, so the
kernel's limits and counts cover all of it. What it inherits from the zygote is the
interpreter with torch imported: no other child ever ran in that memory.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import struct
import sys

RUNTIME = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if RUNTIME not in sys.path:
    sys.path.insert(0, RUNTIME)

from autograder import settings  # noqa: E402
from autograder.sandbox import forkserver  # noqa: E402

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 1, 4, 22, 38, 24
SECCOMP_MODE_FILTER = 2
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus")  # as bubblewrap covers them

_libc = ctypes.CDLL(None, use_errno=True)


class SandboxSetupError(Exception):
    pass


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise SandboxSetupError(f"{what}: {os.strerror(err)}")


def _mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(src.encode() if src else None, dst.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), f"mount {dst}")


def _locked_flags(path: str) -> int:
    """Flags a bind mount must keep when remounted (the kernel refuses to clear them)."""
    f = os.statvfs(path).f_flag
    out = 0
    for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                   (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)):
        if f & st:
            out |= ms
    return out


def _make_target(src: str | None, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
    if src is not None and not os.path.isdir(src):
        if not os.path.exists(dst):
            with open(dst, "w"):
                pass
    else:
        os.makedirs(dst, mode=0o755, exist_ok=True)


def _mounts_at_or_below(path: str) -> list[str]:
    """Mount points at `path` and below it (mountinfo's octal escapes decoded), top first."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == path or point.startswith(path.rstrip("/") + "/"):
                out.append(point)
    return sorted(set(out), key=len)


def _bind(src: str, dst: str, *, read_only: bool, devices: bool = False) -> None:
    """A recursive bind whose every mount (the top one and each below it, as bubblewrap
    does) is remounted nosuid, nodev unless devices, and read-only when asked."""
    _make_target(src, dst)
    _mount(src, dst, None, MS_BIND | MS_REC)
    for point in _mounts_at_or_below(dst):
        flags = MS_BIND | MS_REMOUNT | MS_NOSUID | _locked_flags(point)
        if not devices:
            flags |= MS_NODEV
        if read_only:
            flags |= MS_RDONLY
        try:
            _mount(None, point, None, flags)
        except SandboxSetupError:
            if point == dst:
                raise
            if read_only:  # a mount below that cannot be made read-only: hide it
                _mount("tmpfs", point, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "mode=0755")


def _tmpfs(dst: str, mode: int, size: int | None) -> None:
    _make_target(None, dst)
    opts = f"mode={mode:o}" + (f",size={size}" if size else "")
    _mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, opts)


def _dev(dst: str) -> None:
    _tmpfs(dst, 0o755, None)
    for name in DEV_NODES:
        if os.path.exists(f"/dev/{name}"):
            _bind(f"/dev/{name}", f"{dst}/{name}", read_only=False, devices=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore"), ("ptmx", "pts/ptmx")):
        os.symlink(target, f"{dst}/{name}")
    os.mkdir(f"{dst}/shm", 0o755)
    os.mkdir(f"{dst}/pts", 0o755)
    _mount("devpts", f"{dst}/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")


def _proc(dst: str) -> None:
    _make_target(None, dst)
    _mount("proc", dst, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for sub in PROC_READ_ONLY:  # as bubblewrap: covered where they would be writable
        if os.path.exists(f"{dst}/{sub}") and os.access(f"{dst}/{sub}", os.W_OK):
            _bind(f"{dst}/{sub}", f"{dst}/{sub}", read_only=True)


def build_root(args: list[str], root: str) -> str | None:
    """Build the file system bubblewrap would from `args` (its mount options) under
    `root`; return the --chdir folder. Options other than mounts are bwrap's own
    (namespaces, session, seccomp): this module does those itself."""
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    perms: int | None = None
    size: int | None = None
    chdir = None
    i = 0
    takes = {"--ro-bind": 2, "--ro-bind-try": 2, "--bind": 2, "--dev-bind": 2, "--symlink": 2,
             "--tmpfs": 1, "--dir": 1, "--proc": 1, "--dev": 1, "--chdir": 1, "--perms": 1, "--size": 1,
             "--seccomp": 1}
    plain = {"--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
             "--unshare-user", "--die-with-parent", "--new-session"}
    while i < len(args):
        op = args[i]
        if op == "--":
            break
        if op in plain:
            i += 1
            continue
        if op not in takes:
            raise SandboxSetupError(f"unknown sandbox option {op}")
        vals = args[i + 1: i + 1 + takes[op]]
        i += 1 + takes[op]
        if op == "--perms":
            perms = int(vals[0], 8)
            continue
        if op == "--size":
            size = int(vals[0])
            continue
        if op == "--chdir":
            chdir = vals[0]
        elif op in ("--ro-bind", "--ro-bind-try", "--bind", "--dev-bind"):
            src, dst = vals
            if op == "--ro-bind-try" and not os.path.exists(src):
                pass
            else:
                _bind(src, root + dst, read_only=op.startswith("--ro"), devices=op == "--dev-bind")
        elif op == "--symlink":
            target, dst = vals
            os.makedirs(os.path.dirname(root + dst), mode=0o755, exist_ok=True)
            os.symlink(target, root + dst)
        elif op == "--tmpfs":
            _tmpfs(root + vals[0], perms if perms is not None else 0o755, size)
        elif op == "--dir":
            os.makedirs(root + vals[0], mode=0o755, exist_ok=True)
            os.chmod(root + vals[0], perms if perms is not None else 0o755)
        elif op == "--proc":
            _proc(root + vals[0])
        elif op == "--dev":
            _dev(root + vals[0])
        perms = size = None
    return chdir


def _loopback_up() -> None:
    import fcntl
    import socket

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s, siocgifflags, ifreq))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh14x", b"lo", flags | iff_up))


def _pivot(root: str) -> None:
    os.chdir(root)
    _check(_libc.syscall(_SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")


_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine)


def _drop_capabilities() -> None:
    """All capabilities gone (a user namespace gives its creator all of them in it)."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:
            break  # EINVAL: past the last capability this kernel knows
    header = struct.pack("Ii", 0x20080522, 0)
    data = bytes(24)
    _check(_libc.capset(header, data), "drop capabilities")


def _seccomp(program: bytes) -> None:
    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    prog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "load the seccomp filter")


def _exit_like(status: int) -> None:
    """End this process as the one whose wait status this is ended (a signal as that
    signal: the judge tells a memory kill, SIGKILL, from an exit)."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        sig = -code
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        os.kill(os.getpid(), signal.SIGKILL)  # a signal whose default is to go on (SIGCHLD...)
    os._exit(code)


def become_child(req: dict, fds: list[int]) -> None:
    """In the fork: join the cgroups, make the namespaces, build the root, run the child."""
    try:
        req_fd, rep_fd, log_fd, setup_fd = fds[:4]
        os.setsid()
        # No core dump of a root process re-raising the student's SIGSEGV (see _exit_like).
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        for group in req.get("cgroups") or []:
            with open(os.path.join(group, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        forkserver.redirect_output(log_fd)
        os.close(log_fd)
        keep = {0, 1, 2, req_fd, rep_fd, setup_fd}
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in keep:
                try:
                    os.close(int(name))
                except OSError:
                    pass
        uid_outside, gid_outside = os.getuid(), os.getgid()
        user_ns = uid_outside != 0
        flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID | CLONE_NEWCGROUP
        _check(_libc.unshare(flags | (CLONE_NEWUSER if user_ns else 0)), "unshare")
        if user_ns:  # the same uid inside as outside, as bubblewrap maps it
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"{uid_outside} {uid_outside} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"{gid_outside} {gid_outside} 1")
        status_r, status_w = os.pipe()
        init = os.fork()
        if init:  # the fork the judge knows: ends as the child ends
            for fd in (status_w, req_fd, rep_fd, setup_fd):
                os.close(fd)
            raw = b""
            while chunk := os.read(status_r, 64):
                raw += chunk
            os.waitpid(init, 0)
            _exit_like(int(raw) if raw.strip().isdigit() else signal.SIGKILL)
        os.close(status_r)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        root = req["root"]
        chdir = build_root(list(req["args"]), root)
        _loopback_up()
        _pivot(root)
        child = os.fork()
        if child == 0:
            os.close(status_w)
            _run_child(req, req_fd, rep_fd, setup_fd, chdir, user_ns)
        for fd in (req_fd, rep_fd, setup_fd):
            os.close(fd)
        # PID 1 needs nothing but wait(): no capabilities, no new privileges, the filter.
        _drop_capabilities()
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no new privileges")
        if req.get("seccomp"):
            _seccomp(bytes.fromhex(req["seccomp"]))
        while True:  # PID 1: reap everything until the child itself has ended
            pid, status = os.wait()
            if pid == child:
                os.write(status_w, str(status).encode())
                os._exit(0)
    except BaseException as e:  # noqa: BLE001
        try:
            os.write(2, f"sandbox setup failed: {type(e).__name__}: {e}\n".encode())
        finally:
            os._exit(121)


def _run_child(req: dict, req_fd: int, rep_fd: int, setup_fd: int, chdir: str | None, user_ns: bool) -> None:
    def body() -> None:
        os.setsid()
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a new interpreter has it
        if user_ns:
            _drop_capabilities()
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no new privileges")
        if req.get("seccomp"):
            _seccomp(bytes.fromhex(req["seccomp"]))
        settings.become({**req["env"], "PWD": chdir} if chdir else req["env"])  # PWD as bubblewrap's --chdir sets it
        import tempfile

        tempfile.tempdir = None
        forkserver.reseed()
        if chdir:
            os.chdir(chdir)
        sandbox = req["sandbox_root"]
        sys.path[:] = [sandbox, *(p for p in sys.path if p != RUNTIME)]
        for name, module in list(sys.modules.items()):  # later imports of the runtime: from /sandbox
            if name == "autograder" or name.startswith("autograder."):
                if getattr(module, "__path__", None) is not None:
                    module.__path__ = [os.path.join(sandbox, *name.split("."))]
        cfg = dict(req["cfg"], req_fd=req_fd, rep_fd=rep_fd)
        sys.argv = [f"{sandbox}/autograder/child/main.py", json.dumps(cfg)]
        import types

        sys.modules["__main__"] = types.ModuleType("__main__")  # not the zygote's module
        sys.modules["__main__"].__file__ = sys.argv[0]
        # In the fork, once the runtime's path is /sandbox (above): the child's modules come from there.
        from autograder.child import main

        # The sandbox is built: tell the judge (before any student code, on a pipe that
        # is closed before it runs), so a failure before here is never the student's.
        os.write(setup_fd, b"ok")
        os.close(setup_fd)
        main.run(cfg)

    forkserver.run_then_exit(body)


def preload() -> list[str]:
    # Not at the top: this file runs as a script, and the child's runtime is imported
    # only once the zygote's path is set (RUNTIME above).
    from autograder.child import main

    main.preload()
    import torch

    if torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialised while preloading")
    if len(os.listdir("/proc/self/task")) != 1:
        raise RuntimeError("a thread was started while preloading: forks would not be safe")
    return forkserver.loaded_files(RUNTIME)


def main() -> None:
    if _SYS_PIVOT_ROOT is None:
        raise SystemExit(f"no pivot_root number for {os.uname().machine}")
    files = preload()
    root = os.path.join(os.path.dirname(sys.argv[1]), "root")
    os.makedirs(root, mode=0o700, exist_ok=True)
    forkserver.serve(sys.argv[1], lambda req, fds: become_child(dict(req, root=root), fds), {"files": files})


if __name__ == "__main__":
    main()
