"""The local runner: one sandboxed child process per submission.

Strong mode (bubblewrap): new network, PID, IPC and UTS namespaces (and a user
namespace when not root), a private /tmp, a root file system made only of the
system and Python directories, read-only, and the child's runtime; no repository,
hidden suite or reference is mounted. When started as root the child drops to an
unprivileged uid of its own before loading student code, so RLIMIT_NPROC counts
only its processes. Weak mode (no usable bubblewrap): the same limits, uid, clean
environment and private working directory, but the file system and network are the
host's; results say so.
"""

from __future__ import annotations

import functools
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from autograder import settings
from autograder.protocol.framing import FrameTimeout
from autograder.protocol.shm import ReplyFile
from autograder.sandbox import forkserver

from . import seccomp
from .memwatch import MALLOC_TUNABLES, CpuWatch, MemoryWatch, process_tree
from .runner import Runner, SandboxSpec

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # .../autograder
SANDBOX_ROOT = "/sandbox"
XFER_ROOT = "/xfer"  # where the child finds the judge's shared-memory files


@functools.cache
def bwrap_path() -> str | None:
    """bubblewrap, if present and able to build a sandbox here."""
    exe = shutil.which("bwrap")
    if exe is None:
        return None
    args = [exe, "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "--die-with-parent"]
    if os.getuid() != 0:
        args.append("--unshare-user")
    try:
        ok = subprocess.run([*args, "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return exe if ok else None


def sandbox_report() -> dict:
    """What isolation this machine gives, for results and `dlopt doctor`."""
    if bwrap_path():
        return {"kind": "bubblewrap", "strong": True,
                "namespaces": ["net", "pid", "ipc", "uts", "mount"] + ([] if os.getuid() == 0 else ["user"]),
                "unprivileged_uid": True}
    return {"kind": "rlimits-only", "strong": False,
            "reason": "bubblewrap is missing or cannot create namespaces here; "
                      "install Debian's `bubblewrap` for network and file-system isolation",
            "unprivileged_uid": os.getuid() == 0}


def _python_world_readable() -> bool:
    """Can any user reach this Python's files (every parent directory searchable by others)?"""
    for prefix in {sys.base_prefix, sys.prefix}:
        for p in [Path(prefix), *Path(prefix).parents]:
            try:
                if not os.stat(p).st_mode & 0o001:
                    return False
            except OSError:
                return False
    return True


UID_RANGE = range(61000, 64000)
# Shared by every judge on the machine (each judge has a TMPDIR of its own).
def uid_lock_dir() -> Path:
    """Where parallel judges (and their zygotes) take their sandbox uids' locks."""
    return settings.current().shared_tmp / "dlopt-sandbox-uids"


def _claim_uid() -> tuple[int, int | None]:
    """A sandbox uid no other live child holds (a flock per uid, across processes), so
    RLIMIT_NPROC and the leftover-process check see one child's processes only."""
    import fcntl

    locks = uid_lock_dir()
    locks.mkdir(mode=0o700, exist_ok=True)
    for uid in random.sample(UID_RANGE, 64):
        fd = os.open(locks / str(uid), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return uid, fd
        except OSError:
            os.close(fd)
    return random.choice(UID_RANGE), None  # 64 busy draws: share one rather than fail


def _grow_pipe(fd: int) -> None:
    """1 MiB pipes (Linux's default unprivileged maximum): fewer wakeups per large tensor."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except OSError:
        pass


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                pass
    return count


LOOPBACK_HEADER_BYTES = 66  # Ethernet 14 + IPv4 20 + TCP 32 (with timestamps), per packet on lo


def loopback_payload_bytes(dev: Path) -> int | None:
    """Bytes sent on `lo` by the kernel's count, less the headers of each packet: what
    the sockets sent, not how many packets it took (connection retries, acknowledgements
    and the machine's load change the second, not the first)."""
    try:
        for line in dev.read_text().splitlines():
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                fields = rest.split()
                return int(fields[8]) - LOOPBACK_HEADER_BYTES * int(fields[9])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _netns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _tree_pids(root: int) -> list[int]:
    return process_tree(root)


@dataclass
class ChildHandle:
    proc: subprocess.Popen
    req_fd: int
    rep_fd: int
    log_path: Path
    staging: Path
    uid: int | None = None  # the unprivileged uid the child runs as, when it dropped one
    uid_lock: int | None = None  # fd holding that uid's lock, released at cleanup
    memory: MemoryWatch | None = None  # the kernel's peak-memory measure, when watched
    cpu: CpuWatch | None = None  # the kernel's count of the child's CPU time
    xfer: Path | None = None  # folder of shared-memory files the child maps (protocol/channel.py)
    _netns_pid: int | None = None  # a process inside the child's network namespace (loopback_tx_bytes)
    _reply: object = None  # the file large replies come back through (protocol/shm.py), made on first use

    def shared_reply(self):
        """The reply file in the child's shared folder (None where there is none)."""
        if self._reply is None and self.xfer is not None:
            try:
                self._reply = ReplyFile(self.xfer)
            except OSError:
                self._reply = False
        return self._reply or None

    def cpu_seconds(self) -> float | None:
        return self.cpu.seconds() if self.cpu is not None else None

    def await_reply(self, started: float, cpu_start: float | None, cpu_cap: float, wall_cap: float,
                    idle=None, wait_left: float = float("inf")) -> None:
        """Wait until the child starts its reply, within the call's limits (the judge sets
        them: sandbox/runner.py's table): FrameTimeout (cpu=True) once the child has used
        `cpu_cap` seconds of CPU since `cpu_start`, by the kernel's count; FrameTimeout
        (waited=True) once it has spent `wait_left` seconds neither running nor waiting for
        a CPU (`idle()`); FrameTimeout once the wall clock reaches `wall_cap`."""
        while True:
            now = time.monotonic()
            if now >= wall_cap:
                raise FrameTimeout()
            if select.select([self.rep_fd], [], [], min(0.25, wall_cap - now))[0]:
                return
            if idle is not None and now - started >= wait_left and idle() >= wait_left:
                e = FrameTimeout()
                e.waited = True
                raise e
            if cpu_start is not None:
                used = (self.cpu_seconds() or 0.0) - cpu_start
                if used >= cpu_cap:
                    e = FrameTimeout()
                    e.cpu = True
                    raise e
            elif time.monotonic() - started >= cpu_cap:  # no CPU count here: the wall clock
                e = FrameTimeout()
                e.cpu = True
                raise e

    def run_queue_seconds(self) -> float | None:
        """Time the child's threads waited for a CPU (the host's load), by the kernel."""
        return self.cpu.run_queue_seconds() if self.cpu is not None else None

    def loopback_tx_bytes(self) -> int | None:
        """Bytes sent on the loopback of the child's own network namespace, by the kernel's
        count (/proc/PID/net/dev of a process inside it), read from outside the child.
        None where the child shares the host's network (the weak sandbox)."""
        own = _netns(os.getpid())
        # The process found inside the namespace last time, while it lives there (the walk
        # of /proc that finds it costs a read per process on the machine: once per child,
        # not twice per call).
        cached = self._netns_pid
        if cached is not None and self.alive():
            ns = _netns(cached)
            if ns is not None and ns != own:
                return self._loopback_of(cached)
        self._netns_pid = None
        for pid in _tree_pids(self.proc.pid):
            ns = _netns(pid)
            if ns is not None and ns != own:
                self._netns_pid = pid
                return self._loopback_of(pid)
        return None

    @staticmethod
    def _loopback_of(pid: int) -> int | None:
        try:
            return loopback_payload_bytes(Path(f"/proc/{pid}/net/dev"))
        except (OSError, ValueError, IndexError):
            return None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Kill the child and everything it started (its whole process group / PID namespace)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in {self.req_fd, self.rep_fd} - {-1}:
            try:
                os.close(fd)
            except OSError:
                pass
        self.req_fd = self.rep_fd = -1

    def log_tail(self, limit: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - limit))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.kill()
        if self._reply:
            self._reply.close()
            self._reply = None
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.memory is not None:
            self.memory.close()
        if self.cpu is not None:
            self.cpu.close()
        if self.uid_lock is not None:
            os.close(self.uid_lock)  # closing the fd releases the flock
            self.uid_lock = None


_ZYGOTE_FAILED: str | None = None  # why forked sandboxes do not work on this machine, once seen
SETUP_SECONDS = 60.0


def _use_zygote() -> bool:
    return settings.current().zygote and _ZYGOTE_FAILED is None


def _read_setup(fd: int, seconds: float) -> bool:
    import select

    try:
        if not select.select([fd], [], [], seconds)[0]:
            return False
        return os.read(fd, 2) == b"ok"
    except OSError:
        return False
    finally:
        os.close(fd)


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()[-300:] or "no output"
    except OSError:
        return "no output"


def _child_zygote(env: dict):
    return forkserver.Client([sys.executable, "-I", "-B", str(PACKAGE_ROOT / "sandbox" / "child_zygote.py")], env,
                             "dlopt-czygote-")


_OWN_CHILD_ZYGOTES = None


def own_child_zygote(env: dict):
    """This process's child zygote for `env` (started on first use)."""
    global _OWN_CHILD_ZYGOTES

    if _OWN_CHILD_ZYGOTES is None:
        _OWN_CHILD_ZYGOTES = forkserver.Shared(_child_zygote)
    return _OWN_CHILD_ZYGOTES.get(tuple(sorted(env.items())), env)


_REMOTE: dict = {}


def child_zygote(env: dict):
    """Where children for `env` fork from: in a judge forked from the judge zygote, the
    child zygote that zygote keeps for all its judges; elsewhere one of this process."""
    judge_zygote = settings.current().judge_zygote
    if not judge_zygote:
        return own_child_zygote(env)
    key = (judge_zygote, tuple(sorted(env.items())))
    if key not in _REMOTE:
        answer = forkserver.Endpoint(judge_zygote).ask({"op": "child-zygote", "env": env})
        _REMOTE[key] = forkserver.Endpoint(str(answer["path"]))
    return _REMOTE[key]


class LocalRunner(Runner):
    """Children in bubblewrap's namespaces (or the child zygote's forks, which build the
    same sandbox from bwrap's argument list), with the limits of sandbox/runner.py."""

    name = "local"

    def __init__(self, spec: SandboxSpec):
        super().__init__(spec)
        self.bwrap = None if spec.weak else bwrap_path()
        self.report = sandbox_report() if not spec.weak else {
            "kind": "rlimits-only", "strong": False, "reason": "weak sandbox requested",
            "unprivileged_uid": os.getuid() == 0}

    # -- staging: the only project files the child can see --------------------------
    def _stage(self) -> Path:
        staging = Path(tempfile.mkdtemp(prefix="dlopt-sbx-"))
        os.chmod(staging, 0o755)
        runtime = staging / "runtime"
        pkg = runtime / "autograder"
        pkg.mkdir(parents=True)
        shutil.copy(PACKAGE_ROOT / "__init__.py", pkg / "__init__.py")
        for sub in ("protocol", "child"):
            shutil.copytree(PACKAGE_ROOT / sub, pkg / sub,
                            ignore=shutil.ignore_patterns("__pycache__"))
        if self.harness is not None:
            shutil.copy(self.harness, runtime / "harness.py")
        work = staging / "work"
        work.mkdir()
        for p in [staging, *staging.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        # Shared-memory files of calls whose inputs the judge reads back (inputs unchanged):
        # the child may open the judge's files by name, not list or create any.
        (staging / "xfer").mkdir(mode=0o711)
        os.chmod(staging / "xfer", 0o711)
        return staging

    def _bwrap_args(self, staging: Path, uid: int | None) -> list[str]:
        args = [self.bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
        if os.getuid() != 0:
            args.append("--unshare-user")
        for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64"):
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        for f in ("/etc/ld.so.cache", "/etc/localtime", "/etc/nsswitch.conf"):
            if os.path.exists(f):
                args += ["--ro-bind", f, f]
        # /tmp first: binds below it (a Python installed under /tmp) must go on top of it.
        size = str(self.limits.tmp_bytes())
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
        # The Python that runs the child, and its packages; never the repository itself.
        made: set[str] = set()
        for prefix in sorted({sys.base_prefix, sys.prefix, os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}):
            if prefix.startswith("/usr"):
                continue
            # bwrap makes missing parents 0700: make them 0755 so the dropped uid can pass.
            for parent in reversed(Path(prefix).parents):
                if str(parent) not in ("/", "/tmp") and str(parent) not in made:
                    made.add(str(parent))
                    args += ["--perms", "0755", "--dir", str(parent)]
            args += ["--ro-bind", prefix, prefix]
        for hidden in self._installed_private_packages():
            args += ["--tmpfs", hidden]
        args += ["--ro-bind", str(staging / "runtime"), SANDBOX_ROOT, "--bind", str(staging / "xfer"), XFER_ROOT,
                 "--chdir", "/tmp"]
        if self.gpu:
            for dev in sorted(Path("/dev").glob("nvidia*")):
                args += ["--dev-bind", str(dev), str(dev)]
            # NCCL (ranks of a multi-GPU assignment) keeps its buffers in /dev/shm and
            # reads the PCI topology from /sys: a private shm and a read-only /sys.
            args += ["--perms", "1777", "--size", size, "--tmpfs", "/dev/shm", "--ro-bind-try", "/sys", "/sys"]
        return args

    @staticmethod
    def _installed_private_packages() -> list[str]:
        """A non-editable install puts `reference` beside torch; hide it (and the judge)."""
        import sysconfig

        site = sysconfig.get_paths()["purelib"]
        return [str(Path(site) / name) for name in ("reference", "assignments")
                if (Path(site) / name).is_dir()]

    def _env(self) -> dict:
        # USER/LOGNAME: the sandbox uid has no passwd entry, and getpass.getuser() (which
        # torch calls when CUDA compiles kernels) reads these before it asks the system.
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
               "USER": "student", "LOGNAME": "student",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "TRITON_CACHE_DIR": "/tmp/.triton"}
        env.update(settings.passthrough(("CUDA_VISIBLE_DEVICES", "TRITON_INTERPRET", "NCCL_NVLS_ENABLE",
                                         "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS",
                                         "LD_LIBRARY_PATH") if self.gpu else ("TRITON_INTERPRET",)))
        if self.spec.device == "cpu":
            # Triton has no CPU backend: student kernels run in its interpreter there.
            env["TRITON_INTERPRET"] = "1"
        if self.gpu:
            # torch.cuda.is_available() asks NVML instead of initialising CUDA, so the
            # child may still fork processes that use the GPU (NCCL ranks).
            env["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
        if self.limits.watch_memory:
            env["GLIBC_TUNABLES"] = MALLOC_TUNABLES  # see memwatch: freed memory goes back
        return env

    def _start_forked(self, cmd: list[str], staging: Path, cfg: dict, uid: int | None, uid_lock: int | None,
                      log_path: Path, pipe_ends: list[int], ours: tuple[int, int]) -> ChildHandle | None:
        """The child as a fork of the child zygote (sandbox/child_zygote.py), which builds the
        sandbox these bwrap arguments describe for itself; None when there is no zygote
        (the caller starts bwrap instead)."""
        split = cmd.index("--")
        args = cmd[1:split]
        env = self._env()
        try:
            client = child_zygote(env)
        except forkserver.ServerLost as e:
            self.report["zygote"] = f"none: {str(e)[:200]}"
            return None
        memory = MemoryWatch(limit_bytes=self.limits.memory_mb << 20)
        self.report["memory_limit"] = memory.limited
        cpu = CpuWatch(memory.group if memory.method == "cgroup-v2" else None)
        self.report["cpu_clock"] = cpu.method
        groups = [str(g) for w, kind in ((memory, "cgroup"), (cpu, "cgroup-v1"))
                  if (g := getattr(w, "group", None)) is not None and w.method.startswith(kind)]
        bpf = seccomp.program()
        request = {"args": args, "cfg": {k: v for k, v in cfg.items() if k not in ("req_fd", "rep_fd")},
                   "env": env, "seccomp": bpf.hex() if bpf else None, "cgroups": sorted(set(groups)),
                   "sandbox_root": SANDBOX_ROOT}
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        setup_r, setup_w = os.pipe()
        try:
            try:
                fork = client.start(request, [*pipe_ends, log, setup_w])
            except forkserver.ServerLost:
                _REMOTE.clear()  # that zygote ended: ask for the current one, once
                fork = child_zygote(env).start(request, [*pipe_ends, log, setup_w])
        except forkserver.ServerLost as e:
            memory.close()
            cpu.close()
            os.close(setup_r)
            self.report["zygote"] = f"none: {str(e)[:200]}"
            return None
        finally:
            os.close(log)
            os.close(setup_w)
        # The fork says "ok" once its sandbox stands, before any student code (which never
        # holds this pipe): a fork that fails before is this machine's problem, not the
        # student's, and the child starts under bubblewrap instead, now and from now on.
        ok = _read_setup(setup_r, SETUP_SECONDS)
        if not ok:
            fork.kill()
            fork.wait(10)
            memory.close()
            cpu.close()
            global _ZYGOTE_FAILED
            _ZYGOTE_FAILED = f"the forked sandbox could not be built here: {_tail(log_path)}"
            self.report["zygote"] = f"none: {_ZYGOTE_FAILED}"
            return None
        for fd in pipe_ends:
            os.close(fd)
        self.report["zygote"] = "child zygote"
        memory.attach(fork.pid)
        cpu.attach(fork.pid)
        if self.limits.watch_memory:
            self.report["memory_watch"] = memory.method
        return ChildHandle(fork, *ours, log_path, staging, uid, uid_lock, memory, cpu, staging / "xfer")

    def start(self) -> ChildHandle:
        staging = self._stage()
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        for fd in (req_w, rep_w):
            _grow_pipe(fd)
        strong = self.bwrap is not None
        # As root the child drops to a uid of its own (so RLIMIT_NPROC binds); in the weak
        # mode that needs a Python the uid can read (not one under /root, say).
        can_drop = os.getuid() == 0 and (strong or _python_world_readable())
        uid, uid_lock = _claim_uid() if can_drop else (None, None)
        self.report["unprivileged_uid"] = uid is not None
        limits = self.limits.rlimits(self.gpu)
        if uid is None:
            # RLIMIT_NPROC counts every process of the user: leave room for the ones it has.
            limits["processes"] = _processes_of(os.getuid()) + self.limits.processes
        root = SANDBOX_ROOT if strong else str(staging / "runtime")
        workdir = "/tmp" if strong else str(staging / "work")
        if uid is not None and not strong:
            os.chown(staging / "work", uid, uid)
        cfg = self.spec.child_config(uid=uid, workdir=workdir, xfer=XFER_ROOT if strong else str(staging / "xfer"),
                                     runtime=root, rlimits=limits, req_fd=req_r, rep_fd=rep_w)
        cmd = [sys.executable, "-I", "-B", f"{root}/autograder/child/main.py", json.dumps(cfg)]
        pass_fds = [req_r, rep_w]
        filter_fd = None
        if strong:
            extra = []
            bpf = seccomp.program()
            if bpf is not None:
                # No namespaces or mounts from inside (see seccomp.py): bwrap loads it last.
                (staging / "seccomp.bpf").write_bytes(bpf)
                filter_fd = os.open(staging / "seccomp.bpf", os.O_RDONLY)
                pass_fds.append(filter_fd)
                extra = ["--seccomp", str(filter_fd)]
            self.report["seccomp"] = bpf is not None
            cmd = [*self._bwrap_args(staging, uid), *extra, "--", *cmd]
        log_path = staging / "log.txt"
        if strong and _use_zygote():
            forked = self._start_forked(cmd, staging, cfg, uid, uid_lock, log_path, [req_r, rep_w], (req_w, rep_r))
            if forked is not None:
                if filter_fd is not None:
                    os.close(filter_fd)
                return forked
        # A memory cgroup of its own for every child: the kernel's limit on everything it
        # touches (heap, tmpfs files in its /tmp, page cache), and the peak measure of
        # watched calls. Without one, RLIMIT_AS (CPU runs) is the only bound.
        memory = MemoryWatch(limit_bytes=self.limits.memory_mb << 20)
        self.report["memory_limit"] = memory.limited
        cpu = CpuWatch(memory.group if memory.method == "cgroup-v2" else None)
        self.report["cpu_clock"] = cpu.method

        def preexec() -> None:
            memory.preexec()
            cpu.preexec()

        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                pass_fds=tuple(pass_fds), env=self._env(), start_new_session=True,
                cwd=staging / "work", preexec_fn=preexec)
        os.close(req_r)
        os.close(rep_w)
        if filter_fd is not None:
            os.close(filter_fd)
        memory.attach(proc.pid)
        cpu.attach(proc.pid)
        if self.limits.watch_memory:
            self.report["memory_watch"] = memory.method
        return ChildHandle(proc, req_w, rep_r, log_path, staging, uid, uid_lock, memory, cpu, staging / "xfer")
