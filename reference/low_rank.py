r"""Reference of `low_rank`: LoRA (Hu et al., 2021, as peft writes it) and GaLore's
projected AdamW step (Zhao et al., 2024, as its official `galore_torch` writes it), in
float64 unless told otherwise. `assignments/low_rank/tests/test_reference.py` checks
them against autograd, torch.nn.Linear, torch.nn.init and a re-derivation of GaLore.

LoRA: a frozen $W$ [Dout, Din] plus a trainable low-rank $\Delta W = s\,BA$, $A$ [r, Din],
$B$ [Dout, r], $s = \alpha / r$:
    $y = xW^\top + b + s\,(xA^\top)B^\top$,
    $dx = dy\,W + s\,(dy\,B)A$,  $dA = s\,(dy\,B)^\top x$,  $dB = s\,dy^\top (xA^\top)$.
GaLore: AdamW's moments live in a rank-`rank` projection of the gradient, refreshed from
the gradient's SVD every `update_proj_gap` steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def lora_forward(x: Tensor, W: Tensor, b: Tensor | None, A: Tensor, B: Tensor, scaling: float) -> Tensor:
    y = x @ W.T + scaling * ((x @ A.T) @ B.T)
    return y + b if b is not None else y


def lora_backward(dy: Tensor, x: Tensor, W: Tensor, A: Tensor, B: Tensor, scaling: float):
    dyB = dy @ B
    return dy @ W + scaling * (dyB @ A), scaling * (dyB.T @ x), scaling * (dy.T @ (x @ A.T))


def lora_merge(W: Tensor, A: Tensor, B: Tensor, scaling: float) -> Tensor:
    return W + scaling * (B @ A)


def lora_unmerge(W_merged: Tensor, A: Tensor, B: Tensor, scaling: float) -> Tensor:
    return W_merged - scaling * (B @ A)


def lora_A_init(r: int, d_in: int, seed: int, dtype=torch.float32) -> Tensor:
    """lora_A as peft draws it: kaiming_uniform_(a=sqrt(5)) from a generator seeded with `seed`."""
    A = torch.empty(r, d_in, dtype=dtype)
    torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=torch.Generator().manual_seed(seed))
    return A


def svd_flip_rows(V: Tensor) -> Tensor:
    """Each row's sign chosen so that its entry of largest magnitude is positive (the
    first such entry where two tie, as scikit-learn's svd_flip takes argmax)."""
    idx = V.abs().argmax(dim=1)
    signs = torch.sign(V.gather(1, idx[:, None]))
    signs[signs == 0] = 1
    return V * signs


def galore_projector(grad: Tensor, rank: int) -> Tensor:
    """P from the SVD of grad.float(): Vh[:rank] [rank, n] when m >= n, else U[:, :rank] [m, rank],
    each singular vector flipped so that its largest-magnitude entry is positive."""
    U, _, Vh = torch.linalg.svd(grad.float(), full_matrices=False)
    m, n = grad.shape
    if m >= n:
        return svd_flip_rows(Vh[:rank])
    return svd_flip_rows(U[:, :rank].T).T


def galore_adamw_step(param: Tensor, grad: Tensor, state: dict, lr: float, rank: int, update_proj_gap: int = 200,
                      scale: float = 0.25, betas=(0.9, 0.999), eps: float = 1e-6,
                      weight_decay: float = 0.0, dtype=torch.float64) -> tuple[Tensor, dict]:
    """One GaLore AdamW step on a new state dict (the input state is not modified).
    Arithmetic in `dtype` (float64 for the judge's truth); the projector from the float32
    SVD as the contract fixes it, then cast to `dtype`."""
    state = dict(state)
    m, n = param.shape
    b1, b2 = betas
    step = state.get("step", 0) + 1
    g = grad.to(dtype)
    if (step - 1) % update_proj_gap == 0:
        state["projector"] = galore_projector(grad, rank).to(dtype)
    P = state["projector"].to(dtype)
    R = g @ P.T if m >= n else P.T @ g
    exp_avg = state.get("exp_avg", torch.zeros_like(R)).to(dtype)
    exp_avg_sq = state.get("exp_avg_sq", torch.zeros_like(R)).to(dtype)
    exp_avg = b1 * exp_avg + (1 - b1) * R
    exp_avg_sq = b2 * exp_avg_sq + (1 - b2) * R * R
    N = exp_avg / (exp_avg_sq.sqrt() + eps)
    update = scale * (N @ P if m >= n else P @ N)
    step_size = lr * math.sqrt(1 - b2 ** step) / (1 - b1 ** step)
    new = param.to(dtype) - step_size * update
    new = new - lr * weight_decay * new
    state.update(step=step, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    return new, state


class LoRALinear(torch.nn.Module):
    """The judge's LoRALinear: peft's initialisation, a frozen base, merge / unmerge in place."""

    def __init__(self, base: torch.nn.Linear, r: int, alpha: float, seed: int):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        d_out, d_in = base.weight.shape
        A = lora_A_init(r, d_in, seed, dtype=base.weight.dtype).to(base.weight.device)
        self.lora_A = torch.nn.Parameter(A)
        self.lora_B = torch.nn.Parameter(torch.zeros(d_out, r, dtype=base.weight.dtype, device=base.weight.device))
        self.scaling = alpha / r
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        if self.merged:
            return y
        return y + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)

    def merge(self) -> None:
        if not self.merged:
            self.base.weight.data = lora_merge(self.base.weight.data, self.lora_A.data, self.lora_B.data, self.scaling)
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            self.base.weight.data = lora_unmerge(self.base.weight.data, self.lora_A.data, self.lora_B.data,
                                                 self.scaling)
            self.merged = False
