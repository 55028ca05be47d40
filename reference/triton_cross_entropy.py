"""Fused softmax cross-entropy, forward and backward in one kernel (Triton).

For each row of logits the kernel streams over the C classes once with an online
softmax (running max m and running sum d of exp(x - m), as FlashAttention and the
fused-loss kernels for large vocabularies do), giving lse = m + log d and the row's
loss lse - x[label]; a second stream over the row writes the gradient
(exp(x - lse) - [j = label]) / N. The [N, C] softmax is never materialised, and
the arithmetic is float32 whatever the logits' dtype. Checked against
torch.nn.functional.cross_entropy and autograd in tests/test_reference_backprop.py,
benchmarked in bench/backprop_bench.py.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None
    tl = None

if triton is not None:

    @triton.jit
    def _cross_entropy_kernel(logits_ptr, labels_ptr, loss_ptr, dlogits_ptr, C, stride_row, stride_drow,
                              inv_n, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * stride_row
        dbase = dlogits_ptr + row * stride_drow
        label = tl.load(labels_ptr + row)
        # -- pass 1: online max and normaliser --
        m = tl.max(tl.full([BLOCK], float("-inf"), tl.float32), axis=0)
        d = tl.sum(tl.zeros([BLOCK], tl.float32), axis=0)
        for start in range(0, C, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x = tl.load(base + offs, mask=offs < C, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, axis=0))
            d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
            m = m_new
        lse = m + tl.log(d)
        x_label = tl.load(base + label).to(tl.float32)
        tl.store(loss_ptr + row, lse - x_label)
        # -- pass 2: gradient (softmax - one_hot) / N --
        for start in range(0, C, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < C
            x = tl.load(base + offs, mask=mask, other=0.0).to(tl.float32)
            p = tl.exp(x - lse)
            p = tl.where(offs == label, p - 1.0, p) * inv_n
            tl.store(dbase + offs, p.to(dlogits_ptr.dtype.element_ty), mask=mask)


def fused_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, block: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss as float32, dlogits in the logits' dtype) for logits [N, C], labels [N]."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    n, c = logits.shape
    logits = logits.contiguous()
    labels = labels.contiguous()
    losses = torch.empty(n, device=logits.device, dtype=torch.float32)
    dlogits = torch.empty_like(logits)
    block = min(block, triton.next_power_of_2(c))
    _cross_entropy_kernel[(n,)](logits, labels, losses, dlogits, c, logits.stride(0), dlogits.stride(0),
                                1.0 / n, BLOCK=block)
    return losses.mean(), dlogits
