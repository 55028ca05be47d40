"""Correct, written differently from torch: separate bfloat16 products with the Gram
matrix on the right (X^T X, so wide inputs are the ones transposed), the norm taken in
float32, plain formulas for the momentum, and an optimizer that keeps int step counts
and fills its defaults in add_param_group."""
import math

import torch


def newton_schulz(G, steps=5, coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7):
    a, b, c = coefficients
    X = G.to(torch.bfloat16)
    wide = X.shape[0] < X.shape[1]
    if wide:                     # work on X^T X: make X tall so X^T X is the small side
        X = X.t()
    norm = torch.linalg.vector_norm(X.float())
    X = (X.float() / max(float(norm), eps)).to(torch.bfloat16)
    for _ in range(steps):
        A = X.t() @ X
        X = a * X + X @ (b * A + c * (A @ A))
    return X.t() if wide else X


def muon_step(param, grad, buf, lr, momentum=0.95, nesterov=True, weight_decay=0.1, ns_steps=5, adjust_lr_fn=None):
    if buf is None:
        buf = torch.zeros_like(grad)
    buf = momentum * buf + (1 - momentum) * grad
    d = grad + momentum * (buf - grad) if nesterov else buf
    O = newton_schulz(d, steps=ns_steps).float()
    m, n = param.shape
    scale = 0.2 * math.sqrt(max(m, n)) if adjust_lr_fn == "match_rms_adamw" else max(1.0, m / n) ** 0.5
    out = param.float() * (1 - lr * weight_decay) - (lr * scale) * O
    return out.to(param.dtype), buf


class MuonAdamW(torch.optim.Optimizer):
    def __init__(self, param_groups):
        super().__init__(param_groups, {})

    def add_param_group(self, param_group):
        muon = param_group["use_muon"]
        defaults = (dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0, ns_steps=5, adjust_lr_fn=None)
                    if muon else dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0))
        for k, v in defaults.items():
            param_group.setdefault(k, v)
        super().add_param_group(param_group)
        if muon and any(p.dim() != 2 for p in self.param_groups[-1]["params"]):
            raise ValueError("Muon only supports 2-D parameters")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if group["use_muon"]:
                    new, st["buf"] = muon_step(p, p.grad, st.get("buf"), group["lr"], group["momentum"],
                                               group["nesterov"], group["weight_decay"], group["ns_steps"],
                                               group["adjust_lr_fn"])
                    p.copy_(new)
                    continue
                b1, b2 = group["betas"]
                st["t"] = st.get("t", 0) + 1
                m = st.get("m", torch.zeros_like(p))
                v = st.get("v", torch.zeros_like(p))
                g = p.grad
                p.mul_(1 - group["lr"] * group["weight_decay"])
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                mhat = m / (1 - b1 ** st["t"])
                vhat = v / (1 - b2 ** st["t"])
                p.sub_(group["lr"] * mhat / (vhat.sqrt() + group["eps"]))
                st["m"], st["v"] = m, v
        return loss
