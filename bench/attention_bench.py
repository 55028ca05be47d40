"""The Triton FlashAttention-2 reference against torch's scaled_dot_product_attention
(the baseline, measured in the same run, with whatever backend torch picks on this GPU:
it prints which).

Shapes: 16k tokens per call (B * N = 16384), H * D = 2048 (H = 16 at D = 128, 32 at
D = 64), N = 1024 .. 16384; causal and not; bf16 (and fp16 with --dtypes). TFLOP/s
count the usual convention: the forward's 2 matmuls (4 B H N^2 D flops), halved when
causal; forward + backward 3.5x the forward (2 forward matmuls, 5 backward ones with S
recomputed). Times: median of CUDA-event-timed calls (bench/timing.py).

    python bench/attention_bench.py                 # the TUNED table (what grading runs)
    python bench/attention_bench.py --tune          # Triton's autotuner, live: prints the winners
    python bench/attention_bench.py --dtypes bf16 fp16 --dims 64 128 --lengths 1024 4096 16384
Run on a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import cuda_median_ms  # noqa: E402
from reference import triton_flash_attention as tfa  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def sdpa_backend(q, k, v, causal) -> str:
    """The backend SDPA runs here, found by trying each alone in the order torch prefers."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        try:
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            return backend.name
        except RuntimeError:
            continue
    return "MATH"


def bench_one(n, d, causal, dtype, tune, tma):
    b, h = max(16384 // n, 1), 2048 // d
    gen = torch.Generator(device="cuda").manual_seed(n + d)
    q, k, v, do = (torch.randn(b, h, n, d, device="cuda", dtype=dtype, generator=gen) for _ in range(4))
    flops = 4 * b * h * n * n * d / (2 if causal else 1)

    def sdpa_fwd():
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def sdpa_fwd_bwd():
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        F.scaled_dot_product_attention(*leaves, is_causal=causal).backward(do)

    def tri_fwd():
        return tfa.flash_attention_forward(q, k, v, causal=causal, autotune=tune, tma=tma)

    def tri_fwd_bwd():
        o, lse = tfa.flash_attention_forward(q, k, v, causal=causal, autotune=tune, tma=tma)
        tfa.flash_attention_backward(do, q, k, v, o, lse, causal=causal, autotune=tune)

    # agreement with SDPA on this very input (bf16/fp16 output: a few ulps)
    diff = (tri_fwd()[0].float() - sdpa_fwd().float()).abs().max().item()
    rows = []
    for name, base, ours, f in [("fwd", sdpa_fwd, tri_fwd, flops), ("fwd+bwd", sdpa_fwd_bwd, tri_fwd_bwd, flops * 3.5)]:
        tb, tt = cuda_median_ms(base, iters=20), cuda_median_ms(ours, iters=20)
        rows.append((name, tb, f / tb / 1e9, tt, f / tt / 1e9, tb / tt))
    backend = sdpa_backend(q, k, v, causal)
    torch.cuda.empty_cache()
    return rows, diff, backend


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tune", action="store_true", help="run Triton's autotuner live and print its winners")
    ap.add_argument("--dtypes", nargs="+", default=["bf16"], choices=sorted(DTYPES))
    ap.add_argument("--dims", nargs="+", type=int, default=[64, 128])
    ap.add_argument("--lengths", nargs="+", type=int, default=[1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--causal", nargs="+", default=["yes", "no"], choices=["yes", "no"])
    ap.add_argument("--tma", choices=["auto", "on", "off"], default="auto",
                    help="the forward's K/V tiles by TMA descriptors (auto: the module's default on this GPU)")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "this benchmark needs a GPU"
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {tfa.triton.__version__}, "
          f"{'autotuned live' if args.tune else 'TUNED table'}, forward tiles by "
          f"{dict(auto='the default path', on='TMA', off='pointers')[args.tma]}")
    tma = None if args.tma == "auto" else args.tma == "on"
    print()
    print("| dtype | D | causal | N | pass | SDPA backend | SDPA (ms) | SDPA TFLOP/s | Triton (ms) | Triton TFLOP/s "
          "| Triton / SDPA | max abs diff of o |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    worst = {"fwd": 9.0, "fwd+bwd": 9.0}
    for dt in args.dtypes:
        for d in args.dims:
            for causal in args.causal:
                for n in args.lengths:
                    rows, diff, backend = bench_one(n, d, causal == "yes", DTYPES[dt], args.tune, tma)
                    for name, tb, fb, tt, ft, ratio in rows:
                        worst[name] = min(worst[name], ratio)
                        print(f"| {dt} | {d} | {causal} | {n} | {name} | {backend} | {tb:.3f} | {fb:.0f} | {tt:.3f} | "
                              f"{ft:.0f} | {ratio:.2f}x | {diff:.1e} |", flush=True)
    print()
    print(f"lowest ratio: forward {worst['fwd']:.2f}x (target 0.8x), forward + backward {worst['fwd+bwd']:.2f}x "
          "(target 0.7x)")
    if args.tune:
        print()
        print("autotuner winners (pass, key -> BLOCK_M, BLOCK_N, warps, stages):")
        for name, tuner in tfa._tuned.items():
            for key, cfg in tuner.cache.items():
                print(f"  {name} {key} -> {cfg.kwargs['BLOCK_M']}, {cfg.kwargs['BLOCK_N']}, {cfg.num_warps}, "
                      f"{cfg.num_stages}")


if __name__ == "__main__":
    main()
