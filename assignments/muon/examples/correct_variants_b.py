"""Correct variant B: F.normalize for the Frobenius normalisation, Horner-style products,
Gram on the short side by a test on the shape; muon_step with lerp/addcmul-free formulas in
float64 internals; MuonAdamW that fills defaults in add_param_group and keeps the AdamW step
as an int, AdamW written as torch does (lerp, bias-corrected denominator)."""
import math

import torch
import torch.nn.functional as F


def newton_schulz(G, steps=5, coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7):
    a, b, c = coefficients
    m, n = G.shape
    X = G.bfloat16()
    if m > n:
        X = X.t()
    X = F.normalize(X.reshape(-1), dim=0, eps=eps).view_as(X)
    for _ in range(steps):
        A = torch.mm(X, X.t())
        P = b * A + c * torch.mm(A, A)
        X = a * X + torch.mm(P, X)
    return X.t() if m > n else X


def muon_step(param, grad, buf, lr, momentum=0.95, nesterov=True, weight_decay=0.1, ns_steps=5, adjust_lr_fn=None):
    g = grad.double()
    b = torch.zeros_like(g) if buf is None else buf.double()
    b = momentum * b + (1 - momentum) * g
    d = (1 - momentum) * g + momentum * b if nesterov else b
    O = newton_schulz(d.float(), ns_steps, eps=1e-7)
    m, n = param.shape
    lr_adj = 0.2 * lr * math.sqrt(max(m, n)) if adjust_lr_fn == "match_rms_adamw" else lr * math.sqrt(max(1.0, m / n))
    new = param.double() * (1 - lr * weight_decay) - lr_adj * O.double()
    return new.to(param.dtype), b.to(grad.dtype)


class MuonAdamW(torch.optim.Optimizer):
    def __init__(self, param_groups):
        super().__init__(param_groups, defaults=dict())

    def add_param_group(self, param_group):
        if param_group["use_muon"]:
            defaults = dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0, ns_steps=5, adjust_lr_fn=None)
        else:
            defaults = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)
        defaults.update(param_group)
        params = defaults["params"]
        defaults["params"] = [params] if isinstance(params, torch.Tensor) else list(params)
        if defaults["use_muon"] and any(p.ndim != 2 for p in defaults["params"]):
            raise ValueError("Muon groups take only matrices")
        super().add_param_group(defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                state = self.state[p]
                if group["use_muon"]:
                    new, state["momentum_buffer"] = muon_step(p, grad, state.get("momentum_buffer"), group["lr"],
                                                              group["momentum"], group["nesterov"],
                                                              group["weight_decay"], group["ns_steps"],
                                                              group["adjust_lr_fn"])
                    p.copy_(new)
                    continue
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                beta1, beta2 = group["betas"]
                lr, t = group["lr"], state["step"]
                p.mul_(1 - lr * group["weight_decay"])
                state["exp_avg"].lerp_(grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
                denom = (state["exp_avg_sq"].sqrt() / math.sqrt(bc2)).add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denom, value=-lr / bc1)
        return loss
