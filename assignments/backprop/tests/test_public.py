"""Public tests of `backprop`: run them with `dlopt test backprop.ipynb`.

Each compares one function with what autograd computes for the same forward pass
(autograd is fine here, on the grading side; your functions run with it disabled).
Small float64 inputs: a correct answer agrees to about 1e-10 (tolerance 1e-9).
"""

from __future__ import annotations

import pytest
import torch

from autograder.judge.compare import describe_call, expect_close, expect_tuple
from autograder.judge.suite import generator, randn

pytestmark = pytest.mark.visibility("public")
TOL = dict(rtol=1e-9, atol=1e-12)


def _call(student, device, fn, *args, **kwargs):
    return student.call(fn, *[a.to(device) for a in args], autograd=False, **kwargs).value


@pytest.mark.points(1)
@pytest.mark.function("softmax_cross_entropy")
def test_public_cross_entropy(student, device):
    g = generator("pub-ce")
    x, y = randn(g, 5, 7, dtype=torch.float64), torch.randint(0, 7, (5,), generator=g)
    xr = x.clone().requires_grad_()
    loss = torch.nn.functional.cross_entropy(xr, y)
    loss.backward()
    got = _call(student, device, "softmax_cross_entropy", x, y)
    call = describe_call("softmax_cross_entropy", x, y)
    got = expect_tuple(got, 2, call=call, names="loss, dlogits")
    expect_close(got[0], loss.detach(), call=call, what="the loss", **TOL)
    expect_close(got[1], xr.grad, call=call, what="dlogits", **TOL)


@pytest.mark.points(1)
@pytest.mark.function("linear_backward")
def test_public_linear_backward(student, device):
    g = generator("pub-lin")
    x, W, b, d = (randn(g, *s, dtype=torch.float64) for s in [(4, 3), (3, 2), (2,), (4, 2)])
    xr, Wr, br = (t.clone().requires_grad_() for t in (x, W, b))
    (xr @ Wr + br).backward(d)
    got = _call(student, device, "linear_backward", d, x, W, b)
    call = describe_call("linear_backward", d, x, W, b)
    got = expect_tuple(got, 3, call=call, names="dx, dW, db")
    for k, (name, ref) in enumerate([("dx", xr.grad), ("dW", Wr.grad), ("db", br.grad)]):
        expect_close(got[k], ref, call=call, what=name, **TOL)


@pytest.mark.points(1)
@pytest.mark.function("relu_backward")
def test_public_relu_backward(student, device):
    x = torch.tensor([[-1.0, 0.0, 2.0]], dtype=torch.float64)
    d = torch.tensor([[5.0, 6.0, 7.0]], dtype=torch.float64)
    expect_close(_call(student, device, "relu_backward", d, x), torch.tensor([[0.0, 0.0, 7.0]], dtype=torch.float64),
                 call=describe_call("relu_backward", d, x), what="dx", rtol=0, atol=0,
                 why="the derivative of ReLU at exactly 0 is taken as 0")


@pytest.mark.points(1)
@pytest.mark.function("layer_norm_forward")
def test_public_layer_norm_forward(student, device):
    g = generator("pub-lnf")
    x, w, b = randn(g, 3, 8, dtype=torch.float64), randn(g, 8, dtype=torch.float64), randn(g, 8, dtype=torch.float64)
    want = torch.nn.functional.layer_norm(x, (8,), w, b, 1e-5)
    expect_close(_call(student, device, "layer_norm_forward", x, w, b), want,
                 call=describe_call("layer_norm_forward", x, w, b), what="y", **TOL)


@pytest.mark.points(1)
@pytest.mark.function("layer_norm_backward")
def test_public_layer_norm_backward(student, device):
    g = generator("pub-lnb")
    x, w, b = randn(g, 3, 8, dtype=torch.float64), randn(g, 8, dtype=torch.float64), randn(g, 8, dtype=torch.float64)
    dy = randn(g, 3, 8, dtype=torch.float64)
    xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
    torch.nn.functional.layer_norm(xr, (8,), wr, br, 1e-5).backward(dy)
    got = _call(student, device, "layer_norm_backward", dy, x, w, b)
    call = describe_call("layer_norm_backward", dy, x, w, b)
    got = expect_tuple(got, 3, call=call, names="dx, dgamma, dbeta")
    for k, (name, ref) in enumerate([("dx", xr.grad), ("dgamma", wr.grad), ("dbeta", br.grad)]):
        expect_close(got[k], ref, call=call, what=name, **TOL)
