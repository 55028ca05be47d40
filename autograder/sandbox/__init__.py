"""Starting sandboxed children: the runner interface and its limits (runner.py), the
local runner (local.py: bubblewrap, the child zygote's forks, the weak mode), the docker
runner (docker.py, its pool: pool.py), the fork server and the two zygotes
(forkserver.py, judge_zygote.py, child_zygote.py), and the kernel's measures of a child
(memwatch.py) and its seccomp filter (seccomp.py). The judge talks to what a runner
starts through `ChildHandle`.

The names below are loaded on first use (PEP 562): the child zygote imports
`sandbox.forkserver` alone, and every sandboxed child inherits its modules, so importing
this package must not bring the runners into the child's memory.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .limits import Limits
    from .local import ChildHandle, LocalRunner, sandbox_report
    from .runner import Runner, SandboxSpec

__all__ = ["ChildHandle", "Limits", "LocalRunner", "Runner", "SandboxSpec", "make_runner", "sandbox_report"]
_WHERE = {"Limits": "limits", "ChildHandle": "local", "LocalRunner": "local", "sandbox_report": "local",
          "Runner": "runner", "SandboxSpec": "runner"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_runner(kind: str, spec: SandboxSpec) -> Runner:
    """A runner of `kind` (local or docker: the job's, or the engine's setting)."""
    if kind == "docker":
        from .docker import DockerRunner  # the docker SDK: imported only where it is used

        return DockerRunner(spec)
    if kind != "local":
        raise ValueError(f"runner {kind!r}: the runners are local and docker")
    from .local import LocalRunner  # see the module's docstring

    return LocalRunner(spec)
