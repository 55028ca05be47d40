"""The statistical checks of `sgd_sampling`, trusted code of the judge.

Each check takes the function under test as a callable and raises `GradingFailure` with
a student-readable message, or returns. Each states its false-failure probability for
a correct implementation (ALPHA = 1e-7 each, so a whole submission's statistical tests
fail a correct solution with probability under 1e-6):
- chi-square tests: the asymptotic chi-square law of Pearson's statistic, with at
  least 30 expected counts per cell (the approximation is excellent there);
- means: Bernstein's inequality for bounded variables (rigorous);
- variance comparison: Bernstein's inequality for the bounded squared deviation (rigorous);
- the reshuffling-beats-uniform test: an exact binomial tail from a per-pair win
  probability whose lower bound `tests/test_sgd_sampling_statistics.py` re-measures
  on the reference with many seeds.
That test file also runs the reference through every check with many seeds.
"""

from __future__ import annotations

import math

import torch

from autograder.judge.compare import GradingFailure

ALPHA = 1e-7


def chi2_pvalue(counts: torch.Tensor, expected: torch.Tensor) -> float:
    counts, expected = counts.double().reshape(-1), expected.double().reshape(-1)
    stat = float(((counts - expected) ** 2 / expected).sum())
    dof = counts.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def expect_uniform(values: torch.Tensor, n: int, what: str) -> None:
    counts = torch.bincount(values.reshape(-1), minlength=n)[:n]
    expected = torch.full((n,), values.numel() / n)
    p = chi2_pvalue(counts, expected)
    if p < ALPHA:
        raise GradingFailure(f"{what}: not uniform on 0..{n - 1} (chi-square p = {p:.1e}); "
                             f"counts {counts.tolist()}, expected about {values.numel() / n:.0f} each")


def expect_independent_pairs(first: torch.Tensor, second: torch.Tensor, n: int, what: str) -> None:
    """Non-overlapping pairs of draws must be uniform on the n*n cells (independent, uniform)."""
    cells = first.reshape(-1) * n + second.reshape(-1)
    counts = torch.bincount(cells, minlength=n * n)[: n * n]
    p = chi2_pvalue(counts, torch.full((n * n,), cells.numel() / (n * n)))
    if p < ALPHA:
        same = int((first == second).sum())
        raise GradingFailure(f"{what}: pairs of draws are not independent (chi-square p = {p:.1e}); "
                             f"{same} of {cells.numel()} pairs repeat an index, about {cells.numel() / n:.0f} expected")


def bernstein_radius(num: int, sigma2: float, bound: float, delta: float) -> float:
    """t such that P(|mean of num i.i.d. variables - mu| >= t) <= delta, for variance
    sigma2 and |X - mu| <= bound (Bernstein)."""
    log_term = math.log(2 / delta)
    return (bound * log_term / 3 + math.sqrt((bound * log_term / 3) ** 2 + 2 * num * sigma2 * log_term)) / num


def binomial_tail_below(k: int, trials: int, q: float) -> float:
    """P(Binomial(trials, q) < k)."""
    return sum(math.comb(trials, j) * q**j * (1 - q) ** (trials - j) for j in range(k))
