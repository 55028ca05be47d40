"""Layer norm forward and backward in Triton (after the Triton tutorial 05-layer-norm).

Forward: one program per row computes mean, biased variance and rstd in float32 and
writes y = (x - mean) * rstd * gamma + beta, keeping mean and rstd for the backward.
Backward: each of G programs takes rows pid, pid + G, ... and, per row, writes
dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma, while it
accumulates its rows' dgamma = sum dy * xhat and dbeta = sum dy in registers; the G
partial sums are then added (no atomics, no locks). Rows up to 16384 features.
Checked against torch.nn.functional.layer_norm and autograd in
tests/test_reference_backprop.py, benchmarked in bench/backprop_bench.py.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None
    tl = None

MAX_FEATURES = 16384

if triton is not None:

    @triton.jit
    def _layer_norm_fwd(x_ptr, y_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, stride, D, eps, BLOCK_D: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK_D)
        mask = cols < D
        x = tl.load(x_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
        # -- statistics in float32, biased variance --
        mean = tl.sum(x, axis=0) / D
        xc = tl.where(mask, x - mean, 0.0)
        var = tl.sum(xc * xc, axis=0) / D
        rstd = 1.0 / tl.sqrt(var + eps)
        # -- normalise and scale --
        w = tl.load(w_ptr + cols, mask=mask).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=mask).to(tl.float32)
        y = xc * rstd * w + b
        tl.store(y_ptr + row * stride + cols, y.to(y_ptr.dtype.element_ty), mask=mask)
        tl.store(mean_ptr + row, mean)
        tl.store(rstd_ptr + row, rstd)

    @triton.jit
    def _layer_norm_bwd(dy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_part_ptr, db_part_ptr,
                        stride, N, D, BLOCK_D: tl.constexpr):
        pid = tl.program_id(0)
        groups = tl.num_programs(0)
        cols = tl.arange(0, BLOCK_D)
        mask = cols < D
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        dw_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        db_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for row in range(pid, N, groups):
            off = row * stride  # rows x features below 2**31 (asserted in _check)
            x = tl.load(x_ptr + off + cols, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + off + cols, mask=mask, other=0.0).to(tl.float32)
            mean = tl.load(mean_ptr + row)
            rstd = tl.load(rstd_ptr + row)
            # -- dx from the normalised input --
            xhat = tl.where(mask, (x - mean) * rstd, 0.0)
            g = dy * w
            c1 = tl.sum(xhat * g, axis=0) / D
            c2 = tl.sum(g, axis=0) / D
            dx = (g - (xhat * c1 + c2)) * rstd
            tl.store(dx_ptr + off + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
            # -- this program's share of dgamma and dbeta --
            dw_acc += dy * xhat
            db_acc += dy
        tl.store(dw_part_ptr + pid * D + cols, dw_acc, mask=mask)
        tl.store(db_part_ptr + pid * D + cols, db_acc, mask=mask)


def _check(x: torch.Tensor) -> tuple[int, int, int]:
    if triton is None:
        raise RuntimeError("triton is not installed")
    n, d = x.shape
    if d > MAX_FEATURES:
        raise ValueError(f"at most {MAX_FEATURES} features")
    if n * d >= 2**31:
        raise ValueError("at most 2**31 elements (the backward's row offsets are 32-bit)")
    return n, d, triton.next_power_of_2(d)


def layer_norm_forward(x, gamma, beta, eps=1e-5):
    """y [N, D] and the (mean, rstd) the backward needs, float32."""
    x = x.contiguous()
    n, d, block = _check(x)
    y = torch.empty_like(x)
    mean = torch.empty(n, device=x.device, dtype=torch.float32)
    rstd = torch.empty(n, device=x.device, dtype=torch.float32)
    _layer_norm_fwd[(n,)](x, y, gamma, beta, mean, rstd, x.stride(0), d, eps, BLOCK_D=block)
    return y, mean, rstd


def layer_norm_backward(dy, x, gamma, mean, rstd, groups: int | None = None):
    """(dx, dgamma, dbeta) from the saved (mean, rstd)."""
    x, dy = x.contiguous(), dy.contiguous()
    n, d, block = _check(x)
    groups = groups or max(1, min(n, 256))
    dx = torch.empty_like(x)
    dw_part = torch.empty(groups, d, device=x.device, dtype=torch.float32)
    db_part = torch.empty(groups, d, device=x.device, dtype=torch.float32)
    _layer_norm_bwd[(groups,)](dy, x, gamma, mean, rstd, dx, dw_part, db_part, x.stride(0), n, d, BLOCK_D=block)
    return dx, dw_part.sum(0).to(gamma.dtype), db_part.sum(0).to(gamma.dtype)
