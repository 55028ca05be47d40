"""The Triton unscale-and-check kernel (reference/triton_unscale.py) against PyTorch's
CUDA kernel `torch._amp_foreach_non_finite_check_and_unscale_` (the baseline, in the
same run), on the 148 gradients of a GPT-2 small (124M float32 values) and on one flat
buffer of the same size; the Triton side is one launch of the multi-tensor kernel per
list (reference/triton_multi_tensor.py). Median of 30 CUDA-event-timed calls. Run on a
GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.adamw_bench import gpt2_shapes  # noqa: E402
from bench.timing import cuda_median_ms  # noqa: E402
from reference.triton_unscale import unscale_and_check_  # noqa: E402


def timed(fn):
    return cuda_median_ms(fn, warmup=3, iters=30)


def main():
    assert torch.cuda.is_available(), "this benchmark needs a GPU"
    inv = torch.tensor(1.0, device="cuda")  # scale 1: values stay put across repeats
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print()
    print("| gradients | torch kernel (ms) | Triton (ms) | vs torch | GB/s (Triton, read + write) |")
    print("| --- | --- | --- | --- | --- |")
    for label, grads in [("GPT-2 small, 148 tensors", [torch.randn(s, device="cuda") for s in gpt2_shapes()]),
                         ("one flat buffer", [torch.randn(124_439_808, device="cuda")])]:
        found = torch.zeros(1, device="cuda")
        t_base = timed(lambda g=grads, f=found: torch._amp_foreach_non_finite_check_and_unscale_(g, f, inv))
        t_tri = timed(lambda g=grads: unscale_and_check_(g, inv))
        nbytes = sum(g.numel() for g in grads) * 4 * 2
        print(f"| {label} | {t_base:.3f} | {t_tri:.3f} | {t_base / t_tri:.2f}x | {nbytes / t_tri / 1e6:.0f} |")


if __name__ == "__main__":
    main()
