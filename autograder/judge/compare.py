"""Comparisons for hidden suites, with feedback a student can act on.

`expect_close(got, expected, call=..., what=..., rtol=..., atol=...)` checks type,
shape, dtype, finiteness and values and, on failure, raises `GradingFailure` whose
message says in a few lines what was called, what was expected, what came back and
how far off (the largest error, where it is, and the tolerance).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from autograder.judge.student import StudentFailure
from autograder.scoring import case_fraction


class GradingFailure(AssertionError):
    """A check of student output failed; the message is the student's feedback."""


class PartialCredit(GradingFailure):
    """Some of a test's cases passed: `fraction` of its points are earned."""

    def __init__(self, fraction: float, message: str):
        self.fraction = max(0.0, min(1.0, fraction))
        super().__init__(message)


def describe(value: Any) -> str:
    """A short description of an argument: dtype[shape] for tensors, repr for the rest."""
    if isinstance(value, torch.Tensor):
        dt = str(value.dtype).replace("torch.", "")
        dev = "" if value.device.type == "cpu" else f" on {value.device.type}"
        return f"{dt}[{', '.join(map(str, value.shape))}]{dev}"
    if isinstance(value, list | tuple):
        inner = ", ".join(describe(v) for v in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in list(value.items())[:6]) + "}"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def describe_call(fn: str, *args, **kwargs) -> str:
    parts = [describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()]
    return f"{fn}({', '.join(parts)})"


def _fmt(x: float) -> str:
    return f"{x:.6g}"


class Tolerance(NamedTuple):
    rtol: float
    atol: float


def tolerance_for(dtype: torch.dtype, reduction: int = 1, factor: float = 8.0, *, scale: float = 1.0,
                  extra: float = 0.0) -> Tolerance:
    """(rtol, atol) from the arithmetic: `factor` ulps of `dtype`, grown with the square
    root of the reduction length (rounding errors of a sum of n terms add up as a random
    walk, sqrt(n) ulps typically), plus `extra` (an error the formula allows on top, e.g.
    a reference computed another way); atol is that relative bound times `scale`, the
    magnitude the result is made of (max |expected|, or |a| @ |b| for a product), so a
    result near zero made of large terms is held to the error of its terms."""
    eps = torch.finfo(dtype).eps
    rtol = factor * eps * max(1.0, reduction) ** 0.5 + extra
    return Tolerance(rtol, rtol * float(scale))


def expect_close(got: Any, expected: torch.Tensor, *, call: str, what: str = "the result",
                 rtol: float | None = None, atol: float | torch.Tensor | None = None,
                 tol: Tolerance | None = None, check_dtype: bool = True, why: str = "") -> None:
    """Raise GradingFailure unless `got` is a tensor matching `expected` within
    atol + rtol * |expected| at every entry (`tol`: both at once, from tolerance_for).
    `atol` may be a tensor broadcastable to `expected`: a bound per element (each
    element of a sum of its own inputs, say)."""
    if tol is not None:
        rtol, atol = tol
    if rtol is None or atol is None:
        raise TypeError("expect_close needs rtol and atol, or tol")
    head = f"{call}: {what}"
    if not isinstance(got, torch.Tensor):
        raise GradingFailure(f"{head}: expected a tensor {describe(expected)}, got {describe(got)}")
    if tuple(got.shape) != tuple(expected.shape):
        raise GradingFailure(f"{head}: expected shape {list(expected.shape)}, got {list(got.shape)}")
    if check_dtype and got.dtype != expected.dtype:
        raise GradingFailure(f"{head}: expected dtype {expected.dtype}, got {got.dtype} "
                             "(outputs keep the dtype of the inputs)")
    g = got.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    bad_nonfinite = torch.isfinite(e) & ~torch.isfinite(g)
    if bad_nonfinite.any():
        idx = tuple(int(i) for i in bad_nonfinite.nonzero()[0])
        raise GradingFailure(f"{head}: {int(bad_nonfinite.sum())} non-finite value(s); first at index "
                             f"{idx}: expected {_fmt(e[idx].item())}, got {_fmt(g[idx].item())}")
    finite = torch.isfinite(e)
    same_special = (~finite) & ((g == e) | (torch.isnan(g) & torch.isnan(e)))
    err = (g - e).abs().where(finite, torch.zeros_like(g))
    per_element = isinstance(atol, torch.Tensor)
    if per_element:
        atol = atol.detach().to("cpu", torch.float64)
        atol = atol.reshape(e.shape) if atol.numel() == e.numel() else torch.broadcast_to(atol, e.shape)
    allowed = atol + rtol * e.abs()
    violations = (err > allowed.where(finite, torch.zeros_like(g))) | ((~finite) & ~same_special)
    if violations.any():
        ratio = (err / allowed.where(finite, torch.ones_like(g))).where(finite, torch.full_like(g, float("inf")))
        # the worst violation (an exact bound of 0 gives inf there, never a NaN at a correct entry)
        ratio = torch.where(violations, ratio.nan_to_num(nan=float("inf")), torch.zeros_like(ratio))
        flat = int(ratio.reshape(-1).argmax()) if ratio.numel() else 0
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), e.shape)) if e.dim() else ()
        n_bad = int(violations.sum())
        bound = (f"allowed {_fmt(float(atol[idx]))} at this entry" if per_element and rtol == 0 else
                 f"allowed {_fmt(float(atol[idx]) if per_element else atol)} + {_fmt(rtol)}·|expected|")
        lines = [
            f"{head} is off at {n_bad} of {e.numel()} entries",
            f"  largest error at index {list(idx)}: expected {_fmt(e[idx].item())}, got {_fmt(g[idx].item())} "
            f"(|error| {_fmt(err[idx].item())}, {bound})",
        ]
        if why:
            lines.append(f"  hint: {why}")
        raise GradingFailure("\n".join(lines))


def expect_tuple(got: Any, n: int, *, call: str, names: str | tuple | list = "") -> tuple | list:
    """A function that returns n values: a tuple (or list) of exactly n, else a failure that
    says what came back (never an IndexError in the test, which would read as a grader error).
    `names`: what the values are ("o, lse" or ("o", "lse"))."""
    if not isinstance(names, str):
        names = ", ".join(names)
    if not isinstance(got, tuple | list) or len(got) != n:
        what = f"a tuple of {n} values" + (f" ({names})" if names else "")
        raise GradingFailure(f"{call}: expected {what}, got {describe(got)}"
                             + (f" of length {len(got)}" if isinstance(got, tuple | list) else ""))
    return got


def expect_unchanged(before: torch.Tensor, after: Any, *, call: str, name: str) -> None:
    """Inputs must not be modified unless the contract says "in place"."""
    if isinstance(after, torch.Tensor) and (after.shape != before.shape or not torch.equal(
            after.to(before.dtype).cpu(), before.cpu())):
        raise GradingFailure(f"{call} modified its input `{name}` in place; the contract says the "
                             "function returns new tensors and leaves its inputs unchanged "
                             "(use x = x.clone() or out-of-place ops)")


def first_failure(check, *args, **kwargs) -> str | None:
    """What `check(*args, **kwargs)` (expect_close, say) finds wrong, as its message, or
    None: for cases whose failures are collected (CaseTally.add) rather than raised."""
    try:
        check(*args, **kwargs)
    except GradingFailure as e:
        return str(e)
    return None


class CaseTally:
    """A test made of cases: all pass, full points; some, that fraction (PartialCredit),
    with the first failure as feedback. `run(check, ...)` counts a GradingFailure or a
    student failure (raised, timed out, crashed) of one case and goes on to the next;
    `add(None | message)` records a case checked by hand."""

    def __init__(self):
        self.total = 0
        self.failures: list[str] = []

    def add(self, failure: str | None) -> None:
        self.total += 1
        if failure is not None:
            self.failures.append(failure)

    def run(self, check, *args, **kwargs) -> None:
        try:
            check(*args, **kwargs)
            self.add(None)
        except GradingFailure as e:
            self.add(str(e))
        except StudentFailure as e:
            self.add(e.feedback())

    def finish(self) -> None:
        if self.failures:
            passed = self.total - len(self.failures)
            more = f"\n({len(self.failures) - 1} more failing case(s))" if len(self.failures) > 1 else ""
            raise PartialCredit(case_fraction(passed, self.total), f"{passed} of {self.total} cases pass; first failure:\n"
                                + self.failures[0] + more)


def expect_memory_within(memory: dict | None, budget: int, *, call: str, advice: str, host: bool = True) -> None:
    """A watched call's peak memory (CallResult.memory): the kernel's measure of the
    child's host memory (unless `host` is False) and, on a GPU, CUDA's allocator peak,
    each against `budget` bytes. Pass host=False for a call whose tensors all live on the
    GPU with a budget of a few MiB: CUDA loads each kernel's module into host memory the
    first time it runs (lazy loading), which is not the student's memory."""
    memory = memory or {}
    checks = [(memory.get("cuda_peak_extra_bytes"), "CUDA's allocator")]
    if host:
        checks.insert(0, (memory.get("peak_extra_bytes"), f"the kernel's measure ({memory.get('method')})"))
    for peak, how in checks:
        if peak is not None and peak > budget:
            raise GradingFailure(f"{call}: the call used {peak / 2**20:.0f} MiB of extra memory by {how}, more "
                                 f"than the {budget / 2**20:.0f} MiB allowed here. {advice}")
