"""Correct variant A: F.linear / addmm forward, backward with the other association, merge
via .data, LoRALinear with nn.init on the Parameter itself and the scaling kept as a buffer,
GaLore with torch.svd (V, not Vh), float64 internals, signs fixed on the full factors,
state keys of its own and an int64 tensor step."""
import math

import torch
import torch.nn.functional as F


def lora_forward(x, W, b, A, B, scaling):
    return torch.addmm(F.linear(x, W, b), x @ A.T, B.T, alpha=scaling) if b is not None else \
        F.linear(x, W) + scaling * F.linear(F.linear(x, A), B)


def lora_backward(dy, x, W, A, B, scaling):
    g = scaling * dy
    gB = g @ B                       # [N, r]
    dx = dy @ W + gB @ A
    dA = gB.t() @ x
    dB = g.t() @ (x @ A.t())
    return dx, dA, dB


def lora_merge(W, A, B, scaling):
    return W.clone().addmm_(B, A, alpha=scaling)


def lora_unmerge(W_merged, A, B, scaling):
    return W_merged.clone().addmm_(B, A, alpha=-scaling)


class LoRALinear(torch.nn.Module):
    def __init__(self, base, r, alpha, seed):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad = False
        if self.base.bias is not None:
            self.base.bias.requires_grad = False
        out_features, in_features = base.weight.shape
        kw = dict(dtype=base.weight.dtype, device=base.weight.device)
        A = torch.empty(r, in_features, dtype=base.weight.dtype)  # drawn on the CPU: the generator is a CPU one
        torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=torch.Generator().manual_seed(seed))
        self.lora_A = torch.nn.Parameter(A.to(base.weight.device))
        self.lora_B = torch.nn.Parameter(torch.empty(out_features, r, **kw))
        torch.nn.init.zeros_(self.lora_B)
        self.register_buffer("scaling", torch.tensor(alpha / r, **kw))
        self.is_merged = False

    def forward(self, x):
        y = self.base(x)
        if not self.is_merged:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        return y

    def merge(self):
        if not self.is_merged:
            self.base.weight.data = lora_merge(self.base.weight.data, self.lora_A.data, self.lora_B.data, self.scaling)
            self.is_merged = True

    def unmerge(self):
        if self.is_merged:
            self.base.weight.data = lora_unmerge(self.base.weight.data, self.lora_A.data, self.lora_B.data,
                                                 self.scaling)
            self.is_merged = False


def _flip(vectors):
    """Rows of `vectors`, each with its largest-magnitude entry made positive."""
    out = vectors.clone()
    for i in range(out.shape[0]):
        j = int(torch.argmax(out[i].abs()))
        if out[i, j] < 0:
            out[i] = -out[i]
    return out


def galore_adamw_step(param, grad, state, lr, rank, update_proj_gap=200, scale=0.25, betas=(0.9, 0.999),
                      eps=1e-6, weight_decay=0.0):
    m, n = grad.shape
    b1, b2 = betas
    state = dict(state)
    t = int(state.get("t", torch.tensor(0))) + 1
    state["t"] = torch.tensor(t)
    state["step"] = t
    if (t - 1) % update_proj_gap == 0:
        U, S, V = torch.svd(grad.float())           # V, not Vh
        if m >= n:
            state["P"] = _flip(V[:, :rank].T).double()          # [rank, n]
        else:
            state["P"] = _flip(U[:, :rank].T).T.double()        # [m, rank]
    P = state["P"]
    g = grad.double()
    R = g @ P.T if m >= n else P.T @ g
    m1 = state.get("m1", torch.zeros_like(R)) * b1 + (1 - b1) * R
    m2 = state.get("m2", torch.zeros_like(R)) * b2 + (1 - b2) * R.square()
    state["m1"], state["m2"] = m1, m2
    N = m1 / (m2.sqrt() + eps)
    upd = (N @ P if m >= n else P @ N) * scale
    p = param.double()
    p = p - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * upd
    p = p * (1 - lr * weight_decay)
    return p.to(param.dtype), state
