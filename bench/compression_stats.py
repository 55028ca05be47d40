"""Calibration of `compression`'s statistical tests on the reference: how close correct
estimators come to the Hoeffding bounds of `assignments/compression/tests/checks.py`, over
many independent sets of seeds, and how far the biased or variance-free mistakes land.

    .venv/bin/python bench/compression_stats.py [--sets 100]

Prints, per estimator, the largest ratio |mean_i - x_i| / bound_i over the coordinates
(the unbiasedness test fails above 1) and |mse - exact| / bound (the variance test),
as the maximum over `--sets` disjoint seed sets of 2000 seeds (the suite's N).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autograder.judge.suite import generator, load_module  # noqa: E402
from reference import compression as ref  # noqa: E402

C = load_module(Path(__file__).resolve().parents[1] / "assignments/compression/tests/checks.py", "compression_checks")
N = 2000


def randk_dense(x, k, seed, scale=True):
    v, i = ref.randk_compress(x, k, seed)
    return ref.decompress(v if scale else v * k / x.numel(), i, x.numel()).double()


def qsgd_nearest(x, s, seed):
    r, _, norm = C.qsgd_levels(x, s)
    return norm * torch.sign(x.double()) * torch.round(r) / s


ESTIMATORS = {
    "random-k (d=20, k=5)": (lambda x, seed: randk_dense(x, 5, seed), "randk"),
    "random-k without d/k (mistake)": (lambda x, seed: randk_dense(x, 5, seed, scale=False), "randk"),
    "QSGD (d=20, s=2)": (lambda x, seed: ref.qsgd(x, 2, seed).double(), "qsgd"),
    "QSGD rounding to nearest (mistake)": (lambda x, seed: qsgd_nearest(x, 2, seed), "qsgd"),
    "QSGD returning x (mistake)": (lambda x, seed: x.double(), "qsgd"),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", type=int, default=100)
    args = ap.parse_args()
    print(f"| estimator | max mean ratio over {args.sets} seed sets | max variance ratio |")
    print("|---|---|---|")
    for name, (fn, kind) in ESTIMATORS.items():
        x = torch.randn(20, generator=generator(f"{kind}-unbiased" if kind == "randk" else "qsgd-unbiased"))
        if kind == "randk":
            width = x.double().abs() * 20 / 5
        else:
            width = torch.full((20,), float(x.double().norm()) / 2)
        bound = C.hoeffding(width, N, 20)
        r, p, norm = C.qsgd_levels(x, 2)
        exact = float(((norm / 2) ** 2 * p * (1 - p)).sum())
        widest = float(((norm / 2) ** 2 * torch.maximum(p, 1 - p) ** 2).sum())
        vbound = float(C.hoeffding(torch.tensor(widest), N, 1))
        worst_mean = worst_var = 0.0
        sets = args.sets if "mistake" not in name else 3
        for s in range(sets):
            rows = torch.stack([fn(x, 10_000_000 + s * N + j) for j in range(N)])
            worst_mean = max(worst_mean, float(((rows.mean(0) - x.double()).abs() / bound).max()))
            if kind == "qsgd":
                mse = float(((rows - x.double()) ** 2).sum(1).mean())
                worst_var = max(worst_var, abs(mse - exact) / vbound)
        print(f"| {name} | {worst_mean:.3f} | {worst_var:.3f} |" if kind == "qsgd" else
              f"| {name} | {worst_mean:.3f} | - |")


if __name__ == "__main__":
    main()
