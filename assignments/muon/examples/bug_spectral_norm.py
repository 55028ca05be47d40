"""Normalises by the spectral norm (power iteration) instead of the Frobenius norm: every singular value starts larger."""
import math

import torch


def newton_schulz(G, steps=5, coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7):
    """Orthogonalize G [m, n] by `steps` Newton-Schulz iterations in bfloat16; returns bfloat16 [m, n]."""
    a, b, c = coefficients
    X = G.bfloat16()
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.T
    v = torch.ones(X.shape[1], dtype=torch.float32, device=X.device)
    Xf = X.float()
    for _ in range(30):
        v = Xf.T @ (Xf @ v)
        v = v / v.norm().clamp(min=1e-30)
    X = X / (Xf @ v).norm().clamp(min=eps).bfloat16()
    for _ in range(steps):
        A = X @ X.T
        B = torch.addmm(A, A, A, beta=b, alpha=c)
        X = torch.addmm(X, B, X, beta=a)
    return X.T if tall else X


def muon_step(param, grad, buf, lr, momentum=0.95, nesterov=True, weight_decay=0.1, ns_steps=5,
              adjust_lr_fn=None):
    """One step of torch.optim.Muon for one matrix; returns (new_param, new_buf)."""
    buf = torch.zeros_like(grad) if buf is None else buf
    buf = buf.lerp(grad, 1 - momentum)
    direction = grad.lerp(buf, momentum) if nesterov else buf
    O = newton_schulz(direction, ns_steps)
    m, n = param.shape
    if adjust_lr_fn == "match_rms_adamw":
        adjusted = 0.2 * lr * math.sqrt(max(m, n))
    else:
        adjusted = lr * math.sqrt(max(1.0, m / n))
    new = param * (1 - lr * weight_decay) - adjusted * O.to(param.dtype)
    return new, buf


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the groups with use_muon=True (matrices only), AdamW on the others."""

    MUON_DEFAULTS = dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0, ns_steps=5, adjust_lr_fn=None)
    ADAMW_DEFAULTS = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)

    def __init__(self, param_groups):
        """Fill each group's missing options from its kind's defaults; ValueError for a
        parameter that is not 2-D in a Muon group."""
        groups = []
        for given in param_groups:
            group = dict(given)
            params = group["params"]
            group["params"] = [params] if isinstance(params, torch.Tensor) else list(params)
            for key, value in (self.MUON_DEFAULTS if group["use_muon"] else self.ADAMW_DEFAULTS).items():
                group.setdefault(key, value)
            if group["use_muon"]:
                for p in group["params"]:
                    if p.ndim != 2:
                        raise ValueError(f"Muon groups take matrices only; got a parameter of shape {tuple(p.shape)}")
            groups.append(group)
        super().__init__(groups, {})

    @torch.no_grad()
    def step(self, closure=None):
        """Muon groups as torch.optim.Muon, AdamW groups as torch.optim.AdamW; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if group["use_muon"]:
                    new, buf = muon_step(p, p.grad, state.get("momentum_buffer"), group["lr"], group["momentum"],
                                         group["nesterov"], group["weight_decay"], group["ns_steps"],
                                         group["adjust_lr_fn"])
                    state["momentum_buffer"] = buf
                    p.copy_(new)
                    continue
                # AdamW, as torch.optim.AdamW's single-tensor path writes it
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                beta1, beta2 = group["betas"]
                state["step"] += 1
                t = float(state["step"])
                p.mul_(1 - group["lr"] * group["weight_decay"])
                state["exp_avg"].lerp_(p.grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - beta1 ** t))
        return loss
