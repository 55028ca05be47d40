"""Runners that start the sandboxed child: `local` (bubblewrap namespaces where the
machine allows, resource limits always). The judge talks to whatever they start
through `ChildHandle`."""

import os

from .limits import Limits
from .local import ChildHandle, LocalRunner, sandbox_report

__all__ = ["ChildHandle", "Limits", "LocalRunner", "make_runner", "sandbox_report"]


def make_runner(limits: Limits, **kw):
    """The runner this process grades with: `DLOPT_RUNNER` = local (default) or docker."""
    kind = os.environ.get("DLOPT_RUNNER", "local")
    if kind == "docker":
        from .docker import DockerRunner

        return DockerRunner(limits, **kw)
    if kind != "local":
        raise ValueError(f"DLOPT_RUNNER={kind!r}: the runners are local and docker")
    return LocalRunner(limits, **kw)
