"""Unscale a list of gradients and detect inf/NaN in one pass each (Triton).

The CUDA kernel behind GradScaler, `torch._amp_foreach_non_finite_check_and_unscale_`,
multiplies every gradient by the float32 reciprocal of the scale and sets a flag when
any value is not finite. Here each gradient is read and written once by a kernel that
does both, and the whole list goes in one launch per dtype (the packed index of
`reference.triton_multi_tensor`, as torch's kernel walks its list); a block that meets
a non-finite value (NaN: g != g; inf: |g| == inf) sets the shared flag with an atomic
max. Arithmetic is float32, stored back in the gradient's dtype. Checked against the
CUDA kernel on a GPU and against the formula on the CPU (interpreter) in
tests/test_reference_loss_scaling.py.
"""

from __future__ import annotations

import torch

from reference.triton_multi_tensor import IndexCache

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None
    tl = None

BLOCK = 4096

if triton is not None:

    @triton.jit
    def _unscale_chunk(g_ptrs, mask, inv_scale, found_ptr, MASKED: tl.constexpr):
        if MASKED:
            g = tl.load(g_ptrs, mask=mask, other=0.0).to(tl.float32) * inv_scale
        else:
            g = tl.load(g_ptrs).to(tl.float32) * inv_scale
        # -- non-finite check, spelled out (the compiler may fold x - x to 0) --
        nonfinite = (g != g) | (tl.abs(g) == float("inf"))
        if MASKED:
            nonfinite = nonfinite & mask
        if tl.max(nonfinite.to(tl.int32), axis=0) > 0:
            tl.atomic_max(found_ptr, 1)
        return g

    @triton.jit
    def _unscale_multi_kernel(G, TABLE, inv_scale_ptr, found_ptr, BLOCK_SIZE: tl.constexpr, ALIGN: tl.constexpr):
        # -- this program's chunk: offset of its gradient from the base, numel, start --
        row = TABLE + tl.program_id(0).to(tl.int64) * 3
        n = tl.load(row + 1)
        start = tl.multiple_of(tl.load(row + 2), BLOCK_SIZE)
        idx = start + tl.arange(0, BLOCK_SIZE)
        g_ptrs = G + tl.multiple_of(tl.load(row), ALIGN) + idx
        inv_scale = tl.load(inv_scale_ptr)
        if start + BLOCK_SIZE <= n:
            # a whole chunk: no mask, so the loads stay vectorised
            g = _unscale_chunk(g_ptrs, idx < n, inv_scale, found_ptr, False)
            tl.store(g_ptrs, g.to(G.dtype.element_ty))
        else:
            mask = idx < n
            g = _unscale_chunk(g_ptrs, mask, inv_scale, found_ptr, True)
            tl.store(g_ptrs, g.to(G.dtype.element_ty), mask=mask)


_INDEXES = IndexCache()


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
    for (g,), table, align in _INDEXES.get([list(grads)], BLOCK).groups:
        _unscale_multi_kernel[(table.shape[0],)](g, table, inv, found, BLOCK_SIZE=BLOCK, ALIGN=align, num_warps=8)
    return found.to(torch.float32)
