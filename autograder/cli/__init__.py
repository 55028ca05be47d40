"""The command lines: `dlopt` (commands.py: TAs and operators grade, check, release, audit;
students test their notebook) and the student client's commands (client.py: login,
submit, status against a running server)."""

from .commands import main

__all__ = ["main"]
