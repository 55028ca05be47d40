"""The CUDA C++ references (`reference/cuda/*.cu`), built with
`torch.utils.cpp_extension.load` where nvcc and a GPU exist.

Each extension's name carries a hash of its source (and of torch's and CUDA's versions),
so torch's extension cache (`TORCH_EXTENSIONS_DIR`, by default under ~/.cache) holds one
build per source: a worker builds it the first time a suite asks (about a minute, under
torch's file lock when judges ask at once) and every later grade, in this process or the
next, loads the built library. Where it cannot be built, `CudaUnavailable` says why, and
suites fall back to the Python reference.

    fp8_quantize(x, fmt) -> (q, scale)    as reference.loss_scaling.fp8_quantize, on the GPU
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from pathlib import Path

import torch

SOURCES = Path(__file__).resolve().parent / "cuda"
FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


class CudaUnavailable(RuntimeError):
    """No GPU, no nvcc, or a CPU build of torch: the CUDA reference cannot run here."""


def _nvcc() -> str | None:
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return os.path.join(CUDA_HOME, "bin", "nvcc")
    return shutil.which("nvcc")


def why_unavailable() -> str | None:
    """None where the CUDA references can be built and run, else the reason."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    if not torch.cuda.is_available():
        return "no GPU is visible"
    if _nvcc() is None:
        return "nvcc is not installed (no CUDA toolkit: set CUDA_HOME)"
    return None


@functools.cache
def _load(stem: str):
    reason = why_unavailable()
    if reason:
        raise CudaUnavailable(reason)
    from torch.utils.cpp_extension import load

    source = SOURCES / f"{stem}.cu"
    digest = hashlib.sha256(source.read_bytes() + f"{torch.__version__} {torch.version.cuda}".encode()).hexdigest()
    return load(name=f"dlopt_{stem}_{digest[:16]}", sources=[str(source)], extra_cuda_cflags=["-O3"], verbose=False)


def prebuild() -> str:
    """Build (or load from the cache) every CUDA reference now, as a GPU worker does before
    its first grade; returns what happened, in words."""
    reason = why_unavailable()
    if reason:
        return f"CUDA references not built: {reason}"
    names = sorted(p.stem for p in SOURCES.glob("*.cu"))
    for stem in names:
        _load(stem)
    return f"CUDA references ready: {', '.join(names)}"


def fp8_quantize(x: torch.Tensor, fmt: str = "e4m3") -> tuple[torch.Tensor, torch.Tensor]:
    """(q in float8 of x's shape, scale float32 []) computed by the CUDA kernel, on x's GPU
    (x moved there from the CPU if need be)."""
    ext = _load("fp8_cast")
    if fmt not in FP8:
        raise ValueError(f"fmt must be one of {sorted(FP8)}")
    x = x if x.is_cuda else x.cuda()
    codes, scale = ext.fp8_quantize(x, fmt == "e4m3")
    return codes.view(FP8[fmt]), scale
