"""Starting sandboxed children: the runner interface and its limits (runner.py), the
local runner (local.py: bubblewrap, the child zygote's forks, the weak mode), the docker
runner (docker.py, its pool: pool.py), the fork server and the two zygotes
(forkserver.py, judge_zygote.py, child_zygote.py), and the kernel's measures of a child
(memwatch.py) and its seccomp filter (seccomp.py). The judge talks to what a runner
starts through `ChildHandle`."""

from .limits import Limits
from .local import ChildHandle, LocalRunner, sandbox_report
from .runner import Runner, SandboxSpec

__all__ = ["ChildHandle", "Limits", "LocalRunner", "Runner", "SandboxSpec", "make_runner", "sandbox_report"]


def make_runner(kind: str, spec: SandboxSpec) -> Runner:
    """A runner of `kind` (local or docker: the job's, or the engine's setting)."""
    if kind == "docker":
        from .docker import DockerRunner  # the docker SDK: imported only where it is used

        return DockerRunner(spec)
    if kind != "local":
        raise ValueError(f"runner {kind!r}: the runners are local and docker")
    return LocalRunner(spec)
