"""Correct variant A: linalg.matrix_norm('fro') in bfloat16, .mT, in-place ops on a clone,
A @ (A @ X); muon_step with mul/add; MuonAdamW: defaults by dict merge, params from any
iterable, state keys of its own, tensor step counts, AdamW via bias-corrected m_hat / v_hat."""
import math

import torch


def newton_schulz(G, steps=5, coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7):
    a, b, c = coefficients
    X = G.to(torch.bfloat16).clone()
    transposed = X.size(-2) > X.size(-1)
    if transposed:
        X = X.mT
    X.div_(torch.linalg.matrix_norm(X, ord="fro").clamp(min=eps))
    for _ in range(steps):
        A = X @ X.mT
        AX = A @ X
        X = a * X + b * AX + c * (A @ AX)
    if transposed:
        X = X.mT
    return X


def muon_step(param, grad, buf, lr, momentum=0.95, nesterov=True, weight_decay=0.1, ns_steps=5, adjust_lr_fn=None):
    if buf is None:
        buf = torch.zeros_like(grad)
    new_buf = buf.mul(momentum).add(grad, alpha=1 - momentum)
    d = new_buf.mul(momentum).add(grad, alpha=1 - momentum) if nesterov else new_buf
    O = newton_schulz(d, steps=ns_steps)
    rows, cols = param.shape
    if adjust_lr_fn in (None, "original"):
        lr_adj = lr * max(1.0, rows / cols) ** 0.5
    elif adjust_lr_fn == "match_rms_adamw":
        lr_adj = 0.2 * lr * max(rows, cols) ** 0.5
    else:
        raise ValueError(f"unknown adjust_lr_fn {adjust_lr_fn}")
    out = param.clone()
    out.mul_(1 - lr * weight_decay)
    out.sub_(lr_adj * O.to(out.dtype))
    return out, new_buf


_MUON = {"lr": 0.02, "momentum": 0.95, "nesterov": True, "weight_decay": 0.0, "ns_steps": 5, "adjust_lr_fn": None}
_ADAMW = {"lr": 3e-4, "betas": (0.9, 0.95), "eps": 1e-10, "weight_decay": 0.0}


class MuonAdamW(torch.optim.Optimizer):
    def __init__(self, param_groups):
        merged = []
        for g in param_groups:
            g = {**(_MUON if g["use_muon"] else _ADAMW), **g}
            g["params"] = list(g["params"])
            if g["use_muon"]:
                for p in g["params"]:
                    if p.dim() != 2:
                        raise ValueError("Muon needs 2-D parameters")
            merged.append(g)
        super().__init__(merged, defaults={})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in filter(lambda q: q.grad is not None, group["params"]):
                st = self.state[p]
                if group["use_muon"]:
                    new, st["mom"] = muon_step(p, p.grad, st.get("mom"), lr=group["lr"], momentum=group["momentum"],
                                               nesterov=group["nesterov"], weight_decay=group["weight_decay"],
                                               ns_steps=group["ns_steps"], adjust_lr_fn=group["adjust_lr_fn"])
                    p.copy_(new)
                else:
                    if "n" not in st:
                        st["n"] = torch.zeros(())
                        st["m1"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        st["m2"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["n"] += 1
                    t = st["n"].item()
                    b1, b2 = group["betas"]
                    st["m1"].mul_(b1).add_(p.grad, alpha=1 - b1)
                    st["m2"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                    m_hat = st["m1"] / (1 - b1 ** t)
                    v_hat = st["m2"] / (1 - b2 ** t)
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.addcdiv_(m_hat, v_hat.sqrt().add_(group["eps"]), value=-group["lr"])
        return loss
