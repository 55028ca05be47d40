"""AdamW done as Adam + L2: the `decoupled` flag is ignored."""
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
    return param - lr * d, buf
def adagrad_step(param, grad, state_sum, step, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
    """One step of torch.optim.Adagrad (step counts from 1); returns (new_param, new_state_sum)."""
    clr = lr / (1 + (step - 1) * lr_decay)
    d = grad + weight_decay * param
    state_sum = state_sum + d * d
    return param - clr * d / (state_sum.sqrt() + eps), state_sum
def rmsprop_step(param, grad, square_avg, lr, alpha=0.99, eps=1e-8, weight_decay=0.0):
    """One step of torch.optim.RMSprop (no momentum, not centered); returns (new_param, new_square_avg)."""
    d = grad + weight_decay * param
    square_avg = alpha * square_avg + (1 - alpha) * d * d
    return param - lr * d / (square_avg.sqrt() + eps), square_avg
def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0, decoupled=False):
    """One step of torch.optim.Adam (decoupled=False) or AdamW (decoupled=True).

    Returns (new_param, new_exp_avg, new_exp_avg_sq); `step` counts from 1."""
    d = grad + weight_decay * param
    exp_avg = beta1 * exp_avg + (1 - beta1) * d
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * d * d
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
