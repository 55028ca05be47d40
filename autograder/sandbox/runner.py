"""The runner interface: `Runner(spec).start() -> ChildHandle`, one child per call.

A `SandboxSpec` is everything a child is started with (the one form of the runner's
settings: made from a `GradingJob`, or by `StudentCode` from its arguments); the two
runners, `LocalRunner` (sandbox/local.py: bubblewrap, or the child zygote's forks that
build the same sandbox) and `DockerRunner` (sandbox/docker.py: a container per child,
its pool in sandbox/pool.py), implement `start`. The judge talks to what they start
through `ChildHandle`'s pipes and the channel (protocol/channel.py). A runner's `report`
says what the child got (kind, strong or weak, memory and CPU measures, exec lock...),
and the result keeps it.

Every limit a child runs under, and where it is applied:

| limit | local runner | docker runner | from |
| --- | --- | --- | --- |
| memory | a memory cgroup per child (memwatch.MemoryWatch); RLIMIT_AS on the CPU path | the container's memory limit | `limits.memory_mb` |
| CPU time per call and per submission | `ChildHandle.await_reply` reads the child's cgroup CPU count (CpuWatch) and stops the call at the budget the judge gives it | the same, from the container's cgroup | `limits.call_seconds`, `submission_seconds` |
| CPU time of the child | RLIMIT_CPU (child/main.py) | the same | `limits.cpu_seconds` |
| waiting (neither running nor in the run queue) | `ChildHandle.await_reply`, from cgroup CPU and `schedstat` (memwatch.CpuWatch), at the budget the judge gives it | the same | `limits.wait_seconds[_gpu]` |
| wall clock | `ChildHandle.await_reply`: a backstop the judge sets at `wall_factor` x the CPU limits | the same | `limits.wall_factor` |
| processes and threads | RLIMIT_NPROC of a uid of its own | the container's pids limit | `limits.processes` |
| file size, open files | RLIMIT_FSIZE, RLIMIT_NOFILE (child/main.py) | the same | `limits.file_mb`, `open_files` |
| `/tmp` (and a GPU's `/dev/shm`) | a sized tmpfs of its own | the container's tmpfs | `limits.tmp_bytes()` |
| network | a network namespace of its own (loopback only) | `network_mode=none` | always |
| new programs | seccomp refuses execve (CPU); Landlock allow-list (GPU): child/execlock.py | the same, inside the container | always |
| namespaces, mounts | a seccomp filter (sandbox/seccomp.py) | the same, as the container's profile | always |
| replies | the judge's budgets (protocol/channel.py) | the same | `limits.reply_mb`, `reply_header_kb` |

The weak sandbox (`spec.weak`, or no usable bubblewrap) keeps the resource limits and the
uid, not the namespaces: its report says `strong: false`, and the result shows it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .limits import Limits

if TYPE_CHECKING:
    from autograder.judge.job import GradingJob


@dataclass(frozen=True)
class SandboxSpec:
    limits: Limits
    device: str = "cpu"
    forbidden: tuple[str, ...] = ()      # the tracer's patterns (child/forbidden.py)
    guard: dict | None = None            # what the child makes raise before any student code
    harness: Path | None = None          # the assignment's trusted harness, copied into the runtime
    weak: bool = False                   # the weak sandbox by request (tests of the engine)

    @property
    def gpu(self) -> bool:
        return self.device != "cpu"

    @classmethod
    def for_job(cls, job: GradingJob) -> SandboxSpec:
        return cls(limits=job.limits, device=job.device, forbidden=tuple(job.forbidden), guard=job.guard,
                   harness=Path(job.harness) if job.harness else None, weak=job.weak)

    def child_config(self, *, uid: int | None, workdir: str, xfer: str, runtime: str, rlimits: dict,
                     req_fd: int | None = None, rep_fd: int | None = None, socket: str | None = None) -> dict:
        """The configuration the child starts with (child/main.py reads it): built here only."""
        cfg = {"uid": uid, "workdir": workdir, "limits": rlimits, "forbidden": list(self.forbidden),
               "guard": self.guard, "xfer": xfer, "device": self.device, "watch_memory": self.limits.watch_memory,
               "harness": f"{runtime}/harness.py" if self.harness is not None else None}
        if socket is not None:
            cfg["socket"] = socket
        else:
            cfg |= {"req_fd": req_fd, "rep_fd": rep_fd}
        return cfg


class Runner(ABC):
    """Starts sandboxed children for one spec. `report`: what they get."""

    name = "runner"
    report: dict

    def __init__(self, spec: SandboxSpec):
        self.spec = spec
        self.limits = spec.limits

    @property
    def gpu(self) -> bool:
        return self.spec.gpu

    @property
    def device(self) -> str:
        return self.spec.device

    @property
    def harness(self) -> Path | None:
        return self.spec.harness

    @abstractmethod
    def start(self):  # -> ChildHandle
        """A new child, sandboxed by this runner, its pipes ready for the channel."""
