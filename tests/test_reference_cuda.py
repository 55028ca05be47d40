"""The CUDA C++ reference (reference/cuda/fp8_cast.cu, built by reference/cuda_ext.py)
against PyTorch (reference.loss_scaling.fp8_quantize: x.float() / scale, then torch's
cast) and against the Triton version (reference/triton_fp8.py), on a GPU.

FP8 quantization is exact arithmetic (a max, one float32 division, one rounding to
nearest even), so all three must agree bit for bit: codes and scale. Inputs: float32,
float16 and bfloat16, Gaussian and spread over ten decades (subnormals of the format),
sizes from one element to past a grid-stride (4M), all zeros, and a non-contiguous view.
Skipped with the reason where the extension cannot be built (a CPU build of torch, no
GPU, no nvcc).
"""

from __future__ import annotations

import pytest
import torch

from autograder.judge.suite import generator, randn
from reference import cuda_ext
from reference import loss_scaling as ref

REASON = cuda_ext.why_unavailable()
needs_cuda_ext = pytest.mark.skipif(REASON is not None, reason=f"the CUDA C++ reference cannot run here: {REASON}")
CASES = [("gauss", 64 * 33), ("decades", 5000), ("one", 1), ("large", 4 * 1024 * 1024 + 3)]


def _input(kind, n, dtype):
    g = generator(f"cuda-fp8-{kind}-{dtype}")
    x = randn(g, n, scale=3.0)
    if kind == "decades":
        x = x * 10 ** torch.empty(n, dtype=torch.float64).uniform_(-6, 4, generator=g).float()
    return x.to(dtype).cuda()


def _same(a, b, what):
    codes_a, codes_b = a[0].view(torch.uint8), b[0].view(torch.uint8)
    bad = (codes_a != codes_b).nonzero()
    assert a[0].dtype == b[0].dtype and not len(bad), f"{what}: {len(bad)} codes differ, first at {bad[:3].tolist()}"
    assert a[1].dtype == torch.float32 and torch.equal(a[1].reshape(()), b[1].reshape(()).to(a[1].device)), \
        f"{what}: scale {float(a[1])} vs {float(b[1])}"


@needs_cuda_ext
@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind,n", CASES)
def test_cuda_fp8_matches_pytorch_and_triton(fmt, dtype, kind, n):
    from reference import triton_fp8

    x = _input(kind, n, dtype)
    ours = cuda_ext.fp8_quantize(x, fmt)
    _same(ours, ref.fp8_quantize(x, fmt), "CUDA vs PyTorch")
    _same(ours, triton_fp8.fp8_quantize(x, fmt), "CUDA vs Triton")


@needs_cuda_ext
@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_cuda_fp8_zeros_and_views(fmt):
    q, scale = cuda_ext.fp8_quantize(torch.zeros(7, 3, device="cuda"), fmt)
    assert float(scale) == 1.0 and not bool(q.float().abs().sum())
    x = _input("gauss", 64 * 33, torch.float32).reshape(64, 33).t()  # not contiguous
    _same(cuda_ext.fp8_quantize(x, fmt), ref.fp8_quantize(x, fmt), "transposed view")
    assert cuda_ext.fp8_quantize(x, fmt)[0].shape == x.shape


def test_the_reason_is_clear_where_it_cannot_run():
    """Here (CPU) the skip names its cause; on a GPU with nvcc there is none."""
    if REASON is None:
        assert torch.cuda.is_available()
    else:
        assert any(w in REASON for w in ("CPU build", "no GPU", "nvcc"))
        with pytest.raises(cuda_ext.CudaUnavailable, match=REASON.split()[0]):
            cuda_ext.fp8_quantize(torch.ones(3))
