"""Resource limits of one submission's child process."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Limits:
    call_seconds: float = 20.0          # CPU time of one call of a student function (its whole process tree)
    submission_seconds: float = 240.0   # CPU time of the whole submission (all its children)
    wall_factor: float = 4.0            # wall-clock backstop: this many times the CPU limits (+10 s per call)
    wait_seconds: float = 30.0          # time the child may spend neither running nor waiting for a CPU (sleeping)
    # The same with student code on a GPU; 0: not charged there (the default), because a child
    # waiting for a GPU shared with other children is the host's load, which no kernel count
    # tells apart from sleeping (measured: 8 honest children on one H100 exceeded 30 s).
    wait_seconds_gpu: float = 0.0
    cpu_seconds: int = 300              # CPU time of the child (RLIMIT_CPU)
    memory_mb: int = 4096               # address space of the child (RLIMIT_AS); not on GPUs
    processes: int = 64                 # processes and threads of the sandbox uid (RLIMIT_NPROC)
    file_mb: int = 64                   # largest file the child may write (RLIMIT_FSIZE)
    open_files: int = 256
    watch_memory: bool = False          # measure each watched call's peak memory from outside
    tmp_mb: int = 0                     # size of the sandbox's private /tmp (0: a quarter of memory_mb, >= 64)
    reply_mb: int = 256                 # the most payload one reply may carry (or 4x the request's)
    reply_header_kb: int = 4096         # the most JSON header one reply may carry

    def tmp_bytes(self) -> int:
        """The size of the sandbox's /tmp (and a GPU sandbox's /dev/shm): files there are
        memory, so they are bounded as memory is."""
        return (self.tmp_mb or max(64, self.memory_mb // 4)) << 20

    def reply_budget(self, request_bytes: int) -> tuple[int, int]:
        """(header bytes, payload bytes) the judge accepts in reply to a request whose
        payload was `request_bytes`: what it holds for one reply is bounded by these."""
        return self.reply_header_kb << 10, max(self.reply_mb << 20, 4 * request_bytes)

    def rlimits(self, gpu: bool) -> dict:
        out = {
            "cpu_seconds": self.cpu_seconds,
            "file_bytes": self.file_mb << 20,
            "open_files": self.open_files,
            "processes": self.processes,
        }
        # CUDA maps far more address space than it uses: RLIMIT_AS would stop it at start.
        if not gpu:
            out["memory_bytes"] = self.memory_mb << 20
        return out

    def as_dict(self) -> dict:
        return asdict(self)
