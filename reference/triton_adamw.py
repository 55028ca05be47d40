"""A fused AdamW step in Triton: one kernel reads each parameter, gradient and both
moments once and writes parameter and moments once (torch.optim.AdamW's update, as in
`reference.adam.adam_step(decoupled=True)`).

Arithmetic is float32 whatever the storage dtype, as PyTorch's fused kernel does. The
kernel runs on a GPU and, with TRITON_INTERPRET=1, on the CPU (Triton's interpreter),
so it is checked here against torch.optim.AdamW on both; `bench/adamw_bench.py`
times it against torch.optim.AdamW(fused=True).
Written for Triton 3.6 (the GPU image) and 3.9 (PyPI): only core tl ops.
"""

from __future__ import annotations

import math

import torch

from reference.adam import AdamW

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the CPU-only install without triton
    triton = None
    tl = None

BLOCK = 1024

if triton is not None:

    @triton.jit
    def _adamw_kernel(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps, weight_decay,
                      step_size, inv_sqrt_bc2, BLOCK_SIZE: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offs < n_elements
        # -- load once, compute in float32 --
        p = tl.load(p_ptr + offs, mask=mask).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
        m = tl.load(m_ptr + offs, mask=mask).to(tl.float32)
        v = tl.load(v_ptr + offs, mask=mask).to(tl.float32)
        # -- decoupled weight decay, before the moment update (torch.optim.AdamW) --
        p = p * (1.0 - lr * weight_decay)
        # -- moments --
        m = beta1 * m + (1.0 - beta1) * g
        v = beta2 * v + (1.0 - beta2) * g * g
        # -- bias-corrected step --
        denom = tl.sqrt(v) * inv_sqrt_bc2 + eps
        p = p - step_size * (m / denom)
        # -- store once, in the storage dtype --
        tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=mask)
        tl.store(m_ptr + offs, m.to(m_ptr.dtype.element_ty), mask=mask)
        tl.store(v_ptr + offs, v.to(v_ptr.dtype.element_ty), mask=mask)


def fused_adamw_(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                 step: int, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
    """One AdamW step, in place on contiguous tensors of the same shape."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    for t in (param, grad, exp_avg, exp_avg_sq):
        if not t.is_contiguous():
            raise ValueError("fused_adamw_ needs contiguous tensors")
    n = param.numel()
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    grid = (triton.cdiv(n, BLOCK),)
    _adamw_kernel[grid](param, grad, exp_avg, exp_avg_sq, n, lr, beta1, beta2, eps, weight_decay,
                        lr / bc1, 1.0 / math.sqrt(bc2), BLOCK_SIZE=BLOCK)


class TritonAdamW(AdamW):
    """torch.optim.AdamW's interface, each parameter updated by the fused kernel."""

    def _update(self, p, st, lr, beta1, beta2, eps, weight_decay) -> None:
        fused_adamw_(p, p.grad.contiguous(), st["exp_avg"], st["exp_avg_sq"], st["step"], lr, beta1, beta2,
                     eps, weight_decay)
