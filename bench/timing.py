"""CUDA-event timing shared by the GPU benchmarks: the median of `iters` timed calls of
`fn` after `warmup` untimed ones, in milliseconds."""

from __future__ import annotations

import statistics

import torch


def cuda_median_ms(fn, warmup: int = 3, iters: int = 30) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
