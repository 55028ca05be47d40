"""Bus bandwidth of the reference ring all-reduce against torch.distributed.all_reduce.

`python bench/ring_bench.py --world 2 --backend nccl` on a machine with 2 GPUs (NCCL's
all_reduce is the baseline, measured in the same run), or `--backend gloo` on CPUs.
Bus bandwidth = 2 (p - 1) / p * bytes / time, the figure nccl-tests reports: it is the
per-link rate a ring achieves, comparable across world sizes. Median of `--iters`
timed runs after 3 warm-ups; float32 tensors of 1 MB to `--max-mb`.

`--segments 1,4,8` times the plain ring (1) and the pipelined ring at each other segment
count, every one against the same all_reduce baseline. NCCL's own settings come from the
environment, which the ranks inherit: `NCCL_MAX_P2P_NCHANNELS=32 python bench/ring_bench.py`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference import ring_allreduce as ring  # noqa: E402


def _time(fn, device, iters):
    for _ in range(3):
        fn()
    times = []
    for _ in range(iters):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dist.barrier()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _ring_fn(x, segments):
    if segments == 1:
        return lambda: ring.ring_all_reduce(x)
    return lambda: ring.ring_all_reduce_pipelined(x, segments)


def _worker(rank, world, backend, path, sizes, iters, segments, out):
    device = "cpu"
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    dist.init_process_group(backend, init_method=f"file://{path}", rank=rank, world_size=world)
    rows = []
    for mb in sizes:
        n = mb * (1 << 20) // 4
        x = torch.ones(n, device=device)
        t_ref = _time(lambda x=x: dist.all_reduce(x), device, iters)
        bus = 2 * (world - 1) / world * n * 4
        for k in segments:
            t_ring = _time(_ring_fn(x, k), device, iters)
            rows.append((mb, k, t_ref, t_ring, bus / t_ref / 1e9, bus / t_ring / 1e9))
    if rank == 0:
        torch.save(rows, out)
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--backend", default="nccl" if torch.cuda.device_count() >= 2 else "gloo")
    ap.add_argument("--max-mb", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--segments", default="1", help="comma-separated; 1 = the plain ring")
    args = ap.parse_args()
    segments = [int(k) for k in args.segments.split(",")]
    sizes = [mb for mb in (1, 4, 16, 64, 256, 1024) if mb <= args.max_mb]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.pt")
        mp.start_processes(_worker, args=(args.world, args.backend, os.path.join(tmp, "pg"), sizes, args.iters, segments, out),
                           nprocs=args.world, start_method="spawn" if args.backend == "nccl" else "fork")
        rows = torch.load(out)
    what = torch.cuda.get_device_name() if args.backend == "nccl" else f"{os.cpu_count()} CPU cores"
    nccl = {k: v for k, v in os.environ.items() if k.startswith("NCCL_")}
    print(f"{args.world} ranks, {args.backend}, {what}, torch {torch.__version__}; float32; median of {args.iters}"
          + (f"; {nccl}" if nccl else ""))
    print("| size | segments | all_reduce (ms) | ring (ms) | all_reduce bus GB/s | ring bus GB/s | ring / all_reduce |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mb, k, t_ref, t_ring, b_ref, b_ring in rows:
        print(f"| {mb} MB | {k} | {t_ref * 1e3:.2f} | {t_ring * 1e3:.2f} | {b_ref:.2f} | {b_ring:.2f} | {t_ref / t_ring:.2f}x |")


if __name__ == "__main__":
    main()
