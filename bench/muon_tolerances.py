"""The measurement behind `muon`'s tolerances (assignments/muon/tests/checks.py).

For random Gaussian and ill-conditioned matrices, how far correct bfloat16 orderings of
Newton–Schulz land from torch.optim.Muon's own iteration (the baseline, measured in the
same run), and how far the mistakes the suite must catch land: relative Frobenius
distance, and the largest error of the singular values against the quintic's exact
image. Run: `python bench/muon_tolerances.py [--seeds 20]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.optim._muon import _zeropower_via_newtonschulz

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference import muon as ref  # noqa: E402

C = ref.COEFFICIENTS


def _frame(G):
    X, tall = G.bfloat16(), G.shape[0] > G.shape[1]
    return (X.T if tall else X), tall


def separate(G, steps=5, eps=1e-7):
    a, b, c = C
    X, tall = _frame(G)
    X = X / X.norm().clamp(min=eps)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * (A @ A)) @ X
    return X.T if tall else X


def nested(G, steps=5, eps=1e-7):
    a, b, c = C
    X, tall = _frame(G)
    X = (X.float() / max(float(X.float().norm()), eps)).bfloat16()
    for _ in range(steps):
        A = X @ X.T
        AX = A @ X
        X = a * X + b * AX + c * (A @ AX)
    return X.T if tall else X


def right_gram(G, steps=5, eps=1e-7):
    a, b, c = C
    X = G.bfloat16()
    wide = X.shape[0] < X.shape[1]
    X = X.T if wide else X
    X = X / X.norm().clamp(min=eps)
    for _ in range(steps):
        A = X.T @ X
        X = a * X + X @ (b * A + c * (A @ A))
    return X.T if wide else X


def float32_iterations(G, steps=5, eps=1e-7):
    a, b, c = C
    X, tall = G.float(), G.shape[0] > G.shape[1]
    X = X.T if tall else X
    X = X / X.norm().clamp(min=eps)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * (A @ A)) @ X
    return (X.T if tall else X).bfloat16()


def spectral_norm(G, steps=5, eps=1e-7):
    a, b, c = C
    X, tall = _frame(G)
    X = X / torch.linalg.matrix_norm(X.float(), 2).bfloat16()
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * (A @ A)) @ X
    return X.T if tall else X


def polar(G, steps=5, eps=1e-7):
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    return (U @ Vh).bfloat16()


CORRECT = {"separate products": separate, "A @ (A @ X), norm in float32": nested, "Gram X^T X": right_gram}
WRONG = {"float32 iterations": float32_iterations, "spectral norm": spectral_norm, "exact polar (SVD)": polar}


def distance(got, want):
    return float((got.double() - want.double()).norm() / want.double().norm())


def sv_error(got, G):
    if not torch.isfinite(got.float()).all():
        return float("inf")
    have = torch.linalg.svdvals(got.double()).sort(descending=True).values
    return float((have - ref.expected_singular_values(G)).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    seeds = ap.parse_args().seeds
    print(f"torch {torch.__version__}; baseline: torch.optim.Muon's iteration; {seeds} seeds per shape")
    print("| input | shape | formulation | max rel. Frobenius from baseline | max singular-value error |")
    print("| --- | --- | --- | --- | --- |")
    for kind in ("gaussian", "ill-conditioned"):
        for shape in [(64, 32), (32, 64), (48, 48), (128, 16), (96, 40)]:
            rows = {name: [0.0, 0.0] for name in ["torch.optim.Muon", *CORRECT, *WRONG]}
            for seed in range(seeds):
                G = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
                if kind == "ill-conditioned":
                    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
                    G = ((U * torch.logspace(0, -3, min(shape), dtype=torch.float64)) @ Vh).float()
                base = _zeropower_via_newtonschulz(G, C, 5, ref.EPS)
                for name, fn in [("torch.optim.Muon", lambda g, base=base: base), *CORRECT.items(), *WRONG.items()]:
                    out = fn(G)
                    rows[name][0] = max(rows[name][0], distance(out, base))
                    rows[name][1] = max(rows[name][1], sv_error(out, G))
            for name, (d, e) in rows.items():
                print(f"| {kind} | {shape[0]}x{shape[1]} | {name} | {d:.3f} | {e:.3f} |")


if __name__ == "__main__":
    main()
