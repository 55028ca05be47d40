"""Public tests of `low_rank`: what a student sees before submitting (visibility "public").
The hidden suite checks more cases of the same rules (the notebook lists them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autograder.judge.compare import describe_call, expect_close, expect_tuple
from autograder.judge.suite import load_module
from reference import low_rank as ref

C = load_module(Path(__file__).resolve().parent / "checks.py", "low_rank_checks")
pytestmark = pytest.mark.visibility("public")


def _inputs(seed, n=6, d_in=10, d_out=8, r=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) for s in ((n, d_in), (d_out, d_in), (d_out,), (r, d_in), (d_out, r))]


@pytest.mark.function("lora_forward")
@pytest.mark.points(2)
def test_public_lora_forward(student, device):
    """x W^T + b + scaling (x A^T) B^T on a small layer."""
    x, W, b, A, B = _inputs(0)
    call = describe_call("lora_forward", x, W, b, A, B, 2.0)
    got = student.call("lora_forward", *(t.to(device) for t in (x, W, b, A, B)), 2.0).value
    expect_close(got, ref.lora_forward(x.double(), W.double(), b.double(), A.double(), B.double(), 2.0).float(),
                 call=call, what="y", rtol=0.0, atol=C.bound(torch.float32, 10, C.forward_magnitude(x, W, b, A, B, 2.0)))


@pytest.mark.function("lora_backward")
@pytest.mark.points(2)
def test_public_lora_backward(student, device):
    """(dx, dA, dB) on a small layer."""
    x, W, _, A, B = _inputs(1)
    dy = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))
    call = describe_call("lora_backward", dy, x, W, A, B, 0.5)
    got = expect_tuple(student.call("lora_backward", *(t.to(device) for t in (dy, x, W, A, B)), 0.5).value, 3,
                       call=call, names="dx, dA, dB")
    want = ref.lora_backward(*(t.double() for t in (dy, x, W, A, B)), 0.5)
    for g, w, name in zip(got, want, ("dx", "dA", "dB")):
        expect_close(g, w.float(), call=call, what=name, rtol=1e-5, atol=1e-5)


@pytest.mark.function("galore_adamw_step")
@pytest.mark.points(2)
def test_public_galore_first_step(student, device):
    """The first step on a 12 x 6 matrix with rank 2, from an empty state."""
    g = torch.Generator().manual_seed(3)
    param, grad = torch.randn(12, 6, generator=g), torch.randn(12, 6, generator=g)
    call = describe_call("galore_adamw_step", param, grad, {}, lr=0.01, rank=2)
    new, state = expect_tuple(student.call("galore_adamw_step", param.to(device), grad.to(device), {}, lr=0.01,
                                           rank=2).value, 2, call=call, names="new param, state")
    want, _ = ref.galore_adamw_step(param.double(), grad, {}, lr=0.01, rank=2)
    expect_close(new, want.float(), call=call, what="the new param", tol=C.galore_tol(want))
