"""The references of `backprop` against PyTorch: the float64 math against autograd and
torch.nn.functional, the Triton kernels against the same (on the CPU through Triton's
interpreter, on a GPU for real)."""

from __future__ import annotations

import os

import pytest
import torch

from autograder.judge.suite import generator, randn
from reference import backprop as ref

F64 = dict(rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n,c,scale", [(1, 2, 1.0), (9, 13, 3.0), (16, 50, 3e3), (4, 32768, 4.0)])
def test_cross_entropy_reference_matches_autograd(n, c, scale):
    g = generator(f"ref-ce-{n}-{c}")
    x = randn(g, n, c, dtype=torch.float64, scale=scale).requires_grad_()
    y = torch.randint(0, c, (n,), generator=g)
    loss = torch.nn.functional.cross_entropy(x, y)
    loss.backward()
    r_loss, r_d = ref.softmax_cross_entropy(x.detach(), y)
    torch.testing.assert_close(r_loss, loss.detach(), rtol=1e-12, atol=1e-12 * scale)
    torch.testing.assert_close(r_d, x.grad, **F64)


def test_linear_relu_layer_norm_references_match_autograd():
    g = generator("ref-lin-ln")
    x, W, b, d = (randn(g, *s, dtype=torch.float64) for s in [(6, 5), (5, 4), (4,), (6, 4)])
    leaves = [t.clone().requires_grad_() for t in (x, W, b)]
    (leaves[0] @ leaves[1] + leaves[2]).backward(d)
    for got, want in zip(ref.linear_backward(d, x, W, b), (t.grad for t in leaves)):
        torch.testing.assert_close(got, want, **F64)
    z = randn(g, 6, 4, dtype=torch.float64)
    z[0, :2] = 0.0
    zr = z.clone().requires_grad_()
    torch.relu(zr).backward(d)
    torch.testing.assert_close(ref.relu_backward(d, z), zr.grad, rtol=0, atol=0)
    xs = randn(g, 7, 33, dtype=torch.float64, scale=2.0) + 1
    gamma, beta, dy = randn(g, 33, dtype=torch.float64), randn(g, 33, dtype=torch.float64), randn(g, 7, 33, dtype=torch.float64)
    for eps in (1e-5, 0.5):
        ls = [t.clone().requires_grad_() for t in (xs, gamma, beta)]
        y = torch.nn.functional.layer_norm(ls[0], (33,), ls[1], ls[2], eps)
        y.backward(dy)
        torch.testing.assert_close(ref.layer_norm_forward(xs, gamma, beta, eps), y.detach(), **F64)
        for got, want in zip(ref.layer_norm_backward(dy, xs, gamma, beta, eps), (t.grad for t in ls)):
            torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_mlp_reference_matches_autograd(depth):
    g = generator(f"ref-mlp-{depth}")
    dims = [6, 9, 8, 7, 4][:depth] + [4]
    params = {}
    for i in range(1, depth + 1):
        params[f"W{i}"] = randn(g, dims[i - 1], dims[i], dtype=torch.float64)
        params[f"b{i}"] = randn(g, dims[i], dtype=torch.float64)
    x, y = randn(g, 10, dims[0], dtype=torch.float64), torch.randint(0, 4, (10,), generator=g)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    h = x
    for i in range(1, depth + 1):
        h = h @ leaves[f"W{i}"] + leaves[f"b{i}"]
        if i < depth:
            h = torch.relu(h)
    loss = torch.nn.functional.cross_entropy(h, y)
    loss.backward()
    r_loss, r_grads = ref.mlp_loss_and_grads(params, x, y)
    assert list(r_grads) == list(params)
    torch.testing.assert_close(r_loss, loss.detach(), **F64)
    for k in params:
        torch.testing.assert_close(r_grads[k], leaves[k].grad, rtol=1e-11, atol=1e-13)


pytest.importorskip("triton", reason="triton is not installed")
needs_triton_backend = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="no GPU and TRITON_INTERPRET is not 1: Triton has no backend to run on")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@needs_triton_backend
@pytest.mark.parametrize("n,c,scale,dtype", [(5, 37, 1.0, torch.float32), (4, 3000, 1e4, torch.float32),
                                              (3, 32768, 4.0, torch.float32), (6, 1000, 3.0, torch.bfloat16)])
def test_triton_cross_entropy_matches_torch(n, c, scale, dtype):
    """float32 math in the kernel. float32 logits: loss within eps*max|x| (the subtraction
    x - max), gradients within 1e-6 absolute (they are probabilities / N). bfloat16 logits:
    the gradient is rounded to bf16 once (2**-8 relative)."""
    from reference.triton_cross_entropy import fused_cross_entropy

    g = generator(f"tri-ce-{n}-{c}")
    x = randn(g, n, c, scale=scale).to(dtype).to(DEVICE)
    y = torch.randint(0, c, (n,), generator=g).to(DEVICE)
    xr = x.float().detach().requires_grad_()
    loss = torch.nn.functional.cross_entropy(xr, y)
    loss.backward()
    t_loss, t_d = fused_cross_entropy(x, y)
    torch.testing.assert_close(t_loss, loss.detach(), rtol=1e-5, atol=4 * torch.finfo(torch.float32).eps * scale * 10)
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=2**-7, atol=1e-4)
    torch.testing.assert_close(t_d.float(), xr.grad, **tol)
    assert t_d.dtype == dtype


@needs_triton_backend
@pytest.mark.parametrize("n,d,dtype", [(9, 300, torch.float32), (4, 4096, torch.float32), (7, 64, torch.bfloat16)])
def test_triton_layer_norm_matches_torch(n, d, dtype):
    from reference.triton_layer_norm import layer_norm_backward, layer_norm_forward

    g = generator(f"tri-ln-{n}-{d}")
    x = (randn(g, n, d, scale=2.0) + 1).to(dtype).to(DEVICE)
    w, b = randn(g, d).to(dtype).to(DEVICE), randn(g, d).to(dtype).to(DEVICE)
    dy = randn(g, n, d).to(dtype).to(DEVICE)
    leaves = [t.float().detach().requires_grad_() for t in (x, w, b)]
    y = torch.nn.functional.layer_norm(leaves[0], (d,), leaves[1], leaves[2], 1e-5)
    y.backward(dy.float())
    ty, mean, rstd = layer_norm_forward(x, w, b)
    tdx, tdw, tdb = layer_norm_backward(dy, x, w, mean, rstd, groups=3)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2**-6, atol=2**-6)
    torch.testing.assert_close(ty.float(), y.detach(), **tol)
    torch.testing.assert_close(tdx.float(), leaves[0].grad, **tol)
    # dgamma and dbeta sum n rows: the bf16 result carries one rounding of the sum.
    torch.testing.assert_close(tdw.float(), leaves[1].grad, **tol)
    torch.testing.assert_close(tdb.float(), leaves[2].grad, **tol)
