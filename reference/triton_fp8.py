"""The FP8 cast with per-tensor scaling in Triton (loss_scaling's fp8_quantize), the
third implementation the CUDA C++ one (reference/cuda/fp8_cast.cu) is checked against.

Two launches: each block's max |x| joins a float32 atomic max, then the cast divides in
float32 by scale = amax / FP8_MAX (1 for an all-zero x) and converts with round to
nearest even. Values never exceed FP8_MAX after scaling, so saturating and non-saturating
conversions agree.
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
FP8 = {"e4m3": (torch.float8_e4m3fn, 448.0), "e5m2": (torch.float8_e5m2, 57344.0)}

if triton is not None:

    @triton.jit
    def _amax_kernel(X, n, AMAX, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(X + offs, mask=offs < n, other=0.0).to(tl.float32)
        tl.atomic_max(AMAX, tl.max(tl.abs(x), 0))

    @triton.jit
    def _cast_kernel(X, n, AMAX, Q, SCALE, fp8_max, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        amax = tl.load(AMAX)
        scale = tl.where(amax > 0, amax / fp8_max, 1.0)
        if tl.program_id(0) == 0:
            tl.store(SCALE, scale)
        x = tl.load(X + offs, mask=offs < n, other=0.0).to(tl.float32)
        tl.store(Q + offs, (x / scale).to(Q.dtype.element_ty, fp_downcast_rounding="rtne"), mask=offs < n)


def fp8_quantize(x: torch.Tensor, fmt: str = "e4m3") -> tuple[torch.Tensor, torch.Tensor]:
    if triton is None:
        raise RuntimeError("triton is not installed")
    dtype, fp8_max = FP8[fmt]
    x = x.contiguous()
    n = x.numel()
    amax = torch.zeros(1, device=x.device, dtype=torch.float32)
    q = torch.empty(x.shape, device=x.device, dtype=dtype)
    scale = torch.ones((), device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(max(n, 1), BLOCK),)
    _amax_kernel[grid](x, n, amax, BLOCK=BLOCK)
    _cast_kernel[grid](x, n, amax, q, scale, fp8_max, BLOCK=BLOCK)
    return q, scale
