"""Unscale a list of gradients and detect inf/NaN in one pass each (Triton).

The CUDA kernel behind GradScaler, `torch._amp_foreach_non_finite_check_and_unscale_`,
multiplies every gradient by the float32 reciprocal of the scale and sets a flag when
any value is not finite. Here each gradient is read and written once by a kernel that
does both; a block that meets a non-finite value (NaN: g != g; inf: |g| == inf) sets the shared flag with an atomic
max. Arithmetic is float32, stored back in the gradient's dtype. Checked against the
CUDA kernel on a GPU and against the formula on the CPU (interpreter) in
tests/test_reference_loss_scaling.py.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None
    tl = None

BLOCK = 1024

if triton is not None:

    @triton.jit
    def _unscale_kernel(g_ptr, n, inv_scale_ptr, found_ptr, BLOCK_SIZE: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offs < n
        inv_scale = tl.load(inv_scale_ptr)
        # -- load once, unscale in float32 --
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32) * inv_scale
        # -- non-finite check, spelled out (the compiler may fold x - x to 0) --
        nonfinite = (g != g) | (tl.abs(g) == float("inf"))
        bad = tl.max(tl.where(mask & nonfinite, 1, 0), axis=0)
        if bad > 0:
            tl.atomic_max(found_ptr, 1)
        tl.store(g_ptr + offs, g.to(g_ptr.dtype.element_ty), mask=mask)


def unscale_and_check_(grads: list[torch.Tensor], inv_scale: torch.Tensor) -> torch.Tensor:
    """In place: g *= inv_scale for each contiguous g; returns found_inf as a float32
    tensor holding 0.0 or 1.0 (as torch's kernel fills `found_inf`)."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if not grads:
        return torch.zeros(1, dtype=torch.float32)
    device = grads[0].device
    found = torch.zeros(1, dtype=torch.int32, device=device)
    inv = inv_scale.to(device=device, dtype=torch.float32).reshape(1)
    for g in grads:
        if not g.is_contiguous():
            raise ValueError("unscale_and_check_ needs contiguous gradients")
        n = g.numel()
        if n:
            _unscale_kernel[(triton.cdiv(n, BLOCK),)](g, n, inv, found, BLOCK_SIZE=BLOCK)
    return found.to(torch.float32)
