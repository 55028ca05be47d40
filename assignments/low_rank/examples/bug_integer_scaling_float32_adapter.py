"""WRONG (2 bugs in LoRALinear): scaling = alpha // r; lora_A / lora_B always float32
(a float64 or bfloat16 base breaks forward)."""
import math

import torch

def lora_forward(x, W, b, A, B, scaling):
    """y = x W^T + b + scaling * (x A^T) B^T, never forming B A."""
    y = x @ W.T + scaling * ((x @ A.T) @ B.T)
    return y if b is None else y + b

def lora_backward(dy, x, W, A, B, scaling):
    """(dx, dA, dB) of y = x W^T + b + scaling (x A^T) B^T, by hand."""
    dyB = dy @ B
    dx = dy @ W + scaling * (dyB @ A)
    dA = scaling * (dyB.T @ x)
    dB = scaling * (dy.T @ (x @ A.T))
    return dx, dA, dB

def lora_merge(W, A, B, scaling):
    """W + scaling B A (a new tensor)."""
    return W + scaling * (B @ A)


def lora_unmerge(W_merged, A, B, scaling):
    """W_merged - scaling B A (a new tensor)."""
    return W_merged - scaling * (B @ A)

class LoRALinear(torch.nn.Module):
    def __init__(self, base, r, alpha, seed):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        d_out, d_in = base.weight.shape
        A = torch.empty(r, d_in)      # BUG: float32 whatever base's dtype
        torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=torch.Generator().manual_seed(seed))
        self.lora_A = torch.nn.Parameter(A.to(base.weight.device))
        self.lora_B = torch.nn.Parameter(torch.zeros(d_out, r, device=base.weight.device))
        self.scaling = alpha // r     # BUG: floor division (1 for alpha=6, r=4)
        self.merged = False

    def forward(self, x):
        y = self.base(x)
        if self.merged:
            return y
        return y + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)

    def merge(self):
        if not self.merged:
            with torch.no_grad():
                self.base.weight.add_(self.scaling * (self.lora_B @ self.lora_A))
            self.merged = True

    def unmerge(self):
        if self.merged:
            with torch.no_grad():
                self.base.weight.sub_(self.scaling * (self.lora_B @ self.lora_A))
            self.merged = False

def galore_adamw_step(param, grad, state, lr, rank, update_proj_gap=200, scale=0.25, betas=(0.9, 0.999),
                      eps=1e-6, weight_decay=0.0):
    """One GaLore AdamW step for one matrix; returns (new_param, state)."""
    m, n = param.shape
    beta1, beta2 = betas
    step = state.get("step", 0) + 1
    if (step - 1) % update_proj_gap == 0:
        U, _, Vh = torch.linalg.svd(grad.float(), full_matrices=False)
        vectors = Vh[:rank] if m >= n else U[:, :rank].T          # one kept singular vector per row
        idx = vectors.abs().argmax(dim=1, keepdim=True)
        signs = torch.sign(vectors.gather(1, idx))
        signs[signs == 0] = 1
        vectors = (vectors * signs).to(param.dtype)
        state["projector"] = vectors if m >= n else vectors.T
    P = state["projector"]
    R = grad @ P.T if m >= n else P.T @ grad
    exp_avg = state.get("exp_avg", torch.zeros_like(R))
    exp_avg_sq = state.get("exp_avg_sq", torch.zeros_like(R))
    exp_avg = beta1 * exp_avg + (1 - beta1) * R
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * R * R
    N = exp_avg / (exp_avg_sq.sqrt() + eps)
    update = scale * (N @ P if m >= n else P @ N)
    new = param - lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step) * update
    new = new - lr * weight_decay * new
    state.update(step=step, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    return new, state
