"""Hidden suite of `sgd_sampling`: properties, never one random stream.

A correct sampler may consume randomness in any order, so the random schemes are
tested by their laws (coverage, uniformity, independence, reproducibility), with the
statistical checks of `stats_checks.py` (false failure of a correct solution: at most
1e-7 per check, under 1e-6 for the whole suite; see that file and
tests/test_sgd_sampling_statistics.py, which runs the reference through every check
with many seeds). `sgd_least_squares` is exact against the reference for `cyclic` and,
for the random schemes, exact against SGD run on the batches of the submission's own
`sample_batches` with the same seed (as the contract says it draws them); reshuffling
must beat uniform sampling at the end of training over 80 seed pairs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from autograder.judge.compare import GradingFailure, describe_call, expect_close, expect_unchanged
from autograder.judge.suite import generator, load_module
from reference import sgd_sampling as ref

STATS = load_module(Path(__file__).resolve().parents[1] / "stats_checks.py")
SCHEMES = ["uniform", "random_reshuffling", "shuffle_once", "cyclic"]
F64 = dict(rtol=1e-10, atol=1e-12)  # float64 SGD along the same batches: a few ulps per step


def batches(student, n, b, k, scheme, seed):
    got = student.call("sample_batches", n, b, k, scheme, seed).value
    call = describe_call("sample_batches", n, b, k, scheme, seed)
    if not isinstance(got, torch.Tensor):
        raise GradingFailure(f"{call}: expected an int64 tensor, got {type(got).__name__}")
    if tuple(got.shape) != (k, b) or got.dtype != torch.int64:
        raise GradingFailure(f"{call}: expected int64[{k}, {b}], got {got.dtype}{list(got.shape)}")
    if got.numel() and (int(got.min()) < 0 or int(got.max()) >= n):
        raise GradingFailure(f"{call}: indices must lie in 0..{n - 1}, got {int(got.min())}..{int(got.max())}")
    return got.cpu()


SB = pytest.mark.function("sample_batches")


# -- sample_batches: shape, range, exact schemes, edge cases (17 points) ---------------
@SB
@pytest.mark.points(0.75)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_shape_dtype_and_range(student, scheme):
    batches(student, 13, 4, 10, scheme, 3)


@SB
@pytest.mark.points(1)
def test_no_batches_give_an_empty_tensor(student):
    """num_batches = 0 (an edge case the notebook states): an empty int64[0, batch_size]
    for every scheme (dlopt audit: [1, b], [b, 0] survived)."""
    for scheme in SCHEMES:
        batches(student, 13, 4, 0, scheme, 3)


@SB
@pytest.mark.points(3)
def test_cyclic_is_the_identity_permutation_every_epoch(student):
    got = batches(student, 10, 3, 7, "cyclic", 11)
    want = ref.sample_batches(10, 3, 7, "cyclic", 11)
    if not torch.equal(got, want):
        raise GradingFailure(f"sample_batches(10, 3, 7, 'cyclic', 11): expected {want.tolist()}, got {got.tolist()} "
                             "(0..n-1 each epoch, the last n % batch_size indices dropped)")


@SB
@pytest.mark.points(4)
def test_random_reshuffling_covers_each_index_once_per_epoch(student):
    n, b = 11, 3  # 3 batches an epoch, 2 indices dropped
    got = batches(student, n, b, 30, "random_reshuffling", 5)
    for e, epoch in enumerate(got.reshape(10, -1)):
        if epoch.unique().numel() != epoch.numel():
            raise GradingFailure(f"sample_batches({n}, {b}, 30, 'random_reshuffling', 5): epoch {e} repeats an index "
                                 f"({epoch.tolist()}); each epoch is a permutation cut into batches")


@SB
@pytest.mark.points(4)
def test_shuffle_once_repeats_one_permutation(student):
    n, b = 12, 4
    got = batches(student, n, b, 15, "shuffle_once", 9)
    epochs = got.reshape(5, n)
    if sorted(epochs[0].tolist()) != list(range(n)):
        raise GradingFailure(f"shuffle_once: the first epoch {epochs[0].tolist()} is not a permutation of 0..{n - 1}")
    if not all(torch.equal(e, epochs[0]) for e in epochs):
        raise GradingFailure("shuffle_once: the permutation changed between epochs; it is drawn once and reused")


@SB
@pytest.mark.points(3)
def test_reproducible_for_a_seed(student):
    for scheme in SCHEMES:
        a, b = batches(student, 20, 5, 12, scheme, 123), batches(student, 20, 5, 12, scheme, 123)
        if not torch.equal(a, b):
            raise GradingFailure(f"sample_batches(20, 5, 12, {scheme!r}, 123) returned different batches on two calls; "
                                 "draw everything from torch.Generator().manual_seed(seed)")
        if scheme != "cyclic" and torch.equal(a, batches(student, 20, 5, 12, scheme, 124)):
            raise GradingFailure(f"{scheme}: seeds 123 and 124 gave the same batches; use the seed")


@SB
@pytest.mark.points(0.5)
@pytest.mark.parametrize("args", [(5, 6, 2, "uniform", 0), (5, 2, 2, "shuffled", 0)],
                         ids=["batch_size_above_n", "unknown_scheme"])
def test_bad_arguments_raise_value_error(student, args):
    """Two edge cases, a test each: batch_size > n (uniform too) and an unknown scheme."""
    try:
        student.call("sample_batches", *args)
    except Exception as e:  # noqa: BLE001  (the student's exception type is what we check)
        if "ValueError" not in str(e):
            raise GradingFailure(f"sample_batches{args}: expected ValueError, got: {str(e)[:200]}") from None
    else:
        raise GradingFailure(f"sample_batches{args}: expected ValueError, nothing was raised")


# -- sample_batches: laws of the random schemes (26 points) --------------------------
@SB
@pytest.mark.points(5)
def test_uniform_draws_are_uniform(student):
    """Chi-square test, 10200 draws over 7 indices (false failure 1e-7)."""
    STATS.expect_uniform(batches(student, 7, 6, 1700, "uniform", 17), 7, "uniform sampling")


@SB
@pytest.mark.points(4)
def test_uniform_draws_are_independent_with_replacement(student):
    """Non-overlapping pairs within batches are uniform on 7x7 cells: catches sampling
    without replacement inside a batch and correlated draws (false failure 1e-7)."""
    got = batches(student, 7, 6, 1700, "uniform", 29)
    STATS.expect_independent_pairs(got[:, 0::2], got[:, 1::2], 7, "uniform sampling")
    # Across batches too: position j of batch 2t against position j of batch 2t+1 (5100
    # non-overlapping pairs): catches a batch reused for two steps or derived from the last.
    STATS.expect_independent_pairs(got[0::2], got[1::2], 7, "uniform sampling, consecutive batches")


@SB
@pytest.mark.points(3)
def test_random_reshuffling_draws_fresh_independent_permutations(student):
    """The first index of consecutive epochs (non-overlapping pairs of epochs) is uniform and
    independent: catches a permutation reused or derived from the last (false failure 1e-7)."""
    n, b = 7, 2
    got = batches(student, n, b, 3 * 3000, "random_reshuffling", 31).reshape(3000, 6)
    STATS.expect_uniform(got[:, 0], n, "random_reshuffling, first index of each epoch")
    STATS.expect_independent_pairs(got[0::2, 0], got[1::2, 0], n, "random_reshuffling, consecutive epochs")
    # Two positions of one permutation: (perm[0], perm[1]) is uniform on the 42 ordered pairs
    # of distinct indices; a random rotation of 0..n-1 puts all its mass on 7 of them.
    STATS.expect_uniform_distinct_pairs(got[:, 0], got[:, 1], n, "random_reshuffling, first two indices of each epoch")


@SB
@pytest.mark.points(3)
def test_random_reshuffling_permutations_are_uniform(student):
    """n = 5, one batch an epoch: each of the 120 permutations comes up about 1/120 of the
    3600 epochs (chi-square, 30 expected per cell, false failure 1e-7). A structured family
    (rotations, affine maps i -> a*i + b mod n) covers few of them."""
    got = batches(student, 5, 5, 3600, "random_reshuffling", 41)
    STATS.expect_uniform_permutations(got, 5, "random_reshuffling, the permutation of each epoch")


@SB
@pytest.mark.points(3)
def test_random_reshuffling_drops_a_uniform_leftover(student):
    """The index left out of each epoch (n % b = 1) is uniform: the tail of the permutation
    is dropped, not always the same indices (false failure 1e-7)."""
    n, b = 7, 2
    got = batches(student, n, b, 3 * 3000, "random_reshuffling", 37).reshape(3000, 6)
    dropped = torch.tensor([21 - int(e.sum()) for e in got])
    STATS.expect_uniform(dropped, n, "random_reshuffling, index dropped from each epoch")


@SB
@pytest.mark.points(3)
def test_shuffle_once_permutation_is_uniform_over_seeds(student):
    """The first index of the once-drawn permutation, and the gap to the second, over 700
    seeds (false failure 1e-7 each)."""
    perms = torch.cat([batches(student, 7, 7, 1, "shuffle_once", s) for s in range(700)])
    STATS.expect_uniform(perms[:, 0], 7, "shuffle_once over seeds")
    # perm[1] - perm[0] (mod 7) is uniform on 1..6 for a uniform permutation; always 1 for a rotation.
    STATS.expect_uniform((perms[:, 1] - perms[:, 0]) % 7 - 1, 6, "shuffle_once over seeds, perm[1] - perm[0] mod 7")


# -- importance_probabilities (7 points, 1 more in the public tests) ------------------
IP = pytest.mark.function("importance_probabilities")


@IP
@pytest.mark.points(3)
def test_importance_probabilities_exact(student):
    g = generator("ip")
    L = torch.rand(17, generator=g, dtype=torch.float64) * 10 + 0.01
    expect_close(student.call("importance_probabilities", L).value, ref.importance_probabilities(L),
                 call=describe_call("importance_probabilities", L), what="probs", rtol=1e-14, atol=1e-16)


@IP
@pytest.mark.points(1)
@pytest.mark.parametrize("bad", ["zero", "negative", "nan", "inf"])
def test_importance_probabilities_reject_bad_constants(student, bad):
    L = torch.tensor([1.0, 2.0, {"zero": 0.0, "negative": -1.0, "nan": float("nan"), "inf": float("inf")}[bad]],
                     dtype=torch.float64)
    try:
        student.call("importance_probabilities", L)
    except Exception as e:  # noqa: BLE001
        if "ValueError" not in str(e):
            raise GradingFailure(f"importance_probabilities({L.tolist()}): expected ValueError, got {str(e)[:200]}") from None
    else:
        raise GradingFailure(f"importance_probabilities({L.tolist()}): expected ValueError for a {bad} constant")


# -- importance_sampled_gradient (17 points) -------------------------------------------
ISG = pytest.mark.function("importance_sampled_gradient")
# Six samples with very different Lipschitz constants; g_i = L_i * u_i, |u_i| = 1.
_L = torch.tensor([0.1, 0.2, 0.5, 1.0, 5.0, 20.0], dtype=torch.float64)


def _isg_problem():
    g = generator("isg")
    u = torch.randn(6, 2, generator=g, dtype=torch.float64)
    grads = _L[:, None] * u / u.norm(dim=1, keepdim=True)
    return grads, _L / _L.sum()


def _draw_law(grads, probs):
    """The law of one importance-weighted draw: values X_i = g_i / (n p_i) with probability p_i."""
    return grads / (grads.shape[0] * probs[:, None]), probs


@ISG
@pytest.mark.points(3)
def test_importance_sampled_gradient_shape_and_seed(student):
    grads, probs = _isg_problem()
    a = student.call("importance_sampled_gradient", grads, probs, 4, 7).value
    b = student.call("importance_sampled_gradient", grads, probs, 4, 7).value
    if not isinstance(a, torch.Tensor) or tuple(a.shape) != (2,):
        raise GradingFailure(f"importance_sampled_gradient: expected a tensor [2], got {getattr(a, 'shape', a)}")
    if not torch.equal(a, b):
        raise GradingFailure("importance_sampled_gradient: two calls with the same seed differ")
    # ...and the seed is used: over 20 seeds the estimate changes (a correct sampler repeats
    # one batch of 4 in all 20 with probability < 1e-9 here; a constant never changes).
    others = [student.call("importance_sampled_gradient", grads, probs, 4, 100 + s).value for s in range(20)]
    if all(isinstance(o, torch.Tensor) and torch.equal(o.cpu(), a.cpu()) for o in others):
        raise GradingFailure("importance_sampled_gradient(grads, probs, 4, seed) returned the same estimate for 21 "
                             f"different seeds ({a.tolist()}): draw the batch from torch.Generator().manual_seed(seed)")


@ISG
@pytest.mark.points(5)
def test_importance_sampled_gradient_is_unbiased(student):
    """The mean of 3000 estimates (12000 draws) is within Bernstein's radius of the true
    mean gradient, and their spread is that of batch_size averaged draws (false failure
    1e-7 each, rigorous for bounded draws)."""
    grads, probs = _isg_problem()
    values, p = _draw_law(grads, probs)
    mean = grads.mean(0)
    calls, b = 3000, 4
    est = torch.stack([student.call("importance_sampled_gradient", grads, probs, b, s).value.cpu() for s in range(calls)])
    got = est.mean(0)
    for j in range(2):
        sigma2 = float((p * (values[:, j] - mean[j]) ** 2).sum())
        bound = float((values[:, j] - mean[j]).abs().max())
        radius = STATS.bernstein_radius(calls * b, sigma2, bound, STATS.ALPHA / 2)
        if abs(float(got[j]) - float(mean[j])) > radius:
            raise GradingFailure(
                f"importance_sampled_gradient: the average of {calls} estimates is {got.tolist()}, the mean gradient is "
                f"{mean.tolist()} (coordinate {j} is off by {abs(float(got[j] - mean[j])):.3g}, more than {radius:.3g}); "
                "weight each drawn gradient by 1 / (n * p_i) and draw i with probability p_i")
    # The batch is batch_size draws averaged: the mean squared error is var / batch_size.
    # It must lie between var / 8 and the midpoint of var / 4 and var (one draw, whatever
    # batch_size is); the exact law of a 4-draw average (6^4 tuples) gives Bernstein's
    # bound for each side (asserted below the suite's 1e-7).
    tuples = torch.cartesian_prod(*[torch.arange(6)] * b)
    weights = p[tuples].prod(1)
    dev2 = ((values[tuples].mean(1) - mean) ** 2).sum(1)
    var_b, var_one = float((weights * dev2).sum()), float((p * ((values - mean) ** 2).sum(1)).sum())
    m4 = float((weights * dev2**2).sum())
    high, low = (var_b + var_one) / 2, var_one / 8
    for gap in (high - var_b, var_b - low):
        tail = math.exp(-calls * gap**2 / (2 * (m4 - var_b**2) + 2 * (float(dev2.max()) + var_b) * gap / 3))
        assert tail < STATS.ALPHA, tail  # the suite's own promise
    mse = float(((est.double() - mean) ** 2).sum(1).mean())
    if not low <= mse <= high:
        raise GradingFailure(
            f"importance_sampled_gradient(grads, probs, batch_size={b}, seed): mean squared error {mse:.4g} over "
            f"{calls} seeds; the average of {b} importance-weighted draws has {var_b:.4g} (one draw has "
            f"{var_one:.4g}): draw batch_size indices and average their weighted gradients")


_SINGLE_DRAWS: dict[int, torch.Tensor] = {}


def _single_draws(student, grads, probs, calls: int) -> torch.Tensor:
    """batch_size-1 estimates for seeds 10_000 .. 10_000 + calls - 1, drawn once per
    submission: the law and the spread tests read the same draws (each test's own
    false-failure bound holds for them), which halves the calls a submission costs."""
    have = _SINGLE_DRAWS.get(id(student))
    if have is None or len(have) < calls:
        have = torch.stack([student.call("importance_sampled_gradient", grads, probs, 1, 10_000 + s).value.cpu().double()
                            for s in range(calls)])
        _SINGLE_DRAWS[id(student)] = have
    return have[:calls]


@ISG
@pytest.mark.points(5)
def test_importance_sampled_gradient_single_draws_follow_the_law(student):
    """batch_size 1: each estimate is one weighted gradient g_i / (n p_i), drawn with
    probability p_i (chi-square over 3000 draws, false failure < 1e-7). Aggregate checks
    alone let a function that returns the exact mean (never a draw) through."""
    grads, probs = _isg_problem()
    values, p = _draw_law(grads, probs)
    calls = 3000
    est = _single_draws(student, grads, probs, calls)
    dist = torch.cdist(est, values)
    # 1e-5 of the largest value: float32 arithmetic inside is allowed; the mean gradient,
    # or any blend of draws, lies orders of magnitude further from every g_i / (n p_i).
    tol = 1e-5 * float(values.abs().max())
    closest, idx = dist.min(1)
    bad = int((closest > tol).sum())
    if bad:
        k = int((closest > tol).nonzero()[0])
        raise GradingFailure(
            f"importance_sampled_gradient(grads, probs, batch_size=1, seed={10_000 + k}) returned {est[k].tolist()}, "
            f"which is none of the n possible draws g_i / (n * p_i) (the closest is {closest[k]:.3g} away; "
            f"{bad} of {calls} estimates are like this): with one draw, return that one weighted gradient")
    counts = torch.bincount(idx, minlength=len(p))
    pval = STATS.chi2_pvalue(counts, p * calls)
    if pval < STATS.ALPHA:
        raise GradingFailure(f"importance_sampled_gradient: over {calls} single draws index i came up "
                             f"{counts.tolist()} times, expected about {[round(float(x)) for x in p * calls]} "
                             f"(chi-square p = {pval:.1e}): draw i with probability probs[i]")


@ISG
@pytest.mark.points(4)
def test_importance_sampling_has_lower_variance_than_uniform(student):
    """With batch_size 1, the mean squared deviation of 2000 estimates from the mean must
    lie below the midpoint between importance sampling's variance and uniform sampling's,
    and above half of importance sampling's (an estimator with no spread is not sampling);
    false failure < 1e-7 on each side: Bernstein's inequality for the bounded squared deviation."""
    grads, probs = _isg_problem()
    values, p = _draw_law(grads, probs)
    mean = grads.mean(0)
    dev2 = ((values - mean) ** 2).sum(1)
    var_imp, m4_imp = float((p * dev2).sum()), float((p * dev2**2).sum())
    var_unif = float(((grads - mean) ** 2).sum(1).mean())
    threshold, low = (var_imp + var_unif) / 2, var_imp / 2
    calls = 2000
    for gap in (threshold - var_imp, var_imp - low):
        bound = math.exp(-calls * gap**2 / (2 * (m4_imp - var_imp**2) + 2 * (float(dev2.max()) + var_imp) * gap / 3))
        assert bound < STATS.ALPHA, bound  # the suite's own promise
    est = _single_draws(student, grads, probs, calls)
    got = float(((est - mean) ** 2).sum(1).mean())
    if got > threshold:
        raise GradingFailure(f"importance_sampled_gradient: mean squared error {got:.4g} with batch_size 1; importance "
                             f"sampling gives {var_imp:.4g} here, uniform sampling {var_unif:.4g}: sample i with "
                             "probability probs[i]")
    if got < low:
        raise GradingFailure(f"importance_sampled_gradient: mean squared error {got:.4g} with batch_size 1, far below "
                             f"the {var_imp:.4g} that one importance-weighted draw has: the estimate must come from "
                             "the drawn samples, not from all of them")


# -- sgd_least_squares (30 points) ------------------------------------------------------
SGD = pytest.mark.function("sgd_least_squares")


def _ls_problem(label, n=32, d=4):
    g = generator(label)
    A = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = A @ torch.randn(d, generator=g, dtype=torch.float64) + torch.randn(n, generator=g, dtype=torch.float64)
    return A, y, torch.ones(d, dtype=torch.float64)


def _losses(student, *args):
    got = student.call("sgd_least_squares", *args).value
    call = describe_call("sgd_least_squares", *args)
    num_epochs = args[4]
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (num_epochs + 1,):
        raise GradingFailure(f"{call}: expected losses of shape [{num_epochs + 1}] (f at x0, then after each epoch), "
                             f"got {getattr(got, 'shape', type(got).__name__)}")
    return got, call


@SGD
@pytest.mark.points(1)
def test_sgd_losses_shape_dtype_and_start(student):
    A, y, x0 = _ls_problem("ls-start")
    args = (A, y, x0, 0.05, 5, 4, "cyclic", 0)
    got, call = _losses(student, *args)
    if got.dtype != torch.float64:
        raise GradingFailure(f"{call}: losses must be float64, got {got.dtype}")
    expect_close(got[:1], torch.tensor([ref.least_squares_loss(A, y, x0)], dtype=torch.float64), call=call,
                 what="losses[0]", **F64, why="losses[0] is f(x0) = ||A x0 - y||^2 / (2 n)")
    # Shape and start are worth points only in a run that trains.
    expect_close(got, ref.sgd_least_squares(*args), call=call, what="the losses", **F64,
                 why="each step: x -= lr * A_S.T @ (A_S @ x - y_S) / |S|")


@SGD
@pytest.mark.points(1)
def test_sgd_leaves_its_inputs_unchanged(student):
    """A, y and x0 are as they were after the call (float64 x0: x0.double() is x0 itself)."""
    A, y, x0 = _ls_problem("ls-unchanged")
    args = (A, y, x0, 0.05, 5, 4, "cyclic", 0)
    want = ref.sgd_least_squares(*args)
    res = student.call("sgd_least_squares", *args, return_args=True)
    call = describe_call("sgd_least_squares", *args)
    for name, before, after in zip(("A", "y", "x0"), (A, y, x0), (res.args_after or [None] * 3)[:3]):
        expect_unchanged(before, after, call=call, name=name)
    # Leaving the inputs alone is worth points only in a call that computes the answer.
    expect_close(res.value, want, call=call, what="the losses", **F64,
                 why="each step: x -= lr * A_S.T @ (A_S @ x - y_S) / |S|")


@SGD
@pytest.mark.points(1)
def test_sgd_float32_inputs_are_computed_in_float64(student):
    """float32 inputs: the losses are still float64, computed in float64 from the inputs'
    values, as the notebook states (dlopt audit: a missing cast survived float64-only inputs)."""
    A, y, x0 = _ls_problem("ls-start")
    args32 = (A.float(), y.float(), x0.float(), 0.05, 5, 4, "cyclic", 0)
    got32, call32 = _losses(student, *args32)
    want32 = ref.sgd_least_squares(A.float().double(), y.float().double(), x0.float().double(), *args32[3:])
    expect_close(got32, want32, call=call32, what="the losses", **F64,
                 why="compute in float64 whatever the inputs' dtype: A.double(), y.double(), x0.double()")


@SGD
@pytest.mark.points(5)
def test_sgd_cyclic_exact(student):
    A, y, x0 = _ls_problem("ls-cyclic", n=30)
    args = (A, y, x0, 0.05, 6, 4, "cyclic", 0)  # 7 steps an epoch, 2 samples left out
    got, call = _losses(student, *args)
    expect_close(got, ref.sgd_least_squares(*args), call=call, what="the losses", **F64,
                 why="each step: x -= lr * A_S.T @ (A_S @ x - y_S) / |S|; an epoch is n // batch_size steps")


@SGD
@pytest.mark.points(4)
def test_sgd_step_size_schedule(student):
    A, y, x0 = _ls_problem("ls-lr")
    steps = 5 * (32 // 4)
    lr = [0.08 / math.sqrt(1 + t) for t in range(steps)]
    args = (A, y, x0, lr, 5, 4, "cyclic", 0)
    got, call = _losses(student, *args)
    expect_close(got, ref.sgd_least_squares(*args), call=call, what="the losses with one step size per step", **F64,
                 why="lr[t] is the step size of step t (counting steps across epochs from 0)")


@SGD
@pytest.mark.points(4)
@pytest.mark.parametrize("scheme", ["uniform", "random_reshuffling", "shuffle_once"])
def test_sgd_follows_its_own_sample_batches(student, scheme):
    """SGD along the batches that your sample_batches returns for the same seed."""
    A, y, x0 = _ls_problem(f"ls-{scheme}")
    n, b, epochs, seed = 32, 4, 6, 77
    got, call = _losses(student, A, y, x0, 0.05, epochs, b, scheme, seed)
    own = batches(student, n, b, epochs * (n // b), scheme, seed)
    expect_close(got, ref.sgd_on_batches(A, y, x0, 0.05, own, n // b), call=call, what="the losses", **F64,
                 why=f"draw the batches with sample_batches(n, batch_size, num_epochs * (n // batch_size), "
                     f"{scheme!r}, seed)")


@SGD
@pytest.mark.points(6)
def test_reshuffling_beats_uniform_sampling(student):
    """Over 80 seed pairs, random reshuffling must end below uniform sampling in at least 60
    (a correct solution wins each pair with probability >= 0.95, re-measured on the reference:
    false failure P(Binomial(80, 0.95) < 60) = 2.7e-10)."""
    A, y, x0 = _ls_problem("ls-rr")
    wins = 0
    for k in range(80):
        rr = _losses(student, A, y, x0, 0.05, 20, 4, "random_reshuffling", 1000 + k)[0]
        un = _losses(student, A, y, x0, 0.05, 20, 4, "uniform", 5000 + k)[0]
        wins += float(rr[-1]) < float(un[-1])
    if wins < 60:
        raise GradingFailure(f"random reshuffling ended below uniform sampling in only {wins} of 80 runs "
                             "(lr 0.05, 20 epochs): with a fresh permutation each epoch it should almost always win")
