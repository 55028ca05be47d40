"""Red team (issue 25): a correct solution whose sgd_momentum_step sleeps 12 s per call.
Sleeping uses no CPU, so no CPU limit fires; it held its judge for 647 s. Time the
child spends neither running nor waiting for a CPU is charged against 30 s per
submission (limits.wait_seconds): past it the remaining tests score zero with the
reason "waited instead of computing"."""
import time

import torch
from torch import Tensor


def _sgd_momentum_step(param: Tensor, grad: Tensor, buf, lr, momentum=0.0, dampening=0.0,
                      nesterov=False, weight_decay=0.0):
    p = param.clone()
    d = grad.clone()
    if weight_decay:
        d.add_(p, alpha=weight_decay)
    if momentum:
        if buf is None:
            buf = d.clone()
        else:
            buf = buf.clone().mul_(momentum).add_(d, alpha=1 - dampening)
        if nesterov:
            d = d.add(buf, alpha=momentum)
        else:
            d = buf
    p.add_(d, alpha=-lr)
    return p, buf


def adagrad_step(param, grad, state_sum, step, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
    dt = param.dtype
    p, g, s = param.double(), grad.double(), state_sum.double()
    g = g + weight_decay * p
    s = s + g.pow(2)
    p = p - lr / (1 + (step - 1) * lr_decay) * g / (torch.sqrt(s) + eps)
    return p.to(dt), s.to(dt)


def rmsprop_step(param, grad, square_avg, lr, alpha=0.99, eps=1e-8, weight_decay=0.0):
    g = grad if weight_decay == 0 else grad.add(param, alpha=weight_decay)
    v = torch.lerp(g * g, square_avg, alpha)  # alpha * v + (1 - alpha) * g^2
    return torch.addcdiv(param, g, v.sqrt().add(eps), value=-lr), v


def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0, decoupled=False):
    p = param.clone()
    if decoupled:
        p.mul_(1 - lr * weight_decay)
        g = grad
    else:
        g = grad.add(param, alpha=weight_decay)
    m = exp_avg.mul(beta1).add_(g, alpha=1 - beta1)
    v = exp_avg_sq.mul(beta2).addcmul_(g, g, value=1 - beta2)
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    p.addcdiv_(m_hat, v_hat.sqrt() + eps, value=-lr)
    return p, m, v


class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        if lr < 0:
            raise ValueError("lr must be non-negative")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        with torch.no_grad():
            for group in self.param_groups:
                lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    st = self.state[p]
                    if "t" not in st:
                        st["t"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                    st["t"] += 1
                    p.mul_(1 - lr * wd)
                    st["m"].lerp_(p.grad, 1 - b1)
                    st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                    denom = (st["v"] / (1 - b2 ** st["t"])).sqrt_().add_(eps)
                    p.addcdiv_(st["m"], denom, value=-lr / (1 - b1 ** st["t"]))
        return loss


def sgd_momentum_step(*args, **kwargs):
    time.sleep(12)
    return _sgd_momentum_step(*args, **kwargs)
