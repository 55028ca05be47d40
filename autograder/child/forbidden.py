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
        """(graded function, line) when the forbidden routine was called directly from the
        submission's code; None when torch or the harness called it (zero_grad, say)."""
        direct = sys._getframe(3)  # _caller <- _note <- the wrapper <- its caller
        if direct.f_code.co_filename != self.student_file:
            return None
        line, outermost, frame = direct.f_lineno, direct, direct
        while frame is not None:
            if frame.f_code.co_filename == self.student_file:
                outermost = frame
            frame = frame.f_back
        # The entry point the judge called: a function, or the class of a method (AdamW.step).
        name = getattr(outermost.f_code, "co_qualname", outermost.f_code.co_name).split(".")[0]
        return name, line

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
            if pattern.startswith("*."):
                continue  # a method name on any object: the static check reads those
            owner, parts = self._resolve_owner(pattern)
            if owner is None:
                continue
            attr_pattern = parts[-1]
            prefix = ".".join(parts[:-1])
            for attr in list(vars(owner)):
                if fnmatch.fnmatchcase(attr, attr_pattern):
                    self._wrap(owner, attr, f"{prefix}.{attr}")

    @staticmethod
    def _resolve_owner(pattern: str):
        """The module or class that holds the last part of `pattern` (torch.Tensor.backward)."""
        parts = pattern.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                owner = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for name in parts[cut:-1]:
                owner = getattr(owner, name, None)
                if owner is None:
                    return None, parts
            return owner, parts
        return None, parts

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
