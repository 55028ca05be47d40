"""Runners that start the sandboxed child: `local` (bubblewrap namespaces where the
machine allows, resource limits always). The judge talks to whatever they start
through `ChildHandle`."""

from .limits import Limits
from .local import ChildHandle, LocalRunner, sandbox_report

__all__ = ["ChildHandle", "Limits", "LocalRunner", "sandbox_report"]
