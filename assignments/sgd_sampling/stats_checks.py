"""The statistical checks of `sgd_sampling`, trusted code of the judge.

Each check takes the function under test as a callable and raises `GradingFailure` with
a student-readable message, or returns. Each states its false-failure probability for
a correct implementation (ALPHA = 1e-7 each, the platform's bound: autograder/judge/stats.py, so a whole submission's statistical tests
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
from autograder.judge.stats import ALPHA, bernstein_radius, binomial_tail_below, chi2_pvalue  # noqa: F401  (the suite uses them from here)


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


def expect_uniform_distinct_pairs(first: torch.Tensor, second: torch.Tensor, n: int, what: str) -> None:
    """Two positions of one uniform permutation: uniform on the n*(n-1) ordered pairs of
    distinct indices (a pair that repeats an index fails outright)."""
    first, second = first.reshape(-1), second.reshape(-1)
    if bool((first == second).any()):
        raise GradingFailure(f"{what}: a permutation repeats an index")
    expect_uniform(distinct_pair_cells(first, second, n), n * (n - 1), what)


def distinct_pair_cells(first: torch.Tensor, second: torch.Tensor, n: int) -> torch.Tensor:
    """The cell of (i, j), j != i, among the n*(n-1) ordered pairs: i*(n-1) + j - [j > i]."""
    return first * (n - 1) + second - (second > first).long()


def permutation_codes(perms: torch.Tensor) -> torch.Tensor:
    """Lehmer code of each row: a bijection from the permutations of 0..n-1 to 0..n!-1."""
    n = perms.shape[1]
    code = torch.zeros(perms.shape[0], dtype=torch.int64)
    for i in range(n):
        code = code * (n - i) + (perms[:, i + 1:] < perms[:, i:i + 1]).sum(1)
    return code


def expect_uniform_permutations(perms: torch.Tensor, n: int, what: str) -> None:
    """Rows that are permutations of 0..n-1 must be uniform over the n! permutations."""
    if perms.shape[1] != n or not bool((perms.sort(1).values == torch.arange(n)).all()):
        raise GradingFailure(f"{what}: a row is not a permutation of 0..{n - 1}")
    counts = torch.bincount(permutation_codes(perms), minlength=math.factorial(n))
    expected = torch.full_like(counts, perms.shape[0] / math.factorial(n), dtype=torch.float64)
    p = chi2_pvalue(counts, expected)
    if p < ALPHA:
        raise GradingFailure(f"{what}: not uniform over the {math.factorial(n)} permutations (chi-square p = {p:.1e}); "
                             f"{int((counts > 0).sum())} of them came up, the most often {int(counts.max())} times, "
                             f"about {perms.shape[0] / math.factorial(n):.0f} expected each")
