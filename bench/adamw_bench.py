"""The Triton fused AdamW (reference/triton_adamw.py) against torch.optim.AdamW.

Baseline: torch.optim.AdamW(fused=True), PyTorch's fused CUDA kernel, measured in the
same run on the same parameters and gradients. Also: foreach=True (multi-tensor) and
foreach=False (one tensor at a time). Parameters: the tensors of a GPT-2 small (124M
parameters, 148 tensors), float32; the Triton optimizer updates the 148 tensors in one
launch of the multi-tensor kernel (reference/triton_multi_tensor.py's packed index);
"Triton, flat" updates one flat 124M buffer in one launch (the layout of ZeRO/FSDP flat
parameters); "Triton, per tensor" launches the single-tensor kernel 148 times (the
previous reference, for comparison). Times: median of CUDA-event-timed steps after warm-up.
Correctness: after 10 steps, the largest difference from the fused baseline.
Run on a GPU: `python bench/adamw_bench.py` (prints a markdown table).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import cuda_median_ms  # noqa: E402
from reference.triton_adamw import TritonAdamW, fused_adamw_  # noqa: E402


def gpt2_shapes(layers=12, d=768, vocab=50257, ctx=1024):
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def make_params(shapes, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g).to(device)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(device) * 1e-2
    return params


class PerTensorAdamW(TritonAdamW):
    """The single-tensor kernel once per parameter (the reference before the multi-tensor one)."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if not self.state[p]:
                    self.state[p] = self._new_state(p)
                st = self.state[p]
                st["step"] += 1
                fused_adamw_(p, p.grad, st["exp_avg"], st["exp_avg_sq"], st["step"], group["lr"], b1, b2,
                             group["eps"], group["weight_decay"])


def time_steps(step):
    return cuda_median_ms(step, warmup=5, iters=30)


def main():
    assert torch.cuda.is_available(), "this benchmark needs a GPU"
    shapes = gpt2_shapes()
    hyper = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    n = sum(torch.Size(s).numel() for s in shapes)
    results = {}
    variants = {
        "torch fused=True (baseline)": lambda ps: torch.optim.AdamW(ps, fused=True, **hyper),
        "torch foreach=True": lambda ps: torch.optim.AdamW(ps, foreach=True, **hyper),
        "torch foreach=False": lambda ps: torch.optim.AdamW(ps, foreach=False, **hyper),
        "Triton multi-tensor (one launch)": lambda ps: TritonAdamW(ps, **hyper),
        "Triton, per tensor (148 launches)": lambda ps: PerTensorAdamW(ps, **hyper),
    }
    finals = {}
    for name, make in variants.items():
        ps = make_params(shapes, "cuda")
        opt = make(ps)
        for _ in range(10):
            opt.step()
        finals[name] = [p.detach().clone() for p in ps]
        results[name] = time_steps(opt.step)
        del opt, ps
        torch.cuda.empty_cache()

    flat = torch.randn(n, device="cuda")
    grad = torch.randn(n, device="cuda") * 1e-2
    m, v = torch.zeros_like(flat), torch.zeros_like(flat)
    step = [0]

    def flat_step():
        step[0] += 1
        fused_adamw_(flat, grad, m, v, step[0], hyper["lr"], *hyper["betas"], hyper["eps"], hyper["weight_decay"])

    results["Triton, flat (one launch)"] = time_steps(flat_step)

    base = results["torch fused=True (baseline)"]
    bytes_moved = n * 4 * 7  # read p, g, m, v; write p, m, v
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"triton {__import__('triton').__version__}, {n / 1e6:.1f}M float32 parameters in {len(shapes)} tensors")
    print()
    print("| optimizer step | time (ms) | vs fused baseline | effective bandwidth (GB/s) | max diff vs baseline after 10 steps |")
    print("| --- | --- | --- | --- | --- |")
    for name, ms in results.items():
        diff = ""
        if name in finals:
            d = max((a - b).abs().max().item() for a, b in zip(finals[name], finals["torch fused=True (baseline)"]))
            diff = f"{d:.1e}"
        print(f"| {name} | {ms:.3f} | {base / ms:.2f}x | {bytes_moved / ms / 1e6:.0f} | {diff} |")


if __name__ == "__main__":
    main()
