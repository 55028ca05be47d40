"""Red team (issue 25): torch.optim.SGD and torch.optim.AdamW run in a second Python
started inside the sandbox (`subprocess.Popen([sys.executable, "-c", WORKER])`), where the
child's guard was never installed. The sandbox refuses every new program (seccomp on
execve), so sgd_momentum_step and AdamW raise: they lose their points, as if forbidden."""
import io
import subprocess
import sys

import torch

WORKER = r'''
import io, sys, torch
while True:
    n = sys.stdin.buffer.readline()
    if not n:
        break
    msg = torch.load(io.BytesIO(sys.stdin.buffer.read(int(n))))
    if msg["op"] == "sgd":
        p = msg["param"].clone().requires_grad_(True)
        opt = torch.optim.SGD([p], **msg["hp"])
        if msg["buf"] is not None:
            opt.state[p]["momentum_buffer"] = msg["buf"].clone()
        p.grad = msg["grad"].clone()
        opt.step()
        out = {"param": p.detach(), "buf": opt.state[p].get("momentum_buffer")}
    else:
        params = [t.clone().requires_grad_(True) for t in msg["params"]]
        opt = torch.optim.AdamW(params, **msg["hp"])
        for p, g in zip(params, msg["grads"]):
            p.grad = g
        opt.step()
        out = {"params": [p.detach() for p in params]}
    b = io.BytesIO()
    torch.save(out, b)
    sys.stdout.buffer.write(b"%d\n" % len(b.getvalue()) + b.getvalue())
    sys.stdout.buffer.flush()
'''
_proc = None


def _ask(msg):
    global _proc
    if _proc is None:
        _proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    b = io.BytesIO()
    torch.save(msg, b)
    _proc.stdin.write(b"%d\n" % len(b.getvalue()) + b.getvalue())
    _proc.stdin.flush()
    n = int(_proc.stdout.readline())
    return torch.load(io.BytesIO(_proc.stdout.read(n)))


def sgd_momentum_step(param, grad, buf, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    out = _ask({"op": "sgd", "param": param, "grad": grad, "buf": buf,
                "hp": dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                           weight_decay=weight_decay)})
    return out["param"], out["buf"]


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
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        # Not exact across steps (the worker's state is new each time): enough to show the
        # worker never starts.
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            if not ps:
                continue
            hp = {k: group[k] for k in ("lr", "betas", "eps", "weight_decay")}
            out = _ask({"op": "adamw", "params": [p.detach() for p in ps], "grads": [p.grad for p in ps], "hp": hp})
            for p, q in zip(ps, out["params"]):
                p.copy_(q)
        return None
