"""Public tests of `muon`: what a student sees before submitting (visibility "public").
The hidden suite checks more cases of the same rules (the notebook lists them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autograder.judge.compare import describe_call, expect_tuple
from autograder.judge.suite import load_module
from reference import muon as ref

C = load_module(Path(__file__).resolve().parent / "checks.py", "muon_checks")
pytestmark = pytest.mark.visibility("public")


@pytest.mark.function("newton_schulz")
@pytest.mark.points(3)
def test_public_newton_schulz(student, device):
    """A random 32 x 16 matrix: bfloat16 out, within 12% (Frobenius) of torch.optim.Muon's."""
    G = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    call = describe_call("newton_schulz", G)
    got = C.expect_tensor(student.call("newton_schulz", G.to(device)).value, call=call, what="the result",
                          shape=G.shape, dtype=torch.bfloat16)
    want = ref.newton_schulz(G)
    C.expect_near(got, want, C.NS_RTOL * float(want.double().norm()), call=call, what="the result",
                  measure=f"{C.NS_RTOL} of its norm")


@pytest.mark.function("muon_step")
@pytest.mark.points(2)
def test_public_muon_step_first_step(student, device):
    """The first step (buf None) of a 16 x 24 matrix with the defaults."""
    g = torch.Generator().manual_seed(1)
    param, grad = torch.randn(16, 24, generator=g), torch.randn(16, 24, generator=g)
    call = describe_call("muon_step", param, grad, None, lr=0.02)
    got = expect_tuple(student.call("muon_step", param.to(device), grad.to(device), None, lr=0.02).value, 2,
                       call=call, names="new param, new buffer")
    want, want_buf, ortho = ref.muon_step(param, grad, None, lr=0.02)
    C.expect_tensor(got[0], call=call, what="the new param", shape=param.shape, dtype=param.dtype)
    C.expect_near(got[1], want_buf, 1e-5 * float(want_buf.norm()), call=call, what="the new buffer")
    C.expect_near(got[0], want, C.NS_RTOL * 0.02 * float(ortho.double().norm()) + 1e-5, call=call, what="the new param",
                  measure=f"{C.NS_RTOL} of lr' * ||O||")
