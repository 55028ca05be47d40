"""Hostile (issue 13): no AdamW class at all, only torch's own imported under the graded
name; and sgd_momentum_step reaches torch._foreach_add_ through a computed name and
__wrapped__. Both earn nothing: the import binds a forbidden object to a graded name (the
static check), and both routines raise inside the sandbox (the guard). The other step
functions are the correct alternative's."""
import torch
from torch.optim import AdamW  # noqa: F401  (the graded name, bound to torch's class)

def _foreach_add():
    fn = getattr(torch, "_foreach" + "_add_")
    return getattr(fn, "__wrapped__", fn)


def sgd_momentum_step(param, grad, buf, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    _add = _foreach_add()
    d = grad + weight_decay * param if weight_decay else grad.clone()
    if momentum:
        if buf is None:
            buf = d.clone()
        else:
            buf = buf * momentum
            _add([buf], [d * (1 - dampening)])
        d = d + momentum * buf if nesterov else buf
    p = param.clone()
    _add([p], [-lr * d])
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
