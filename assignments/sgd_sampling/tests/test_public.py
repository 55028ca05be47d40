"""Public tests of `sgd_sampling`: run them with `dlopt test sgd_sampling.ipynb`.

The hidden suite tests the random schemes by their laws (coverage, uniformity,
independence) with statistical tests, never by one random stream.
"""

from __future__ import annotations

import pytest
import torch

from autograder.judge.compare import GradingFailure, describe_call, expect_close

pytestmark = pytest.mark.visibility("public")
SCHEMES = ["uniform", "random_reshuffling", "shuffle_once", "cyclic"]


@pytest.mark.points(2)
@pytest.mark.function("sample_batches")
def test_public_shapes_and_ranges(student):
    for scheme in SCHEMES:
        got = student.call("sample_batches", 10, 3, 8, scheme, 0).value
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != (8, 3) or got.dtype != torch.int64:
            raise GradingFailure(f"sample_batches(10, 3, 8, {scheme!r}, 0): expected int64[8, 3], got "
                                 f"{getattr(got, 'dtype', type(got).__name__)}{list(getattr(got, 'shape', []))}")
        if int(got.min()) < 0 or int(got.max()) > 9:
            raise GradingFailure(f"sample_batches(10, 3, 8, {scheme!r}, 0): indices outside 0..9")


@pytest.mark.points(2)
@pytest.mark.function("sample_batches")
def test_public_cyclic(student):
    got = student.call("sample_batches", 5, 2, 4, "cyclic", 0).value
    want = torch.tensor([[0, 1], [2, 3], [0, 1], [2, 3]])
    if not torch.equal(got, want):
        raise GradingFailure(f"sample_batches(5, 2, 4, 'cyclic', 0): expected {want.tolist()}, got {got.tolist()}")


@pytest.mark.points(1)
@pytest.mark.function("importance_probabilities")
def test_public_importance_probabilities(student):
    L = torch.tensor([1.0, 3.0, 4.0], dtype=torch.float64)
    expect_close(student.call("importance_probabilities", L).value, torch.tensor([0.125, 0.375, 0.5], dtype=torch.float64),
                 call=describe_call("importance_probabilities", L), what="probs", rtol=1e-15, atol=0)


@pytest.mark.points(1)
@pytest.mark.function("sgd_least_squares")
def test_public_sgd_cyclic_one_sample_batches(student):
    """Two samples, batch size 1, cyclic: x0 = 0, A = I, y = (1, 2), lr = 0.5."""
    A, y, x0 = torch.eye(2, dtype=torch.float64), torch.tensor([1.0, 2.0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    got = student.call("sgd_least_squares", A, y, x0, 0.5, 2, 1, "cyclic", 0).value
    # f(x) = ((x1 - 1)^2 + (x2 - 2)^2) / 4; each step halves one coordinate's error.
    want = torch.tensor([1.25, 0.3125, 0.078125], dtype=torch.float64)
    expect_close(got, want, call=describe_call("sgd_least_squares", A, y, x0, 0.5, 2, 1, "cyclic", 0),
                 what="the losses", rtol=1e-12, atol=1e-15)
