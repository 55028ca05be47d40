"""Peak memory of a sandboxed child, measured by the kernel from outside its process.

Assignments with a memory rule (FlashAttention's tiles) need a measure the student
cannot switch off from inside their own process. The kernel keeps one for us:
- `cgroup-v1`: the child is started inside a memory cgroup of its own;
  `memory.max_usage_in_bytes` is the high-water mark of everything it and its
  subprocesses touch (heap, mmaps, tmpfs files), resettable by writing 0;
- `cgroup-v2`: the same with `memory.peak` (resettable on Linux >= 6.12);
- `proc`: no writable cgroup: the sum over the child's process tree of `VmHWM`
  (peak resident set), reset through `/proc/PID/clear_refs`; processes that exit
  during the call are not seen, so this is the weakest of the three.
A watched child is also started with glibc's malloc thresholds fixed
(`GLIBC_TUNABLES`), so every allocation above 128 KiB is its own mmap that returns to
the kernel when freed: memory freed by earlier calls cannot hide a later peak.
`method` says which measure is in use ("none" where nothing works, e.g. an
unprivileged user without delegated cgroups and a child under another uid).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

CGROUP_V1 = Path("/sys/fs/cgroup/memory")
CGROUP_V2 = Path("/sys/fs/cgroup")
GROUP_PARENT = "dlopt-sandbox"
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072"


def _writable_dir(p: Path) -> bool:
    return p.is_dir() and os.access(p, os.W_OK)


def _v2_with_memory() -> Path | None:
    """The cgroup v2 directory of this process, if it can host children with memory."""
    try:
        line = next(ln for ln in Path("/proc/self/cgroup").read_text().splitlines() if ln.startswith("0::"))
    except (OSError, StopIteration):
        return None
    own = CGROUP_V2 / line[3:].lstrip("/")
    controllers = own / "cgroup.subtree_control"
    try:
        if "memory" in controllers.read_text().split() and _writable_dir(own):
            return own
    except OSError:
        return None
    return None


def _remove_group(group: Path) -> None:
    """rmdir a cgroup; it succeeds once the child's processes are gone (they die with it)."""
    import time

    for _ in range(50):
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def _remove_stale(parent: Path) -> None:
    """Groups left by judges that died without cleaning up (named child-<judge pid>-...)."""
    for group in parent.glob("child-*"):
        try:
            pid = int(group.name.split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            try:
                group.rmdir()  # only empty groups can go; a live child keeps its own
            except OSError:
                pass
        except (ValueError, IndexError, PermissionError):
            pass


def process_tree(root_pid: int | None) -> list[int]:
    """`root_pid` and all its descendants, from /proc (empty for None)."""
    if root_pid is None:
        return []
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [root_pid]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack += children.get(pid, [])
    return out


class MemoryWatch:
    """One child's memory cgroup (or process tree). `prepare()` before the child starts,
    `attach(pid)` in the child before exec (`preexec`), `reset()` before a call,
    `peak_bytes()` after it, `close()` when the child is gone."""

    def __init__(self, limit_bytes: int | None = None):
        self.method = "none"
        self.group: Path | None = None
        self.root_pid: int | None = None
        self._baseline: dict[int, int] = {}
        self.limited = False  # a hard memory limit is set on the group (memory.limit_in_bytes / memory.max)
        self._prepare()
        if limit_bytes and self.group is not None:
            self._limit(limit_bytes)

    def _limit(self, limit_bytes: int) -> None:
        """The kernel's hard limit on the group: tmpfs files and page cache count too, and
        a child above it is killed by the kernel, not asked to stop."""
        files = ([("memory.limit_in_bytes", limit_bytes), ("memory.memsw.limit_in_bytes", limit_bytes)]
                 if self.method == "cgroup-v1" else [("memory.max", limit_bytes), ("memory.swap.max", 0)])
        for name, value in files:
            try:
                (self.group / name).write_text(f"{value}\n")
                if name in ("memory.limit_in_bytes", "memory.max"):
                    self.limited = True
            except OSError:
                pass

    def _prepare(self) -> None:
        name = f"child-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if (CGROUP_V1 / "memory.max_usage_in_bytes").exists() and _writable_dir(CGROUP_V1):
            try:
                parent = CGROUP_V1 / GROUP_PARENT
                parent.mkdir(exist_ok=True)
                _remove_stale(parent)
                self.group = parent / name
                self.group.mkdir()
                self.method = "cgroup-v1"
                return
            except OSError:
                self.group = None
        v2 = _v2_with_memory()
        if v2 is not None:
            try:
                _remove_stale(v2)
                self.group = v2 / name
                self.group.mkdir()
                (self.group / "memory.peak").write_text("0\n")  # resettable? (Linux >= 6.12)
                self.method = "cgroup-v2"
                return
            except OSError:
                if self.group is not None and self.group.exists():
                    try:
                        self.group.rmdir()
                    except OSError:
                        pass
                self.group = None
        self.method = "proc" if os.path.exists("/proc/self/clear_refs") else "none"

    # -- in the child, between fork and exec -------------------------------------------
    def preexec(self) -> None:
        if self.group is not None and self.method.startswith("cgroup"):
            (self.group / "cgroup.procs").write_text(str(os.getpid()))

    def attach(self, pid: int) -> None:
        self.root_pid = pid

    def start_now(self) -> None:
        """Count from now on (a process that was started ahead: what it did before it was
        handed to a submission is not that submission's)."""
        self._base = self._total()

    # -- in the judge --------------------------------------------------------------------
    def _tree(self) -> list[int]:
        """The root pid and all its descendants (bubblewrap's, then the child's)."""
        return process_tree(self.root_pid)

    @staticmethod
    def _status_kb(pid: int, key: str) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    def reset(self) -> int | None:
        """Start a new measurement; returns the bytes in use now (None: no measure)."""
        try:
            if self.method == "cgroup-v1":
                (self.group / "memory.max_usage_in_bytes").write_text("0\n")
                return int((self.group / "memory.usage_in_bytes").read_text())
            if self.method == "cgroup-v2":
                (self.group / "memory.peak").write_text("0\n")
                return int((self.group / "memory.current").read_text())
            if self.method == "proc":
                self._baseline = {}
                for pid in self._tree():
                    try:
                        Path(f"/proc/{pid}/clear_refs").write_text("5\n")  # VmHWM := VmRSS
                    except OSError:
                        continue
                    self._baseline[pid] = self._status_kb(pid, "VmRSS") << 10
                return sum(self._baseline.values())
        except OSError:
            return None
        return None

    def peak_bytes(self) -> int | None:
        """The high-water mark since `reset()`, in bytes (None: no measure)."""
        try:
            if self.method == "cgroup-v1":
                return int((self.group / "memory.max_usage_in_bytes").read_text())
            if self.method == "cgroup-v2":
                return int((self.group / "memory.peak").read_text())
            if self.method == "proc":
                return sum(self._status_kb(pid, "VmHWM") << 10 for pid in self._tree())
        except (OSError, ValueError):
            return None
        return None

    def close(self) -> None:
        if self.group is not None:
            _remove_group(self.group)
        self.group = None


class ContainerMemoryWatch(MemoryWatch):
    """The same measure for a container the engine (Docker, Podman) made: its own memory
    cgroup, found from its first process's /proc/PID/cgroup, read and reset in place, never
    moved or removed; where that cgroup is not writable from here, the process tree's VmHWM."""

    def __init__(self, pid: int):
        self.method, self.group, self.root_pid, self._baseline = "none", None, pid, {}
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                group = CGROUP_V1 / path.lstrip("/")
                if (group / "memory.max_usage_in_bytes").exists() and os.access(group / "memory.max_usage_in_bytes", os.W_OK):
                    self.group, self.method = group, "cgroup-v1"
                    return
            if controllers == "" and line.startswith("0::"):
                group = CGROUP_V2 / path.lstrip("/")
                if (group / "memory.peak").exists():
                    try:
                        (group / "memory.peak").write_text("0\n")
                        self.group, self.method = group, "cgroup-v2"
                        return
                    except OSError:
                        pass
        if os.path.exists(f"/proc/{pid}/clear_refs"):
            self.method = "proc"

    def close(self) -> None:
        self.group = None  # the engine's cgroup: it goes with the container


CPUACCT_V1 = Path("/sys/fs/cgroup/cpuacct")


def _tree_cpu_seconds(root_pid: int | None) -> float:
    """CPU time of a process tree from /proc: each live process's user + system time and
    what its reaped children used (cutime, cstime)."""
    if root_pid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in process_tree(root_pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(fields[k]) for k in (11, 12, 13, 14))  # utime stime cutime cstime
        except (OSError, ValueError, IndexError):
            continue
    return total / tick


class CpuWatch:
    """The CPU time a child (and everything it starts) has used, by the kernel's count:
    a cpuacct cgroup of its own (v1), the cgroup v2 group's `cpu.stat`, or the process
    tree's times in /proc. Per-call and per-submission time limits count this, not the
    wall clock, so a grade does not depend on how busy the machine is."""

    def __init__(self, v2_group: Path | None = None, proc_only: bool = False):
        self.method = "proc"
        self.group: Path | None = None
        self.root_pid: int | None = None
        if proc_only:
            return
        if v2_group is not None and (v2_group / "cpu.stat").exists():
            self.group, self.method = v2_group, "cgroup-v2"
        elif (CPUACCT_V1 / "cpuacct.usage").exists() and _writable_dir(CPUACCT_V1):
            try:
                parent = CPUACCT_V1 / GROUP_PARENT
                parent.mkdir(exist_ok=True)
                _remove_stale(parent)
                self.group = parent / f"child-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                self.group.mkdir()
                self.method = "cgroup-v1"
            except OSError:
                self.group = None

    def preexec(self) -> None:
        if self.method == "cgroup-v1" and self.group is not None:
            (self.group / "cgroup.procs").write_text(str(os.getpid()))

    def attach(self, pid: int) -> None:
        self.root_pid = pid

    def start_now(self) -> None:
        """Count from now on (a process that was started ahead: what it did before it was
        handed to a submission is not that submission's)."""
        self._base = self._total()

    _base = 0.0

    def seconds(self) -> float:
        return self._total() - self._base

    def _total(self) -> float:
        try:
            if self.method == "cgroup-v1":
                return int((self.group / "cpuacct.usage").read_text()) / 1e9
            if self.method == "cgroup-v2":
                for line in (self.group / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
        except (OSError, ValueError):
            pass
        return _tree_cpu_seconds(self.root_pid)

    def _threads(self) -> list[int]:
        """Every thread of the child's processes: the cgroup's own list (v1 `tasks`, v2
        `cgroup.threads`), or the process tree's `/proc/PID/task`."""
        if self.group is not None:
            for name in ("tasks", "cgroup.threads"):
                try:
                    return [int(t) for t in (self.group / name).read_text().split()]
                except (OSError, ValueError):
                    continue
        tids = []
        for pid in process_tree(self.root_pid):
            try:
                tids += [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                continue
        return tids

    _delays: dict | None = None

    def run_queue_seconds(self) -> float | None:
        """Time the child's threads spent runnable but waiting for a CPU (the scheduler's
        `run_delay`, /proc/TID/schedstat), summed over every thread seen so far: the part
        of its wall time the host's load, not the child, is to blame for. None where the
        kernel keeps no schedstat."""
        if self.root_pid is None:
            return None
        if self._delays is None:
            self._delays = {}
        seen = False
        for tid in self._threads():
            try:
                fields = Path(f"/proc/{tid}/schedstat").read_text().split()
                self._delays[tid] = int(fields[1]) / 1e9
                seen = True
            except (OSError, ValueError, IndexError):
                continue
        if not seen and not self._delays:
            return None
        return sum(self._delays.values())

    def close(self) -> None:
        if self.method == "cgroup-v1" and self.group is not None:
            _remove_group(self.group)
        self.group = None
