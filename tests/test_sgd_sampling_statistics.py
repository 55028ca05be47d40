"""The statistical tests of `sgd_sampling`, run on the reference with many seeds.

Each hidden statistical test promises a false-failure probability under 1e-7 for a
correct solution (under 1e-6 for the suite). Here the reference (a correct solution)
goes through each check with 200 fixed seeds: none may fail, and the chi-square
p-values must look uniform (about 10% below 0.1). The reshuffling test's per-pair
win probability is re-measured on 1000 pairs and its exact lower confidence bound
(1e-6) must support the 0.95 the suite assumes. Deterministic: fixed seeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autograder.judge.suite import load_module
from reference import sgd_sampling as ref

ROOT = Path(__file__).resolve().parents[1] / "assignments" / "sgd_sampling"
STATS = load_module(ROOT / "stats_checks.py")
SUITE = load_module(ROOT / "tests" / "test_hidden.py")
SEEDS = range(200)


def pvalue_uniform(values, n):
    counts = torch.bincount(values.reshape(-1), minlength=n)
    return STATS.chi2_pvalue(counts, torch.full((n,), values.numel() / n))


def pvalue_pairs(a, b, n):
    cells = a.reshape(-1) * n + b.reshape(-1)
    return STATS.chi2_pvalue(torch.bincount(cells, minlength=n * n), torch.full((n * n,), cells.numel() / (n * n)))


def assert_calibrated(pvalues):
    assert min(pvalues) >= STATS.ALPHA
    below = sum(p < 0.1 for p in pvalues) / len(pvalues)
    assert 0.03 <= below <= 0.2, below


@pytest.mark.parametrize("check", ["uniform", "pairs", "batch_pairs", "rr_first", "rr_pairs", "rr_two_positions",
                                   "rr_dropped", "rr_permutations"])
def test_chi_square_checks_pass_the_reference(check):
    """The exact parameters of the hidden tests, 200 seeds each."""
    pvalues = []
    for s in SEEDS:
        if check in ("uniform", "pairs", "batch_pairs"):
            got = ref.sample_batches(7, 6, 1700, "uniform", s)
            p = (pvalue_uniform(got, 7) if check == "uniform" else pvalue_pairs(got[:, 0::2], got[:, 1::2], 7)
                 if check == "pairs" else pvalue_pairs(got[0::2], got[1::2], 7))
        elif check == "rr_permutations":
            codes = STATS.permutation_codes(ref.sample_batches(5, 5, 3600, "random_reshuffling", s))
            p = pvalue_uniform(codes, 120)
        else:
            got = ref.sample_batches(7, 2, 9000, "random_reshuffling", s).reshape(3000, 6)
            if check == "rr_first":
                p = pvalue_uniform(got[:, 0], 7)
            elif check == "rr_pairs":
                p = pvalue_pairs(got[0::2, 0], got[1::2, 0], 7)
            elif check == "rr_two_positions":
                p = pvalue_uniform(STATS.distinct_pair_cells(got[:, 0], got[:, 1], 7), 42)
            else:
                p = pvalue_uniform(torch.tensor([21 - int(e.sum()) for e in got]), 7)
        pvalues.append(p)
    assert_calibrated(pvalues)


def test_shuffle_once_check_passes_the_reference():
    pvalues = []
    for rep in range(40):
        perms = torch.cat([ref.sample_batches(7, 7, 1, "shuffle_once", 700 * rep + s) for s in range(700)])
        pvalues.append(pvalue_uniform(perms[:, 0], 7))
        pvalues.append(pvalue_uniform((perms[:, 1] - perms[:, 0]) % 7 - 1, 6))
    assert min(pvalues) >= STATS.ALPHA


def test_importance_checks_pass_the_reference():
    grads, probs = SUITE._isg_problem()
    values, p = SUITE._draw_law(grads, probs)
    mean = grads.mean(0)
    worst = 0.0
    for rep in range(10):
        est = torch.stack([ref.importance_sampled_gradient(grads, probs, 4, 100_000 * rep + s) for s in range(3000)])
        for j in range(2):
            sigma2 = float((p * (values[:, j] - mean[j]) ** 2).sum())
            radius = STATS.bernstein_radius(12000, sigma2, float((values[:, j] - mean[j]).abs().max()), STATS.ALPHA / 2)
            worst = max(worst, abs(float(est.mean(0)[j] - mean[j])) / radius)
    assert worst < 1.0, worst  # each repetition stays inside the radius (typically at a fifth of it)


def test_importance_batch_spread_check_passes_the_reference():
    """The batch-4 spread check of the unbiasedness test, on the reference with 10 seed sets."""
    grads, probs = SUITE._isg_problem()
    values, p = SUITE._draw_law(grads, probs)
    mean = grads.mean(0)
    var_one = float((p * ((values - mean) ** 2).sum(1)).sum())
    for rep in range(10):
        est = torch.stack([ref.importance_sampled_gradient(grads, probs, 4, 200_000 * rep + s) for s in range(3000)])
        mse = float(((est - mean) ** 2).sum(1).mean())
        assert var_one / 8 <= mse <= (var_one / 4 + var_one) / 2, (rep, mse, var_one)


def _lower_bound(wins: int, trials: int, delta: float) -> float:
    """The q below which seeing >= wins successes has probability < delta (exact binomial)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        tail = 1 - STATS.binomial_tail_below(wins, trials, mid)
        lo, hi = (mid, hi) if tail < delta else (lo, mid)
    return lo


def test_reshuffling_win_probability_supports_the_suite():
    A, y, x0 = SUITE._ls_problem("ls-rr")
    trials, wins = 1000, 0
    for k in range(trials):
        rr = ref.sgd_least_squares(A, y, x0, 0.05, 20, 4, "random_reshuffling", 10_000 + k)[-1]
        un = ref.sgd_least_squares(A, y, x0, 0.05, 20, 4, "uniform", 50_000 + k)[-1]
        wins += float(rr) < float(un)
    q_low = _lower_bound(wins, trials, 1e-6)
    assert q_low >= 0.95, (wins, q_low)
    assert STATS.binomial_tail_below(60, 80, 0.95) < 1e-9


def test_reference_sgd_step_is_the_autograd_gradient_and_schemes_match_torch_samplers():
    """One SGD step of the reference equals a step along autograd's gradient of the batch
    loss; its cyclic and reshuffling epochs have the structure of torch's BatchSampler over
    SequentialSampler / RandomSampler with drop_last=True."""
    A, y, x0 = SUITE._ls_problem("ref-step", n=10, d=3)
    S = ref.sample_batches(10, 4, 1, "cyclic", 0)
    x = x0.clone().requires_grad_()
    loss = ((A[S[0]] @ x - y[S[0]]) ** 2).sum() / (2 * 4)
    loss.backward()
    want = x0 - 0.1 * x.grad
    got_losses = ref.sgd_on_batches(A, y, x0, 0.1, S, 1)
    torch.testing.assert_close(torch.tensor(got_losses[1].item(), dtype=torch.float64),
                               torch.tensor(ref.least_squares_loss(A, y, want), dtype=torch.float64))
    from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

    seq = torch.tensor(list(BatchSampler(SequentialSampler(range(10)), 4, drop_last=True)))
    assert torch.equal(ref.sample_batches(10, 4, 2, "cyclic", 0), seq)
    torch_epoch = torch.tensor(list(BatchSampler(RandomSampler(range(10), generator=torch.Generator().manual_seed(1)),
                                                 4, drop_last=True)))
    ours = ref.sample_batches(10, 4, 2, "random_reshuffling", 1)
    assert ours.shape == torch_epoch.shape and ours.unique().numel() == torch_epoch.unique().numel() == 8
