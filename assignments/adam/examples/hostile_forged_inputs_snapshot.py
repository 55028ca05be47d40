"""Hostile (issue 13): bug_modifies_inputs (the step functions update their inputs in place),
plus a class body that rewrites the child's call handler so that the inputs it reports
after each call are copies taken before it. The judge no longer asks: a call's tensors
are views of a file it shares with the child, which it reads back itself after the
reply. The same 92 as bug_modifies_inputs; sys.modules and the engine's module name are
flagged for review."""
import sys


class _Patch:
    _server = sys.modules.get("autograder.child.server")
    if _server is not None:
        _orig = _server.Child.call

        def _call(self, req, _orig=_orig):
            import torch

            before = [a.clone() if isinstance(a, torch.Tensor) else a for a in req.args]
            reply = _orig(self, req)
            if req.return_args and reply.ok:
                reply.args_after = before
            return reply

        _server.Child.call = _call


import math
import torch
def sgd_momentum_step(param, grad, buf, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    """One step of torch.optim.SGD; returns (new_param, new_buf). `buf` is None on the first step."""
    d = grad + weight_decay * param if weight_decay != 0 else grad
    if momentum != 0:
        if buf is None:
            buf = d.clone()
        else:
            buf = momentum * buf + (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    return param.sub_(lr * d), buf
def adagrad_step(param, grad, state_sum, step, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
    """One step of torch.optim.Adagrad (step counts from 1); returns (new_param, new_state_sum)."""
    clr = lr / (1 + (step - 1) * lr_decay)
    d = grad + weight_decay * param
    state_sum = state_sum.add_(d * d)
    return param - clr * d / (state_sum.sqrt() + eps), state_sum
def rmsprop_step(param, grad, square_avg, lr, alpha=0.99, eps=1e-8, weight_decay=0.0):
    """One step of torch.optim.RMSprop (no momentum, not centered); returns (new_param, new_square_avg)."""
    d = grad + weight_decay * param
    square_avg = square_avg.mul_(alpha).add_((1 - alpha) * d * d)
    return param - lr * d / (square_avg.sqrt() + eps), square_avg
def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0, decoupled=False):
    """One step of torch.optim.Adam (decoupled=False) or AdamW (decoupled=True).

    Returns (new_param, new_exp_avg, new_exp_avg_sq); `step` counts from 1."""
    if decoupled:
        param = param.mul_(1 - lr * weight_decay)
        d = grad
    else:
        d = grad + weight_decay * param
    exp_avg = exp_avg.mul_(beta1).add_(d, alpha=1 - beta1)
    exp_avg_sq = exp_avg_sq.mul_(beta2).addcmul_(d, d, value=1 - beta2)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    denom = exp_avg_sq.sqrt() / math.sqrt(bias_correction2) + eps
    return param - (lr / bias_correction1) * exp_avg / denom, exp_avg, exp_avg_sq
class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                new_p, state["exp_avg"], state["exp_avg_sq"] = adam_step(
                    p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], group["lr"],
                    beta1, beta2, group["eps"], group["weight_decay"], decoupled=True)
                p.copy_(new_p)
        return loss
X, Y = torch.randn(256, 10), torch.randn(256, 1)
model = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
losses = []
import matplotlib.pyplot as plt
