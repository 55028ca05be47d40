"""Public tests of `compression`: what a student sees before submitting (visibility
"public"). The hidden suite checks more cases of the same rules (the notebook lists them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autograder.judge.compare import GradingFailure
from autograder.judge.suite import load_module

HERE = Path(__file__).resolve().parent
T = load_module(HERE / "test_hidden.py", "compression_hidden_for_public")
pytestmark = pytest.mark.visibility("public")


@pytest.mark.function("topk_compress")
@pytest.mark.points(2)
def test_public_topk(student, device):
    """The 3 largest of 10 entries of distinct magnitude."""
    x = torch.tensor([0.5, -3.0, 1.0, 2.0, -0.25, 4.0, 0.125, -1.5, 0.75, 2.5])
    T.topk_case(student, device, x, 3)


@pytest.mark.function("randk_compress")
@pytest.mark.points(2)
def test_public_randk(student, device):
    """d = 10, k = 4, seed 0: randperm's first 4 indices, values scaled by 10 / 4."""
    T.randk_case(student, device, torch.arange(1.0, 11.0), 4, 0)


@pytest.mark.function("qsgd")
@pytest.mark.points(2)
def test_public_qsgd(student, device):
    """d = 8, s = 4, seed 1."""
    from autograder.judge.suite import generator

    x = T.C.qsgd_input(generator("public-qsgd"), 8, 4, 1, torch.float32)
    T.qsgd_case(student, device, x, 4, 1)


@pytest.mark.function("error_feedback_step")
@pytest.mark.points(2)
def test_public_error_feedback(student, device):
    """Three steps with the grader's top-3 compressor, float32."""
    g = torch.Generator().manual_seed(2)
    grads = [torch.randn(8, generator=g) for _ in range(3)]
    T.ef_run(student, device, "top3", grads, torch.zeros(8), "float32")


@pytest.mark.function("gossip_average")
@pytest.mark.points(2)
def test_public_gossip_three_ranks(student, device):
    """Three ranks, uniform weights, x of 5 entries."""
    cases, xs = T.gossip_cases("public-gossip", 3, 5, torch.float64, (1 / 3, 1 / 3, 1 / 3))
    reply = T.run_ranks(student, 3, [cases], device, "gossip_average on 3 ranks")
    want = T.gossip_expected(xs, (1 / 3, 1 / 3, 1 / 3))
    for r in range(3):
        res = reply.value["results"][r][0] if reply.value["results"][r] else None
        if T.rank_failure(res):
            raise GradingFailure(f"gossip_average on 3 ranks, rank {r}: {T.rank_failure(res)}")
        T.C.expect_near(res["value"], want[r], 1e-12, call=f"gossip_average on 3 ranks, rank {r}", what="x_new")
