"""Hidden suite of `backprop`: every function against the float64 reference
(`reference/backprop.py`, itself checked against autograd in
tests/test_reference_backprop.py), at several shapes, float32 and float64.

Student functions are called under torch.inference_mode() (`autograd=False`): autograd
records nothing there, so a gradient must be computed by hand; the forbidden-API check
reports any use of autograd, torch.func or the library's losses and layers.

Tolerances come from the arithmetic. An output entry that sums K products, computed
in a dtype with machine epsilon eps, carries a rounding error of order eps * sqrt(K)
(a random walk of K roundings) times the size of the terms summed; we allow
16 * eps * sqrt(K) relative to the largest term (`_tol`): 2e-13 to 3e-12 in float64
and 1e-4 to 2e-5 in float32 here. Logits of size L add an absolute error of about
eps * L to x - max(x) and so to the loss and to each exp() (`extra`). The bugs this
suite targets change entries by 1e-3 to 1e+0 relative (unbiased variance: 1/D;
a missing 1/N; ReLU's derivative at 0; a transposed gradient; overflow to inf/NaN).
"""

from __future__ import annotations

import math

import pytest
import torch

from autograder.judge.compare import (
    GradingFailure,
    describe_call,
    expect_close,
    expect_tuple,
    expect_unchanged,
    tolerance_for,
)
from autograder.judge.suite import generator, randn
from reference import backprop as ref


def _tol(dtype, k, scale, extra=0.0):
    """16 ulps grown with the square root of the reduction length k, plus `extra`;
    absolute part relative to `scale`, the magnitude of the terms summed."""
    return dict(tol=tolerance_for(dtype, k, 16, scale=scale, extra=extra))


def _call(student, device, fn, *args, **kwargs):
    return student.call(fn, *[a.to(device) if isinstance(a, torch.Tensor) else a for a in args],
                        autograd=False, **kwargs).value


def _abs_matmul_scale(a, b):
    return float((a.double().abs() @ b.double().abs()).max())


# --------------------------------------------------------------------------------------
# softmax_cross_entropy (29 points, 1 more in the public tests)
# --------------------------------------------------------------------------------------
CE = pytest.mark.function("softmax_cross_entropy")


def _check_ce(student, device, label, n, c, dtype, scale=1.0):
    g = generator(label)
    logits = randn(g, n, c, dtype=dtype, scale=scale)
    labels = torch.randint(0, c, (n,), generator=g)
    call = describe_call("softmax_cross_entropy", logits, labels)
    loss, dlogits = expect_tuple(_call(student, device, "softmax_cross_entropy", logits, labels), 2, call=call)
    e_loss, e_d = ref.softmax_cross_entropy(logits.double(), labels)
    # x - max(x) is exact to within eps * max|x|: that error reaches the loss and every exp().
    extra = 8 * torch.finfo(dtype).eps * float(logits.abs().max())
    expect_close(loss, e_loss.to(dtype), call=call, what="the loss", check_dtype=True,
                 **_tol(dtype, c, max(1.0, float(e_loss.abs())), extra),
                 why="the loss is the mean over the batch of logsumexp(x_i) - x_i[y_i]")
    expect_close(dlogits, e_d.to(dtype), call=call, what="dlogits", **_tol(dtype, c, 1.0 / n, extra),
                 why="dlogits = (softmax(x) - one_hot(y)) / N")


@CE
@pytest.mark.points(3)
@pytest.mark.parametrize("n,c", [(1, 2), (7, 11), (64, 10)])
def test_cross_entropy_float64(student, device, n, c):
    _check_ce(student, device, f"ce-{n}-{c}", n, c, torch.float64, scale=3.0)


@CE
@pytest.mark.points(3)
def test_cross_entropy_float32(student, device):
    _check_ce(student, device, "ce-f32", 33, 100, torch.float32, scale=3.0)


@CE
@pytest.mark.points(5)
def test_cross_entropy_large_vocabulary(student, device):
    """C = 32768 classes, as in a language model's output layer."""
    _check_ce(student, device, "ce-vocab", 8, 32768, torch.float32, scale=4.0)


@CE
@pytest.mark.points(6)
def test_cross_entropy_extreme_logits_float32(student, device):
    """|logits| up to about 1e4: the result must be finite and accurate (subtract the row max)."""
    _check_ce(student, device, "ce-extreme32", 16, 50, torch.float32, scale=3e3)


@CE
@pytest.mark.points(4)
def test_cross_entropy_extreme_logits_float64(student, device):
    _check_ce(student, device, "ce-extreme64", 16, 50, torch.float64, scale=3e3)


@CE
@pytest.mark.points(2)
def test_cross_entropy_leaves_logits_alone(student, device):
    g = generator("ce-inplace")
    logits, labels = randn(g, 6, 9), torch.randint(0, 9, (6,), generator=g)
    res = student.call("softmax_cross_entropy", logits.to(device), labels.to(device), autograd=False,
                       return_args=True)
    call = describe_call("softmax_cross_entropy", logits, labels)
    expect_unchanged(logits, (res.args_after or [None])[0], call=call, name="logits")
    # Leaving the inputs alone is worth points only in a call that computes the answer.
    loss, dlogits = expect_tuple(res.value, 2, call=call)
    e_loss, e_d = ref.softmax_cross_entropy(logits.double(), labels)
    expect_close(loss, e_loss.to(logits.dtype), call=call, what="the loss", **_tol(logits.dtype, 9, 1.0))
    expect_close(dlogits, e_d.to(logits.dtype), call=call, what="dlogits", **_tol(logits.dtype, 9, 1.0))


# --------------------------------------------------------------------------------------
# linear_forward / linear_backward (13 points, 1 more in the public tests)
# --------------------------------------------------------------------------------------
@pytest.mark.function("linear_forward")
@pytest.mark.points(2)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_linear_forward(student, device, dtype):
    g = generator(f"lin-fwd-{dtype}")
    x, W, b = randn(g, 13, 24, dtype=dtype), randn(g, 24, 7, dtype=dtype), randn(g, 7, dtype=dtype)
    call = describe_call("linear_forward", x, W, b)
    expect_close(_call(student, device, "linear_forward", x, W, b), ref.linear_forward(x.double(), W.double(), b.double()).to(dtype),
                 call=call, what="out", **_tol(dtype, 24, _abs_matmul_scale(x, W) + float(b.abs().max())),
                 why="out = x @ W + b, with W of shape [Din, Dout]")


def _check_linear_backward(student, device, label, n, din, dout, dtype):
    g = generator(label)
    x, W, b = randn(g, n, din, dtype=dtype), randn(g, din, dout, dtype=dtype), randn(g, dout, dtype=dtype)
    d = randn(g, n, dout, dtype=dtype)
    call = describe_call("linear_backward", d, x, W, b)
    dx, dW, db = expect_tuple(_call(student, device, "linear_backward", d, x, W, b), 3, call=call)
    e = ref.linear_backward(d.double(), x.double(), W.double(), b.double())
    expect_close(dx, e[0].to(dtype), call=call, what="dx", **_tol(dtype, dout, _abs_matmul_scale(d, W.T)),
                 why="dx = dout @ W.T")
    expect_close(dW, e[1].to(dtype), call=call, what="dW", **_tol(dtype, n, _abs_matmul_scale(x.T, d)),
                 why="dW = x.T @ dout, of the shape of W")
    expect_close(db, e[2].to(dtype), call=call, what="db", **_tol(dtype, n, float(d.abs().sum(0).max())),
                 why="db sums dout over the batch (not the mean)")


@pytest.mark.function("linear_backward")
@pytest.mark.points(3)
@pytest.mark.parametrize("n,din,dout", [(16, 8, 8), (5, 31, 3)])
def test_linear_backward_float64(student, device, n, din, dout):
    _check_linear_backward(student, device, f"lin-bwd-{n}-{din}-{dout}", n, din, dout, torch.float64)


@pytest.mark.function("linear_backward")
@pytest.mark.points(2)
def test_linear_backward_float32(student, device):
    _check_linear_backward(student, device, "lin-bwd-f32", 64, 40, 20, torch.float32)


@pytest.mark.function("linear_backward")
@pytest.mark.points(1)
def test_linear_backward_leaves_inputs_alone(student, device):
    g = generator("lin-inplace")
    x, W, b, d = randn(g, 4, 3), randn(g, 3, 5), randn(g, 5), randn(g, 4, 5)
    res = student.call("linear_backward", d.to(device), x.to(device), W.to(device), b.to(device), autograd=False,
                       return_args=True)
    call = describe_call("linear_backward", d, x, W, b)
    for name, before, after in zip(["dout", "x", "W", "b"], [d, x, W, b], res.args_after or []):
        expect_unchanged(before, after, call=call, name=name)
    # ... in a call that computes the answer (a function that does nothing leaves them alone too).
    e = ref.linear_backward(d.double(), x.double(), W.double(), b.double())
    for got, exp, what in zip(expect_tuple(res.value, 3, call=call), e, ("dx", "dW", "db")):
        expect_close(got, exp.to(x.dtype), call=call, what=what, **_tol(x.dtype, 5, 10.0))


# --------------------------------------------------------------------------------------
# relu_backward (5 points, 1 more in the public tests)
# --------------------------------------------------------------------------------------
@pytest.mark.function("relu_backward")
@pytest.mark.points(3)
def test_relu_backward_with_exact_zeros(student, device):
    """x has entries exactly 0, where the derivative is 0 (as torch's ReLU takes it)."""
    g = generator("relu")
    x = randn(g, 20, 30, dtype=torch.float64)
    x[::3, ::4] = 0.0  # deliberate exact zeros: the one place where `x >= 0` and `x > 0` differ
    d = randn(g, 20, 30, dtype=torch.float64)
    call = describe_call("relu_backward", d, x)
    expect_close(_call(student, device, "relu_backward", d, x), ref.relu_backward(d, x), call=call, what="dx",
                 rtol=0, atol=0, why="dx = dout where x > 0, and 0 where x <= 0 (including x == 0)")


@pytest.mark.function("relu_backward")
@pytest.mark.points(2)
def test_relu_backward_float32(student, device):
    g = generator("relu32")
    x, d = randn(g, 7, 9), randn(g, 7, 9)
    expect_close(_call(student, device, "relu_backward", d, x), ref.relu_backward(d, x),
                 call=describe_call("relu_backward", d, x), what="dx", rtol=0, atol=0)


# --------------------------------------------------------------------------------------
# layer_norm_forward (11 points, 1 more in the public tests)
# --------------------------------------------------------------------------------------
def _ln_inputs(label, n, d, dtype):
    g = generator(label)
    x = randn(g, n, d, dtype=dtype, scale=2.0) + 1.5  # an offset: a missing mean subtraction shows
    return x, randn(g, d, dtype=dtype), randn(g, d, dtype=dtype), randn(g, n, d, dtype=dtype)


def _check_ln_forward(student, device, label, n, d, dtype, eps=None):
    x, gamma, beta, _ = _ln_inputs(label, n, d, dtype)
    kw = {} if eps is None else {"eps": eps}
    call = describe_call("layer_norm_forward", x, gamma, beta, **kw)
    e = ref.layer_norm_forward(x.double(), gamma.double(), beta.double(), **kw)
    expect_close(_call(student, device, "layer_norm_forward", x, gamma, beta, **kw), e.to(dtype), call=call,
                 what="y", **_tol(dtype, d, float(e.abs().max())),
                 why="biased variance (divide by D), eps inside the square root: (x - mean) / sqrt(var + eps)")


@pytest.mark.function("layer_norm_forward")
@pytest.mark.points(3)
@pytest.mark.parametrize("n,d", [(10, 64), (3, 7)])
def test_layer_norm_forward_float64(student, device, n, d):
    _check_ln_forward(student, device, f"ln-f-{n}-{d}", n, d, torch.float64)


@pytest.mark.function("layer_norm_forward")
@pytest.mark.points(3)
def test_layer_norm_forward_float32(student, device):
    _check_ln_forward(student, device, "ln-f-f32", 32, 256, torch.float32)


@pytest.mark.function("layer_norm_forward")
@pytest.mark.points(2)
def test_layer_norm_forward_custom_eps(student, device):
    """eps = 0.5 with rows of small variance: where eps goes matters."""
    x, gamma, beta, _ = _ln_inputs("ln-eps", 6, 16, torch.float64)
    x = x * 0.3
    call = describe_call("layer_norm_forward", x, gamma, beta, eps=0.5)
    expect_close(_call(student, device, "layer_norm_forward", x, gamma, beta, eps=0.5),
                 ref.layer_norm_forward(x, gamma, beta, eps=0.5), call=call, what="y", rtol=1e-10, atol=1e-12,
                 why="use the eps argument, inside the square root")


# --------------------------------------------------------------------------------------
# layer_norm_backward (17 points, 1 more in the public tests)
# --------------------------------------------------------------------------------------
def _check_ln_backward(student, device, label, n, d, dtype, eps=None, shrink=1.0):
    x, gamma, beta, dy = _ln_inputs(label, n, d, dtype)
    x = x * shrink
    kw = {} if eps is None else {"eps": eps}
    call = describe_call("layer_norm_backward", dy, x, gamma, beta, **kw)
    dx, dgamma, dbeta = expect_tuple(_call(student, device, "layer_norm_backward", dy, x, gamma, beta, **kw), 3, call=call)
    e = ref.layer_norm_backward(dy.double(), x.double(), gamma.double(), beta.double(), **kw)
    expect_close(dx, e[0].to(dtype), call=call, what="dx", **_tol(dtype, d, float(e[0].abs().max()) + 1e-300),
                 why="dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma")
    xd = x.double()
    xhat = (xd - xd.mean(-1, keepdim=True)) * torch.rsqrt(xd.var(-1, unbiased=False, keepdim=True) + (eps or 1e-5))
    expect_close(dgamma, e[1].to(dtype), call=call, what="dgamma",
                 **_tol(dtype, n * d, float((dy.double() * xhat).abs().sum(0).max())),
                 why="dgamma = sum over rows of dy * xhat")
    expect_close(dbeta, e[2].to(dtype), call=call, what="dbeta", **_tol(dtype, n, float(dy.abs().sum(0).max())),
                 why="dbeta = sum over rows of dy")


@pytest.mark.function("layer_norm_backward")
@pytest.mark.points(4)
@pytest.mark.parametrize("n,d", [(12, 48), (5, 9)])
def test_layer_norm_backward_float64(student, device, n, d):
    _check_ln_backward(student, device, f"ln-b-{n}-{d}", n, d, torch.float64)


@pytest.mark.function("layer_norm_backward")
@pytest.mark.points(4)
def test_layer_norm_backward_float32(student, device):
    _check_ln_backward(student, device, "ln-b-f32", 40, 128, torch.float32)


@pytest.mark.function("layer_norm_backward")
@pytest.mark.points(3)
def test_layer_norm_backward_wide_rows(student, device):
    """D = 4096 features, as in a transformer's hidden state."""
    _check_ln_backward(student, device, "ln-b-wide", 4, 4096, torch.float32)


@pytest.mark.function("layer_norm_backward")
@pytest.mark.points(2)
def test_layer_norm_backward_custom_eps(student, device):
    _check_ln_backward(student, device, "ln-b-eps", 6, 16, torch.float64, eps=0.5, shrink=0.3)


# --------------------------------------------------------------------------------------
# mlp_loss_and_grads (20 points)
# --------------------------------------------------------------------------------------
MLP = pytest.mark.function("mlp_loss_and_grads")


def _mlp_problem(label, depth, dtype, n=24, sizes=(10, 16, 12, 8, 5)):
    g = generator(label)
    dims = list(sizes[:depth]) + [sizes[-1]]
    params = {}
    for i in range(1, depth + 1):
        params[f"W{i}"] = randn(g, dims[i - 1], dims[i], dtype=dtype, scale=1 / math.sqrt(dims[i - 1]))
        params[f"b{i}"] = randn(g, dims[i], dtype=dtype, scale=0.3)
    x = randn(g, n, dims[0], dtype=dtype)
    labels = torch.randint(0, dims[-1], (n,), generator=g)
    return params, x, labels, dims


def _check_mlp(student, device, label, depth, dtype):
    params, x, labels, dims = _mlp_problem(label, depth, dtype)
    call = describe_call("mlp_loss_and_grads", {k: v for k, v in params.items()}, x, labels)
    loss, grads = expect_tuple(_call(student, device, "mlp_loss_and_grads", params, x, labels), 2, call=call)
    e_loss, e_grads = ref.mlp_loss_and_grads({k: v.double() for k, v in params.items()}, x.double(), labels)
    if not isinstance(grads, dict) or set(grads) != set(params):
        got_keys = sorted(grads) if isinstance(grads, dict) else type(grads).__name__
        raise GradingFailure(f"{call}: grads must have exactly the keys of params {sorted(params)}, got {got_keys}")
    k = max(dims)
    expect_close(loss, e_loss.to(dtype), call=call, what="the loss", **_tol(dtype, k * depth, max(1.0, float(e_loss))),
                 why="hidden layers are linear then ReLU; the last layer is linear; mean softmax cross-entropy")
    for name in params:
        e = e_grads[name]
        expect_close(grads[name], e.to(dtype), call=call, what=f"grads[{name!r}]",
                     **_tol(dtype, k * depth * 4, float(e.abs().max()) + 1e-30))


@MLP
@pytest.mark.points(4)
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_mlp_depths_float64(student, device, depth):
    _check_mlp(student, device, f"mlp-{depth}", depth, torch.float64)


@MLP
@pytest.mark.points(2)
def test_mlp_float32(student, device):
    _check_mlp(student, device, "mlp-f32", 2, torch.float32)


@MLP
@pytest.mark.points(2)
def test_mlp_grads_keys_match_params(student, device):
    """grads has exactly the keys of params, each of its parameter's shape; worth points
    only when the gradients are also right (zeros of the right shape earn nothing)."""
    params, x, labels, _ = _mlp_problem("mlp-keys", 3, torch.float64)
    _, grads = expect_tuple(_call(student, device, "mlp_loss_and_grads", params, x, labels), 2, call="mlp_loss_and_grads(...)")
    if not isinstance(grads, dict) or set(grads) != set(params):
        raise GradingFailure(f"mlp_loss_and_grads: grads must have exactly the keys {sorted(params)}, "
                             f"got {sorted(grads) if isinstance(grads, dict) else type(grads).__name__}")
    for k, v in params.items():
        if not isinstance(grads[k], torch.Tensor) or grads[k].shape != v.shape:
            raise GradingFailure(f"mlp_loss_and_grads: grads[{k!r}] must have the shape of params[{k!r}] "
                                 f"{list(v.shape)}")
    _check_mlp(student, device, "mlp-keys", 3, torch.float64)
