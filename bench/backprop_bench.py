"""The Triton kernels of `backprop` against the PyTorch ops they replace (GPU).

Cross-entropy: `fused_cross_entropy` (loss and dlogits in one kernel, the softmax never
stored) against F.cross_entropy forward + backward through autograd, the baseline,
measured in the same run on the same logits. Layer norm: the Triton forward + backward
against F.layer_norm forward + backward through autograd. Times: median of 20
CUDA-event-timed runs after 3 warm-ups; peak memory: the allocator's peak above the
inputs during one run. Run on a GPU: `python bench/backprop_bench.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import cuda_median_ms  # noqa: E402
from reference.triton_cross_entropy import fused_cross_entropy  # noqa: E402
from reference.triton_layer_norm import layer_norm_backward, layer_norm_forward  # noqa: E402


def timed(fn):
    """(median ms, peak MiB above the inputs during one run)."""
    ms = cuda_median_ms(fn, warmup=3, iters=20)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return ms, (torch.cuda.max_memory_allocated() - base) / 2**20


def bench_cross_entropy(n: int, c: int, dtype: torch.dtype):
    x = torch.randn(n, c, device="cuda", dtype=dtype) * 3
    y = torch.randint(0, c, (n,), device="cuda")

    def torch_ce():
        xr = x.detach().requires_grad_()
        F.cross_entropy(xr.float() if dtype != torch.float32 else xr, y).backward()
        return xr.grad

    t_base, m_base = timed(torch_ce)
    t_tri, m_tri = timed(lambda: fused_cross_entropy(x, y))
    diff = (fused_cross_entropy(x, y)[1].float() - torch_ce().float()).abs().max().item()
    return f"cross-entropy N={n} C={c} {str(dtype)[6:]}", t_base, m_base, t_tri, m_tri, diff


def bench_layer_norm(n: int, d: int, dtype: torch.dtype):
    x = torch.randn(n, d, device="cuda", dtype=dtype)
    w, b = torch.randn(d, device="cuda", dtype=dtype), torch.randn(d, device="cuda", dtype=dtype)
    dy = torch.randn(n, d, device="cuda", dtype=dtype)

    def torch_ln():
        leaves = [t.detach().requires_grad_() for t in (x, w, b)]
        F.layer_norm(leaves[0], (d,), leaves[1], leaves[2]).backward(dy)
        return leaves[0].grad

    def triton_ln():
        _, mean, rstd = layer_norm_forward(x, w, b)
        return layer_norm_backward(dy, x, w, mean, rstd)[0]

    t_base, m_base = timed(torch_ln)
    t_tri, m_tri = timed(triton_ln)
    diff = (triton_ln().float() - torch_ln().float()).abs().max().item()
    return f"layer norm fwd+bwd N={n} D={d} {str(dtype)[6:]}", t_base, m_base, t_tri, m_tri, diff


def main():
    assert torch.cuda.is_available(), "this benchmark needs a GPU"
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {__import__('triton').__version__}")
    print()
    print("| op | PyTorch (ms) | PyTorch peak (MiB) | Triton (ms) | Triton peak (MiB) | speed-up | max abs diff of the gradient |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    cases = [(bench_cross_entropy, n, c, dt) for n, c in [(4096, 32768), (8192, 131072)]
             for dt in (torch.bfloat16, torch.float32)]
    cases += [(bench_layer_norm, n, d, dt) for n, d in [(8192, 1024), (8192, 4096), (4096, 8192)]
              for dt in (torch.bfloat16, torch.float32)]
    for fn, a, b, dt in cases:
        name, tb, mb, tt, mt, diff = fn(a, b, dt)
        torch.cuda.empty_cache()
        print(f"| {name} | {tb:.3f} | {mb:.0f} | {tt:.3f} | {mt:.0f} | {tb / tt:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
