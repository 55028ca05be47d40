"""Statistics for suites that grade randomized functions (samplers, estimators).

Every statistical check states its false-failure probability for a correct submission:
`ALPHA` per check is the platform's bound (1e-7: a suite of ten such checks fails a
correct solution with probability under 1e-6). The tails here are exact (binomial) or
rigorous (Bernstein); Pearson's chi-square uses its asymptotic law, which is accurate
with at least 30 expected counts per cell. An assignment's own checks (the laws its
functions must follow) live in its folder and use these.
"""

from __future__ import annotations

import math

import torch

ALPHA = 1e-7


def binomial_tail_at_least(k: int, trials: int, p: float) -> float:
    """P(Binomial(trials, p) >= k), exactly."""
    return sum(math.comb(trials, j) * p**j * (1 - p) ** (trials - j) for j in range(max(0, k), trials + 1))


def binomial_tail_below(k: int, trials: int, p: float) -> float:
    """P(Binomial(trials, p) < k), exactly."""
    return sum(math.comb(trials, j) * p**j * (1 - p) ** (trials - j) for j in range(min(k, trials + 1)))


def chi2_pvalue(counts: torch.Tensor, expected: torch.Tensor) -> float:
    """Pearson's chi-square test of `counts` against `expected` (same cells): the p-value
    under the chi-square law with cells - 1 degrees of freedom."""
    counts, expected = counts.double().reshape(-1), expected.double().reshape(-1)
    stat = float(((counts - expected) ** 2 / expected).sum())
    dof = counts.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def bernstein_radius(num: int, sigma2: float, bound: float, delta: float) -> float:
    """t such that P(|mean of num i.i.d. variables - mu| >= t) <= delta, for variance
    sigma2 and |X - mu| <= bound (Bernstein's inequality)."""
    log_term = math.log(2 / delta)
    return (bound * log_term / 3 + math.sqrt((bound * log_term / 3) ** 2 + 2 * num * sigma2 * log_term)) / num
