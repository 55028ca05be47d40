"""Watch the tensors a call allocates, from inside the child (for feedback).

A `TorchDispatchMode` sees every aten operation the student's code runs and notes
each output whose storage is new (not a view of, or an in-place write into, one of
its inputs): the largest such allocation, the operation that made it and the
student's line that asked for it. This half gives precise feedback; a student can
switch it off in their own process (the judge notices and says so), which is why the
judge also reads the kernel's peak-memory measure from outside
(`autograder.sandbox.memwatch`).
"""

from __future__ import annotations

import sys

import torch
from torch.utils._pytree import tree_flatten

try:
    from torch.utils._python_dispatch import TorchDispatchMode
except ImportError:  # pragma: no cover - very old torch
    TorchDispatchMode = object  # type: ignore[misc,assignment]


def _storage_ptrs(values) -> set[int]:
    out = set()
    for t in tree_flatten(values)[0]:
        if isinstance(t, torch.Tensor):
            try:
                out.add(t.untyped_storage().data_ptr())
            except (RuntimeError, NotImplementedError):
                pass
    return out


class AllocationWatch(TorchDispatchMode):
    def __init__(self, student_file: str):
        super().__init__()
        self.student_file = student_file
        self.largest: dict | None = None
        self.count = 0

    def _line(self) -> int | None:
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename == self.student_file:
                return frame.f_lineno
            frame = frame.f_back
        return None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = _storage_ptrs((args, kwargs))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            try:
                storage = t.untyped_storage()
                ptr, nbytes = storage.data_ptr(), storage.nbytes()
            except (RuntimeError, NotImplementedError):
                continue
            if ptr in inputs or nbytes == 0:
                continue
            self.count += 1
            elements = nbytes // max(1, t.element_size())
            if self.largest is None or elements > self.largest["elements"]:
                self.largest = {"elements": elements, "shape": list(t.shape), "dtype": str(t.dtype),
                                "op": str(getattr(func, "__name__", func)), "line": self._line()}
        return out

    def active(self) -> bool:
        """Is this watch still on the dispatch-mode stack (not popped by the code it watched)?"""
        try:
            from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

            return any(m is self for m in _get_current_dispatch_mode_stack())
        except ImportError:  # pragma: no cover
            return True

    def report(self, still_active: bool) -> dict:
        return {"largest": self.largest, "allocations": self.count, "intact": still_active}
