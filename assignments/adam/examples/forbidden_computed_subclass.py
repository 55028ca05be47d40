"""Hostile (issue 13): AdamW is torch's own, subclassed through a name built from strings
(`getattr(torch.optim, "Adam" + "W")`), so the source names no forbidden class. torch's
AdamW raises in the sandbox (its methods are replaced in place before student code runs),
so the subclass cannot train: the AdamW tests earn nothing, and the computed getattr is
flagged for review. The step functions are the correct alternative's."""
import torch
from torch import Tensor




class AdamW(getattr(torch.optim, "Adam" + "W")):
    pass


def sgd_momentum_step(param: Tensor, grad: Tensor, buf, lr, momentum=0.0, dampening=0.0,
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
