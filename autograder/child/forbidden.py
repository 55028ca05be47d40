"""Record calls of forbidden library routines made from the student's code.

A best-effort dynamic check beside the judge's static one: each forbidden routine is
replaced by a wrapper (a subclass for classes) that notes the call when it comes from
the submission's own frames. A student can undo this in their own process; that
hides only their own use, which the static check still reads in the source.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import sys
from typing import Any


class ForbiddenTracer:
    def __init__(self, patterns: list[str], student_file: str):
        self.patterns = patterns
        self.student_file = student_file
        self.found: list[dict] = []

    def _caller(self) -> tuple[str, int] | None:
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename == self.student_file:
                return frame.f_code.co_name, frame.f_lineno
            frame = frame.f_back
        return None

    def _note(self, api: str) -> None:
        where = self._caller()
        if where is not None:
            self.found.append({"api": api, "function": where[0], "line": where[1]})

    def take(self) -> list[dict]:
        found, self.found = self.found, []
        # One entry per (api, function): a loop of a million calls is one finding.
        seen, unique = set(), []
        for f in found:
            key = (f["api"], f["function"])
            if key not in seen:
                seen.add(key)
                unique.append(f)
        return unique

    def install(self) -> None:
        for pattern in self.patterns:
            module_name, _, attr_pattern = pattern.rpartition(".")
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            for attr in list(vars(module)):
                if fnmatch.fnmatchcase(attr, attr_pattern):
                    self._wrap(module, attr, f"{module_name}.{attr}")

    def _wrap(self, owner: Any, attr: str, api: str) -> None:
        original = getattr(owner, attr)
        tracer = self
        if isinstance(original, type):
            def __init__(self, *a, **k):
                tracer._note(api)
                original.__init__(self, *a, **k)

            wrapped = type(original.__name__, (original,), {"__init__": __init__,
                                                            "__module__": original.__module__})
        elif callable(original):
            @functools.wraps(original)
            def wrapped(*a, **k):
                tracer._note(api)
                return original(*a, **k)
        else:
            return
        try:
            setattr(owner, attr, wrapped)
        except (AttributeError, TypeError):
            pass
