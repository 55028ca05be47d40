"""Public tests of `adam`: run them with `dlopt test adam.ipynb`.

They compare your functions with torch.optim itself on a few small cases; the hidden
suite checks many more (trajectories, weight decay, eps, parameter groups, ...).
Tolerance: 16 float32 ulps of the largest entry plus 16 ulps relative, as the
hidden suite uses (a short elementwise formula; see the hidden suite's notes).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autograder.judge.compare import describe_call, expect_close, expect_tuple, tolerance_for
from autograder.judge.suite import generator, load_module, randn
from autograder.protocol.specs import build_mlp, mlp_spec

pytestmark = pytest.mark.visibility("public")
HARNESS = load_module(Path(__file__).resolve().parents[1] / "harness.py")


def _torch_step(opt_cls, param, grad, steps=1, **hyper):
    p = torch.nn.Parameter(param.clone())
    opt = opt_cls([p], foreach=False, **hyper)
    for _ in range(steps):
        p.grad = grad.clone()
        opt.step()
    return p.detach(), opt.state[p]


def _tol(t, rtol=None):
    """16 ulps relative plus 16 ulps of the largest entry (the hidden suite's tolerance)."""
    tol = tolerance_for(t.dtype, factor=16, scale=float(t.abs().max()))
    return tol if rtol is None else tol._replace(rtol=rtol)


@pytest.mark.points(1)
@pytest.mark.function("sgd_momentum_step")
def test_public_sgd_momentum_first_step(student, device):
    """One step of SGD with momentum and weight decay equals torch.optim.SGD's."""
    g = generator("public-sgd")
    param, grad = randn(g, 5, 4), randn(g, 5, 4)
    hyper = dict(lr=0.1, momentum=0.9, weight_decay=0.01)
    want, state = _torch_step(torch.optim.SGD, param, grad, **hyper)
    got = student.call("sgd_momentum_step", param.to(device), grad.to(device), None, **hyper).value
    call = describe_call("sgd_momentum_step", param, grad, None, **hyper)
    got = expect_tuple(got, 2, call=call, names="new param, momentum buffer")
    expect_close(got[0], want, call=call, what="the new param", tol=_tol(want))
    expect_close(got[1], state["momentum_buffer"], call=call, what="the momentum buffer",
                 tol=_tol(state["momentum_buffer"]))


@pytest.mark.points(1)
@pytest.mark.function("adam_step")
def test_public_adamw_first_step(student, device):
    """One step of AdamW equals torch.optim.AdamW's (bias correction included)."""
    g = generator("public-adamw")
    param, grad = randn(g, 6, 3), randn(g, 6, 3, scale=0.1)
    want, state = _torch_step(torch.optim.AdamW, param, grad, lr=1e-2, weight_decay=0.1)
    zeros = torch.zeros_like(param)
    got = student.call("adam_step", param.to(device), grad.to(device), zeros.to(device), zeros.to(device), 1,
                       lr=1e-2, weight_decay=0.1, decoupled=True).value
    call = describe_call("adam_step", param, grad, zeros, zeros, 1, lr=1e-2, weight_decay=0.1, decoupled=True)
    got = expect_tuple(got, 3, call=call, names="new param, exp_avg, exp_avg_sq")
    expect_close(got[0], want, call=call, what="the new param", tol=_tol(want))
    expect_close(got[1], state["exp_avg"], call=call, what="exp_avg", tol=_tol(state["exp_avg"], rtol=1e-6))
    expect_close(got[2], state["exp_avg_sq"], call=call, what="exp_avg_sq", tol=_tol(state["exp_avg_sq"], rtol=1e-6))


@pytest.mark.points(1)
@pytest.mark.function("AdamW")
def test_public_adamw_trains_like_torch(student, device):
    """30 steps on a small MLP: your AdamW and torch.optim.AdamW end at the same weights."""
    g = generator("public-train")
    torch.manual_seed(0)
    model = build_mlp([4, 8, 2], {}, "tanh")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    X, Y = randn(g, 32, 4), randn(g, 32, 2)
    spec = mlp_spec([4, 8, 2], state, "tanh")
    spec.params["device"] = device
    got = student.task("train_adamw", spec, X.to(device), Y.to(device), None, {"lr": 1e-2}, 30,
                       what="training a small MLP with your AdamW").value
    exp = HARNESS.train_adamw({"AdamW": torch.optim.AdamW}, model, X, Y, None, {"lr": 1e-2}, 30)
    for k, (a, b) in enumerate(zip(got["params"], exp["params"])):
        expect_close(a, b, call="AdamW(model.parameters(), lr=1e-2)", what=f"parameter {k} after 30 steps",
                     rtol=1e-4, atol=1e-4)
