"""Runners that start the sandboxed child: `local` (bubblewrap namespaces where the
machine allows, resource limits always) and `docker` (a container per child). The judge
talks to whatever they start through `ChildHandle`."""

from .limits import Limits
from .local import ChildHandle, LocalRunner, sandbox_report

__all__ = ["ChildHandle", "Limits", "LocalRunner", "make_runner", "sandbox_report"]


def make_runner(kind: str, limits: Limits, **kw):
    """A runner of `kind` (local or docker: the job's, or the engine's setting)."""
    if kind == "docker":
        from .docker import DockerRunner

        return DockerRunner(limits, **kw)
    if kind != "local":
        raise ValueError(f"runner {kind!r}: the runners are local and docker")
    return LocalRunner(limits, **kw)
