"""Correct, written differently: einsum and F.linear, the gradients associated the other
way, addmm for merging, the kaiming bound computed by hand, GaLore with an explicit loop
for the signs, in-place moments and a tensor step count."""
import math

import torch
import torch.nn.functional as F


def lora_forward(x, W, b, A, B, scaling):
    low = torch.einsum("nd,rd->nr", x, A)
    return F.linear(x, W, b) + scaling * torch.einsum("nr,or->no", low, B)


def lora_backward(dy, x, W, A, B, scaling):
    dx = dy @ W + (scaling * dy) @ B @ A
    dA = (B.T @ dy.T) @ x * scaling
    dB = dy.T @ (x @ A.T) * scaling
    return dx, dA, dB


def lora_merge(W, A, B, scaling):
    return torch.addmm(W, B, A, alpha=scaling)


def lora_unmerge(W_merged, A, B, scaling):
    return torch.addmm(W_merged, B, A, alpha=-scaling)


class LoRALinear(torch.nn.Module):
    def __init__(self, base, r, alpha, seed):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        out_f, in_f = base.weight.shape
        bound = 1.0 / math.sqrt(in_f)
        g = torch.Generator().manual_seed(seed)
        self.lora_A = torch.nn.Parameter(torch.empty(r, in_f, dtype=base.weight.dtype).uniform_(-bound, bound,
                                                                                                 generator=g).to(base.weight.device))
        self.lora_B = torch.nn.Parameter(torch.zeros(out_f, r, dtype=base.weight.dtype, device=base.weight.device))
        self.scaling = alpha / r
        self._merged = False

    def forward(self, x):
        out = F.linear(x, self.base.weight, self.base.bias)
        if not self._merged:
            out = out + self.scaling * F.linear(F.linear(x, self.lora_A), self.lora_B)
        return out

    @torch.no_grad()
    def merge(self):
        if not self._merged:
            self.base.weight.copy_(lora_merge(self.base.weight, self.lora_A, self.lora_B, self.scaling))
            self._merged = True

    @torch.no_grad()
    def unmerge(self):
        if self._merged:
            self.base.weight.copy_(lora_unmerge(self.base.weight, self.lora_A, self.lora_B, self.scaling))
            self._merged = False


def galore_adamw_step(param, grad, state, lr, rank, update_proj_gap=200, scale=0.25, betas=(0.9, 0.999),
                      eps=1e-6, weight_decay=0.0):
    m, n = param.shape
    b1, b2 = betas
    if "step" not in state:
        state["step"] = torch.tensor(0)
    state["step"] += 1
    t = int(state["step"])
    right = m >= n
    if (t - 1) % update_proj_gap == 0:
        U, S, Vh = torch.linalg.svd(grad.float(), full_matrices=False)
        P = Vh[:rank].clone() if right else U[:, :rank].clone()
        for i in range(rank):
            v = P[i] if right else P[:, i]
            if v[v.abs().argmax()] < 0:
                v.neg_()
        state["P"] = P.to(param.dtype)
    P = state["P"]
    R = grad @ P.T if right else P.T @ grad
    if "m" not in state:
        state["m"] = torch.zeros_like(R)
        state["v"] = torch.zeros_like(R)
    state["m"].mul_(b1).add_(R, alpha=1 - b1)
    state["v"].mul_(b2).addcmul_(R, R, value=1 - b2)
    N = state["m"] / (state["v"].sqrt() + eps)
    full = (N @ P if right else P @ N) * scale
    step_size = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    out = param.clone()
    out.add_(full, alpha=-step_size)
    out.add_(out, alpha=-lr * weight_decay)
    return out, state
