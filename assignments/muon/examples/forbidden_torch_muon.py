"""MuonAdamW built from torch.optim.Muon and torch.optim.AdamW (forbidden)."""
import math

import torch


def newton_schulz(G, steps=5, coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7):
    a, b, c = coefficients
    X = G.bfloat16()
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.T
    X = X / X.norm().clamp(min=eps)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def muon_step(param, grad, buf, lr, momentum=0.95, nesterov=True, weight_decay=0.1, ns_steps=5, adjust_lr_fn=None):
    buf = torch.zeros_like(grad) if buf is None else buf
    buf = buf.lerp(grad, 1 - momentum)
    d = grad.lerp(buf, momentum) if nesterov else buf
    m, n = param.shape
    lr2 = 0.2 * lr * math.sqrt(max(m, n)) if adjust_lr_fn == "match_rms_adamw" else lr * math.sqrt(max(1, m / n))
    return param * (1 - lr * weight_decay) - lr2 * newton_schulz(d, ns_steps).to(param.dtype), buf


class MuonAdamW(torch.optim.Optimizer):
    def __init__(self, param_groups):
        muon = [dict(g) for g in param_groups if g["use_muon"]]
        adamw = [dict(g) for g in param_groups if not g["use_muon"]]
        self.inner = [torch.optim.Muon(muon, lr=0.02, weight_decay=0.0), torch.optim.AdamW(adamw, lr=3e-4)]
        super().__init__([p for g in param_groups for p in g["params"]], {})

    def step(self, closure=None):
        loss = closure() if closure else None
        for o in self.inner:
            o.step()
        return loss
