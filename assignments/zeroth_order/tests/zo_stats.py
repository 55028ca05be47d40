"""The statistical check of `zo_gradient` (trusted: runs in the judge).

For a quadratic, one two-point sample is exactly xi + g with xi = c (u . g) u - g
(c = 1 for Gaussian u, d for u on the sphere): unbiased, E|xi|^2 = (d + 1)|g|^2 or
(d - 1)|g|^2. The average of n samples, y = g_hat - g, has E|y|^2 = V = E|xi|^2 / n and

    Var(|y|^2) / V^2 = [Var(|xi|^2) / n + 2 (1 - 1/n) tr(Sigma^2)] / tr(Sigma)^2,

with Sigma = Cov(xi) (the cross terms of the square are uncorrelated). The check makes
B calls with fresh seeds, splits them into G groups of m, and requires the median of
the group means of |y|^2 to lie in [V/3, 3V]. By Chebyshev each group mean leaves
[V/3, 5V/3] with probability p_g <= (9/4) rel_var / m; m is chosen so that p_g <= 0.1,
and G so that P(Binomial(G, 0.1) >= G/2) <= ALPHA = 1e-7: a correct zo_gradient fails
one check with probability below 1e-7 (five checks per submission: below 1e-6).
tr(Sigma^2) and Var(|xi|^2) are estimated from 200,000 draws of the exact law, times
1.5 for safety. A bias b adds |b|^2 to every group mean: a factor-2 slip, a missing
d for the sphere or samples that repeat one direction put the median far outside.
"""

from __future__ import annotations

import math

import torch

from autograder.judge.compare import GradingFailure
from autograder.judge.stats import ALPHA, binomial_tail_at_least

P_GROUP = 0.1
SAFETY = 1.5


def plan(rel_var: float) -> tuple[int, int]:
    """(m, G): calls per group and groups."""
    m = max(2, math.ceil(2.25 * rel_var / P_GROUP))
    groups = 5
    while binomial_tail_at_least(math.ceil(groups / 2), groups, P_GROUP) > ALPHA:
        groups += 2
    return m, groups


def law(distribution: str, g: torch.Tensor, n: int, draws: int = 200_000) -> tuple[float, float]:
    """(V, rel_var) of the n-sample estimator for true gradient g (float64, CPU)."""
    d = g.numel()
    gen = torch.Generator().manual_seed(12345)
    g = g.double().cpu().reshape(-1)
    u = torch.randn(draws, d, generator=gen, dtype=torch.float64)
    c = 1.0
    if distribution == "sphere":
        u, c = u / u.norm(dim=1, keepdim=True), float(d)
    xi = c * (u @ g)[:, None] * u - g
    sq = (xi * xi).sum(1)
    exact = (d + 1 if distribution == "gaussian" else d - 1) * float(g @ g)
    sigma = xi.T @ xi / draws
    tr_sigma2 = float((sigma * sigma).sum()) * SAFETY
    var_sq = float(sq.var()) * SAFETY
    rel_var = (var_sq / n + 2 * (1 - 1 / n) * tr_sigma2) / exact**2
    return exact / n, rel_var


def check_mse(errors: list[float], v: float, m: int, groups: int, what: str) -> None:
    """`errors`: |g_hat - g|^2 of m * groups calls, in order."""
    means = sorted(sum(errors[i * m:(i + 1) * m]) / m for i in range(groups))
    median = means[len(means) // 2]
    if not v / 3 <= median <= 3 * v:
        raise GradingFailure(
            f"{what}: the squared error |g_hat - g|^2 averages {median:.4g} (median of {groups} groups of {m} "
            f"calls with different seeds); theory for this d and num_samples gives {v:.4g}, and a correct "
            f"estimator lands in [{v / 3:.4g}, {3 * v:.4g}] except with probability below {ALPHA:g}. "
            + ("Too large: a biased estimate (check the 1/(2 mu) and, for the sphere, the factor d) or samples "
               "that are not independent." if median > 3 * v else
               "Too small: the estimate varies less than two-point samples can."))
