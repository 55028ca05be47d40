"""What the public and hidden suites of `muon` share: the tolerances (each with its
measurement) and the norm-wise comparison they use.

Why a norm-wise comparison. Newton–Schulz runs in bfloat16 (8 significant bits), and its
quintic multiplies small singular values by about 3.44 per step: rounding noise in one
product is amplified through the remaining steps. Two correct orderings of the same
products (torch.addmm as torch.optim.Muon writes it, separate products, A @ (A @ X),
X^T X on the other side, the norm taken in float32) therefore differ entry by entry by as
much as the entries themselves in the directions of the smallest singular values, while
the result as a whole stays close. Measured on 20 seeds each for random Gaussian
matrices 64x32, 32x64, 48x48, 128x16, 16x128, 96x40 (bench/muon_tolerances.py prints
the table): the largest relative Frobenius distance of a correct ordering from
torch.optim.Muon's was 0.047; normalising by the spectral norm instead of the Frobenius
norm lands 0.26 to 0.36 away, by the max-entry norm it diverges. NS_RTOL = 0.12 sits
2.5x above the first and 2x below the second.

The singular values of the result are checked against the quintic's exact image of the
input's (reference.muon.expected_singular_values): on matrices with singular values
spread over three decades, correct orderings are off by at most 0.27 (one value, bfloat16
noise on the smallest ones); an exact polar factor (all ones, from an SVD) by at least
0.63. SV_ATOL = 0.45.

A Muon step adds -lr' * O to the decayed parameter: its tolerance is NS_RTOL of
lr' * ||O||_F (the only inexact part), plus float32 rounding of the parameter.
"""

from __future__ import annotations

import math

import torch

from autograder.judge.compare import GradingFailure, describe

NS_RTOL = 0.12
SV_ATOL = 0.45
# The rounding test: entries 1 + u, |u| < 0.0015, round to exactly 1.0 in bfloat16 (its
# spacing below 1 is 2^-8, so half of it is 0.00195): a correct iteration sees the
# all-ones matrix and returns a rank-1 result (measured: 0.0 to 0.13 from torch's, the
# ordering's noise on a rank-1 matrix); an iteration in float32 or float64 sees the
# perturbation, whose singular values (~1e-4) the quintic amplifies 480x: 0.56 to 0.60.
ROUNDING_RTOL = 0.3


def frobenius_distance(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.detach().to("cpu", torch.float64) - want.detach().to("cpu", torch.float64)).norm())


def expect_tensor(got, *, call: str, what: str, shape, dtype) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise GradingFailure(f"{call}: {what}: expected a tensor {str(dtype).replace('torch.', '')}"
                             f"{list(shape)}, got {describe(got)}")
    if tuple(got.shape) != tuple(shape):
        raise GradingFailure(f"{call}: {what}: expected shape {list(shape)}, got {list(got.shape)}")
    if got.dtype != dtype:
        raise GradingFailure(f"{call}: {what}: expected dtype {dtype}, got {got.dtype}")
    if not torch.isfinite(got.detach().float()).all():
        raise GradingFailure(f"{call}: {what}: has non-finite entries (nan or inf)")
    return got


def expect_near(got: torch.Tensor, want: torch.Tensor, bound: float, *, call: str, what: str, why: str = "",
                measure: str = "") -> None:
    """||got - want||_F <= bound, else a failure saying how far, against what."""
    dist = frobenius_distance(got, want)
    if not math.isfinite(dist) or dist > bound:
        scale = float(want.detach().double().norm())
        rel = f" ({dist / scale:.3g} of its norm {scale:.4g})" if scale > 0 else ""
        lines = [f"{call}: {what} is {dist:.4g} away from the reference in Frobenius norm{rel}; "
                 f"allowed {bound:.4g}" + (f" ({measure})" if measure else "")]
        if why:
            lines.append(f"  hint: {why}")
        raise GradingFailure("\n".join(lines))
