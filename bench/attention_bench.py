"""The Triton FlashAttention-2 reference against torch's scaled_dot_product_attention
(the baseline, measured in the same run): forward, and forward + backward, bf16, causal,
B=8 H=16 D=128, N = 1024..8192 (N=4096 is the issue's headline case). TFLOP/s count
the usual convention: the forward's 2 matmuls (4*B*H*N*N*D flops), the backward's 5,
halved for the causal mask. Run on a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import cuda_median_ms  # noqa: E402
from reference.triton_flash_attention import flash_attention_backward, flash_attention_forward  # noqa: E402


def bench_one(b: int, h: int, n: int, d: int) -> list[str]:
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    do = torch.randn_like(q)
    flops_fwd = 4 * b * h * n * n * d / 2  # two matmuls of 2*N*N*D flops, half of the scores when causal

    def sdpa_fwd():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def sdpa_fwd_bwd():
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        F.scaled_dot_product_attention(*leaves, is_causal=True).backward(do)

    def tri_fwd():
        return flash_attention_forward(q, k, v, causal=True, block_m=128, block_n=64)

    def tri_fwd_bwd():
        o, lse = flash_attention_forward(q, k, v, causal=True, block_m=128, block_n=64)
        flash_attention_backward(do, q, k, v, o, lse, causal=True, block_m=64, block_n=64)

    rows = []
    # forward + backward: 2 forward matmuls + 5 backward ones (recomputing S) = 3.5x the forward.
    for name, base, ours, flops in [("forward", sdpa_fwd, tri_fwd, flops_fwd),
                                    ("forward + backward", sdpa_fwd_bwd, tri_fwd_bwd, flops_fwd * 3.5)]:
        tb, tt = cuda_median_ms(base, iters=10), cuda_median_ms(ours, iters=10)
        rows.append(f"| {n} | {name} | {tb:.3f} | {flops / tb / 1e9:.0f} | {tt:.3f} | {flops / tt / 1e9:.0f} | "
                    f"{tb / tt:.2f}x |")
    return rows


def main():
    assert torch.cuda.is_available(), "this benchmark needs a GPU"
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {__import__('triton').__version__}")
    print()
    print("| N | pass | SDPA (ms) | SDPA TFLOP/s | Triton (ms) | Triton TFLOP/s | Triton / SDPA speed |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in (1024, 2048, 4096, 8192):
        for row in bench_one(8, 16, n, 128):
            print(row)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
