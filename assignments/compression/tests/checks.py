"""What the public and hidden suites of `compression` share: exact comparisons, the
statistical bounds (Hoeffding's, with a union bound over coordinates, each stating its
false-failure probability) and the inputs QSGD's exactness is graded on.

Statistical tests use fixed seeds, so a correct function's outcome is fixed too (and
`dlopt check` runs the master on them); the stated probability is over the draw of
seeds, i.e. how unlikely the chosen seeds were to fail a correct function.
"""

from __future__ import annotations

import math

import torch

from autograder.judge.compare import GradingFailure, describe

DELTA = 1e-6  # the false-failure probability of each statistical test


def hoeffding(range_: torch.Tensor, n: int, tests: int, delta: float = DELTA) -> torch.Tensor:
    """Half-width t with P(|mean of n draws - expectation| >= t) <= delta / tests for draws
    in an interval of width `range_` (Hoeffding), so that `tests` such checks together fail
    with probability at most delta."""
    return range_ * math.sqrt(math.log(2 * tests / delta) / (2 * n))


def qsgd_levels(x: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(r, p, ||x||) in float64: r = s |x| / ||x||, p = r - floor(r)."""
    x64 = x.double()
    norm = float(x64.norm())
    r = s * x64.abs() / norm
    return r, r - torch.floor(r), norm


def qsgd_input(label_gen, d: int, s: int, seed: int, dtype, margin: float = 1e-4, zeros: int = 0) -> torch.Tensor:
    """A random x [d] whose QSGD draw with `seed` has no u_i within `margin` of its threshold
    and no r_i within `margin` of an integer: every correct arithmetic rounds it the same.
    `zeros`: that many entries exactly 0 (level 0 whatever u_i, so exempt from the margins)."""
    u = torch.rand(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float32).double()
    for _ in range(1000):
        x = torch.randn(d, generator=label_gen, dtype=torch.float64)
        x[torch.randperm(d, generator=label_gen)[:zeros]] = 0.0
        x = x.to(dtype)
        r, p, _ = qsgd_levels(x, s)
        live = x != 0
        if (p - u)[live].abs().min() > margin and torch.minimum(p, 1 - p)[live].min() > margin:
            return x
    raise RuntimeError("no QSGD input with the margin found")


def expect_tensor(got, *, call: str, what: str, shape, dtype) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise GradingFailure(f"{call}: {what}: expected a tensor {str(dtype).replace('torch.', '')}{list(shape)}, "
                             f"got {describe(got)}")
    if tuple(got.shape) != tuple(shape):
        raise GradingFailure(f"{call}: {what}: expected shape {list(shape)}, got {list(got.shape)}")
    if got.dtype != dtype:
        raise GradingFailure(f"{call}: {what}: expected dtype {dtype}, got {got.dtype}")
    return got.detach().cpu()


def expect_near(got: torch.Tensor, want: torch.Tensor, atol, *, call: str, what: str, why: str = "") -> None:
    """Entry by entry |got - want| <= atol (a tensor or a number), else the worst entry."""
    g, w = got.detach().cpu().double(), want.detach().cpu().double()
    err = (g - w).abs()
    atol_t = torch.as_tensor(atol, dtype=torch.float64).expand_as(err)
    if not torch.isfinite(g).all() or (err > atol_t).any():
        over = torch.nan_to_num(err - atol_t, nan=float("inf"))
        i = int(over.argmax())
        lines = [f"{call}: {what}[{i}] = {float(g.reshape(-1)[i]):.7g}, expected {float(w.reshape(-1)[i]):.7g} "
                 f"(off by {float(err.reshape(-1)[i]):.3g}, allowed {float(atol_t.reshape(-1)[i]):.3g})"]
        if why:
            lines.append(f"  hint: {why}")
        raise GradingFailure("\n".join(lines))


def rounding(dtype) -> float:
    return torch.finfo(dtype).eps / 2
