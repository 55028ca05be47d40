"""What the public and hidden suites of `low_rank` share: inputs and tolerances.

LoRA's functions are sums of products: an entry of x W^T sums Din products, an entry of
(x A^T) B^T sums r products of sums of Din. A correct evaluation in the inputs' dtype,
in any order ((x A^T) B^T, x (B A)^T for a check, addmm, einsum), is within a few ulps of
the exact value times the magnitude of what it sums, growing with the square root of the
reduction length (rounding errors of a sum add up as a random walk). The tolerance of
each entry is therefore FACTOR ulps * sqrt(reduction) * (|x| @ |W|^T + s (|x| @ |A|^T) @ |B|^T)
at that entry (`bound`): measured for the master, an einsum variant and a float64-internal
variant on every case here: at most 0.6 of it. A wrong scaling (alpha instead of
alpha / r), a missing term or a transposed factor moves entries by 10% and more of that
magnitude.

GaLore's step is elementwise float32 arithmetic on a projection computed from the same
float32 SVD (the contract fixes it, signs included): measured against the float64
reference over 8 steps of 20x8, 8x20, 64x32 and 16x48 problems: 8.5e-7 at most, on
parameters of size ~3. GALORE_TOL allows 32 ulps of the parameter's size (1.3e-5), 15x
that; each step moves parameters by ~4e-3 (lr 1e-2), and the bugs targeted (no bias
correction, scale forgotten, moments reset on refresh, projector never or always
refreshed, signs not fixed) move them by 1e-3 and more.
"""

from __future__ import annotations

import torch

from autograder.judge.compare import tolerance_for

FACTOR = 8


def bound(dtype, reduction: int, magnitude: torch.Tensor) -> torch.Tensor:
    """Per-entry atol: FACTOR ulps of `dtype` * sqrt(reduction) * the magnitude summed there."""
    eps = torch.finfo(dtype).eps
    return FACTOR * eps * max(1, reduction) ** 0.5 * magnitude + torch.finfo(dtype).tiny


def forward_magnitude(x, W, b, A, B, scaling):
    x, W, A, B = (t.double().abs() for t in (x, W, A, B))
    mag = x @ W.T + abs(scaling) * ((x @ A.T) @ B.T)
    return mag + b.double().abs() if b is not None else mag


def galore_tol(param: torch.Tensor):
    return tolerance_for(torch.float32, factor=32, scale=float(param.abs().max()) + 1.0)
