"""Correct variant B: einsum throughout (forward, backward, merge), LoRALinear drawing
lora_A uniformly in +-1/sqrt(Din) (kaiming_uniform_(a=sqrt(5))'s bound) from the seeded
generator with torch.rand, forward for any leading shape by flattening; GaLore with the
projector kept as [n, rank] / [m, rank] columns, signs by torch.where, in-place moments."""
import math

import torch


def lora_forward(x, W, b, A, B, scaling):
    y = torch.einsum("nd,od->no", x, W)
    if b is not None:
        y = y + b
    return y + scaling * torch.einsum("nr,or->no", torch.einsum("nd,rd->nr", x, A), B)


def lora_backward(dy, x, W, A, B, scaling):
    dyB = torch.einsum("no,or->nr", dy, B)
    dx = torch.einsum("no,od->nd", dy, W) + scaling * torch.einsum("nr,rd->nd", dyB, A)
    dA = scaling * torch.einsum("nr,nd->rd", dyB, x)
    dB = scaling * torch.einsum("no,nr->or", dy, torch.einsum("nd,rd->nr", x, A))
    return dx, dA, dB


def lora_merge(W, A, B, scaling):
    return W + scaling * torch.einsum("or,rd->od", B, A)


def lora_unmerge(W_merged, A, B, scaling):
    return W_merged - scaling * torch.einsum("or,rd->od", B, A)


class LoRALinear(torch.nn.Module):
    def __init__(self, base, r, alpha, seed):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        d_out, d_in = base.weight.shape
        bound = 1.0 / math.sqrt(d_in)      # kaiming_uniform_ with a = sqrt(5)
        g = torch.Generator().manual_seed(seed)
        A = torch.rand(r, d_in, generator=g, dtype=base.weight.dtype) * (2 * bound) - bound
        self.lora_A = torch.nn.Parameter(A.to(base.weight.device))
        self.lora_B = torch.nn.Parameter(base.weight.new_zeros(d_out, r))
        self.r, self.alpha = r, alpha
        self.merged = False

    @property
    def scaling(self):
        return self.alpha / self.r

    def forward(self, x):
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        if self.merged:
            y = flat @ self.base.weight.T
            y = y if self.base.bias is None else y + self.base.bias
        else:
            y = lora_forward(flat, self.base.weight, self.base.bias, self.lora_A, self.lora_B, self.scaling)
        return y.reshape(*lead, -1)

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            self.base.weight += self.scaling * (self.lora_B @ self.lora_A)
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.base.weight -= self.scaling * (self.lora_B @ self.lora_A)
            self.merged = False


def galore_adamw_step(param, grad, state, lr, rank, update_proj_gap=200, scale=0.25, betas=(0.9, 0.999),
                      eps=1e-6, weight_decay=0.0):
    m, n = param.shape
    beta1, beta2 = betas
    state["step"] = state.get("step", 0) + 1
    t = state["step"]
    if t % update_proj_gap == 1 % update_proj_gap:
        U, S, Vh = torch.linalg.svd(grad.float(), full_matrices=False)
        cols = Vh[:rank].T if m >= n else U[:, :rank]            # one singular vector per column
        pick = cols.gather(0, cols.abs().argmax(dim=0, keepdim=True))
        cols = cols * torch.where(pick < 0, -1.0, 1.0)
        state["Q"] = cols.to(param.dtype)
    Q = state["Q"]
    R = grad @ Q if m >= n else Q.T @ grad
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros_like(R)
        state["exp_avg_sq"] = torch.zeros_like(R)
    state["exp_avg"].mul_(beta1).add_(R, alpha=1 - beta1)
    state["exp_avg_sq"].mul_(beta2).addcmul_(R, R, value=1 - beta2)
    N = state["exp_avg"] / (state["exp_avg_sq"].sqrt() + eps)
    low = N @ Q.T if m >= n else Q @ N
    step_size = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    new = param - step_size * scale * low
    return new - lr * weight_decay * new, state
