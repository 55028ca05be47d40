r"""Reference of `muon`: Newton–Schulz orthogonalization and the Muon step, as
`torch.optim.Muon` of the installed PyTorch computes them (the contract says the class
wins where the text and the class disagree), plus the float64 tools the suite measures
with. `assignments/muon/tests/test_reference.py` checks each against torch.optim.Muon
and torch.optim.AdamW.

Newton–Schulz with coefficients $(a, b, c)$ maps each singular value $\sigma$ of the
Frobenius-normalised $X$ through the odd quintic $p(\sigma) = a\sigma + b\sigma^3 + c\sigma^5$,
`steps` times, and leaves the singular vectors alone: $X_k = U\, p^{\circ k}(\Sigma)\, V^\top$.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

COEFFICIENTS = (3.4445, -4.7750, 2.0315)
EPS = 1e-7


def newton_schulz(G: Tensor, steps: int = 5, coefficients=COEFFICIENTS, eps: float = EPS) -> Tensor:
    """torch.optim.Muon's iteration, operation for operation (bfloat16, torch.addmm)."""
    a, b, c = coefficients
    X = G.bfloat16()
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.T
    X = X.div(X.norm().clamp(min=eps))
    for _ in range(steps):
        A = X @ X.T
        B = torch.addmm(A, A, A, beta=b, alpha=c)
        X = torch.addmm(X, B, X, beta=a)
    return X.T if tall else X


def adjusted_lr(lr: float, shape, adjust_lr_fn: str | None) -> float:
    m, n = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1.0, m / n))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(m, n))
    raise ValueError(f"unknown adjust_lr_fn {adjust_lr_fn!r}")


def muon_step(param: Tensor, grad: Tensor, buf: Tensor | None, lr: float, momentum: float = 0.95,
              nesterov: bool = True, weight_decay: float = 0.1, ns_steps: int = 5,
              adjust_lr_fn: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One step of torch.optim.Muon on one matrix: (new param, new buffer, the orthogonalized
    direction O). The suite's tolerance on the parameter is a fraction of lr' * ||O||."""
    buf = torch.zeros_like(grad) if buf is None else buf
    buf = buf.lerp(grad, 1 - momentum)
    direction = grad.lerp(buf, momentum) if nesterov else buf
    ortho = newton_schulz(direction, ns_steps)
    new = param * (1 - lr * weight_decay)
    new = new.add(ortho, alpha=-adjusted_lr(lr, param.shape, adjust_lr_fn))
    return new.to(param.dtype), buf, ortho


def quintic_map(sigma: Tensor, steps: int = 5, coefficients=COEFFICIENTS) -> Tensor:
    """Exact (float64) image of singular values under `steps` iterations of the quintic."""
    a, b, c = coefficients
    s = sigma.double()
    for _ in range(steps):
        s = a * s + b * s ** 3 + c * s ** 5
    return s


def expected_singular_values(G: Tensor, steps: int = 5, coefficients=COEFFICIENTS) -> Tensor:
    """The singular values newton_schulz(G) has in exact arithmetic, largest first."""
    G = G.double()
    s = torch.linalg.svdvals(G) / G.norm()
    return quintic_map(s, steps, coefficients).sort(descending=True).values


def invariant_interval(coefficients=COEFFICIENTS) -> tuple[float, float]:
    """[p(s_min), p(s_max)] where s_max < s_min are the quintic's local maximum and minimum
    on (0, inf): once a singular value is in it, every further step keeps it there."""
    a, b, c = coefficients
    disc = math.sqrt(9 * b * b - 20 * a * c)
    lo_root = math.sqrt((-3 * b - disc) / (10 * c))   # local maximum of p
    hi_root = math.sqrt((-3 * b + disc) / (10 * c))   # local minimum of p
    p = lambda s: a * s + b * s ** 3 + c * s ** 5      # noqa: E731
    return p(hi_root), p(lo_root)


class TorchMuonAdamW:
    """The judge's MuonAdamW: torch.optim.Muon for the groups with use_muon, torch.optim.AdamW
    (foreach=False) for the others, with the contract's defaults."""

    MUON = dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0, ns_steps=5, adjust_lr_fn=None)
    ADAMW = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)

    def __init__(self, param_groups):
        muon, adamw = [], []
        for group in param_groups:
            group = dict(group)
            use = group.pop("use_muon")
            defaults = self.MUON if use else self.ADAMW
            entry = {**defaults, **group}
            if "betas" in entry:
                entry["betas"] = tuple(entry["betas"])
            (muon if use else adamw).append(entry)
        self.optimizers = []
        if muon:
            self.optimizers.append(torch.optim.Muon(muon))
        if adamw:
            self.optimizers.append(torch.optim.AdamW(adamw, foreach=False))

    @property
    def param_groups(self):
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self):
        for o in self.optimizers:
            o.zero_grad()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in self.optimizers:
            o.step()
        return loss

    def state_dict(self):
        return [o.state_dict() for o in self.optimizers]

    def load_state_dict(self, state):
        for o, s in zip(self.optimizers, state):
            o.load_state_dict(s)
