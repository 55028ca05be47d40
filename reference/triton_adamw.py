"""A fused AdamW step in Triton: one kernel reads each parameter, gradient and both
moments once and writes parameter and moments once (torch.optim.AdamW's update, as in
`reference.adam.adam_step(decoupled=True)`). `fused_adamw_` updates one tensor;
`fused_adamw_multi_` updates a whole list in one launch (the packed index of
`reference.triton_multi_tensor`), as torch's fused optimizer does; `TritonAdamW` steps
every parameter of a group through it.

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
from reference.triton_multi_tensor import IndexCache

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


    @triton.jit
    def _adamw_math(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step_size, inv_sqrt_bc2):
        p = p * (1.0 - lr * weight_decay)
        m = beta1 * m + (1.0 - beta1) * g
        v = beta2 * v + (1.0 - beta2) * g * g
        p = p - step_size * (m / (tl.sqrt(v) * inv_sqrt_bc2 + eps))
        return p, m, v

    @triton.jit
    def _adamw_multi_kernel(P, G, M, V, TABLE, lr, beta1, beta2, eps, weight_decay, step_size, inv_sqrt_bc2,
                            BLOCK: tl.constexpr, ALIGN: tl.constexpr):
        # -- this program's chunk: offsets of its tensor from each base, numel, start --
        row = TABLE + tl.program_id(0).to(tl.int64) * 6
        n = tl.load(row + 4)
        start = tl.multiple_of(tl.load(row + 5), BLOCK)
        idx = start + tl.arange(0, BLOCK)
        p_ptrs = P + tl.multiple_of(tl.load(row), ALIGN) + idx
        g_ptrs = G + tl.multiple_of(tl.load(row + 1), ALIGN) + idx
        m_ptrs = M + tl.multiple_of(tl.load(row + 2), ALIGN) + idx
        v_ptrs = V + tl.multiple_of(tl.load(row + 3), ALIGN) + idx
        if start + BLOCK <= n:
            # a whole chunk: no mask, so the loads stay vectorised
            p, m, v = _adamw_math(tl.load(p_ptrs).to(tl.float32), tl.load(g_ptrs).to(tl.float32),
                                  tl.load(m_ptrs).to(tl.float32), tl.load(v_ptrs).to(tl.float32), lr, beta1, beta2,
                                  eps, weight_decay, step_size, inv_sqrt_bc2)
            tl.store(p_ptrs, p.to(P.dtype.element_ty))
            tl.store(m_ptrs, m.to(M.dtype.element_ty))
            tl.store(v_ptrs, v.to(V.dtype.element_ty))
        else:
            mask = idx < n
            p, m, v = _adamw_math(tl.load(p_ptrs, mask=mask).to(tl.float32),
                                  tl.load(g_ptrs, mask=mask).to(tl.float32),
                                  tl.load(m_ptrs, mask=mask).to(tl.float32),
                                  tl.load(v_ptrs, mask=mask).to(tl.float32), lr, beta1, beta2, eps, weight_decay,
                                  step_size, inv_sqrt_bc2)
            tl.store(p_ptrs, p.to(P.dtype.element_ty), mask=mask)
            tl.store(m_ptrs, m.to(M.dtype.element_ty), mask=mask)
            tl.store(v_ptrs, v.to(V.dtype.element_ty), mask=mask)


MULTI_BLOCK = 2048
_INDEXES = IndexCache()


def fused_adamw_multi_(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                       exp_avg_sqs: list[torch.Tensor], step: int, lr: float, beta1: float = 0.9,
                       beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
    """One AdamW step, in place, on every tensor of the lists (all at the same step): one
    launch per group of the packed index (one for a model whose tensors share device and
    dtypes)."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if not params:
        return
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    index = _INDEXES.get([params, grads, exp_avgs, exp_avg_sqs], MULTI_BLOCK)
    for (p, g, m, v), table, align in index.groups:
        _adamw_multi_kernel[(table.shape[0],)](p, g, m, v, table, lr, beta1, beta2, eps, weight_decay, lr / bc1,
                                               1.0 / math.sqrt(bc2), BLOCK=MULTI_BLOCK, ALIGN=align, num_warps=8)


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
    """torch.optim.AdamW's interface: each group's parameters (those with a gradient, by
    step count) updated by one launch of the multi-tensor kernel."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            by_step: dict[int, list] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not self.state[p]:
                    self.state[p] = self._new_state(p)
                st = self.state[p]
                st["step"] += 1
                by_step.setdefault(st["step"], []).append((p, st))
            b1, b2 = group["betas"]
            for step, entries in by_step.items():
                fused_adamw_multi_([p for p, _ in entries], [p.grad.contiguous() for p, _ in entries],
                                   [st["exp_avg"] for _, st in entries], [st["exp_avg_sq"] for _, st in entries],
                                   step, group["lr"], b1, b2, group["eps"], group["weight_decay"])
        return loss
