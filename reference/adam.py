r"""Reference optimizer steps, written as the math of `torch.optim` (float64 by default).

Each function returns new tensors and leaves its inputs alone. Notation: $\theta$ the
parameter, $g$ the gradient, $\lambda$ weight decay, $t$ the step (from 1).

SGD with momentum $\mu$, dampening $\tau$ (torch.optim.SGD):
    $d = g + \lambda\theta$;  $b_1 = d$,  $b_t = \mu b_{t-1} + (1-\tau) d$;
    $d \leftarrow d + \mu b_t$ (Nesterov) or $d \leftarrow b_t$;  $\theta \leftarrow \theta - \eta d$.
Adagrad (torch.optim.Adagrad):
    $\eta_t = \eta / (1 + (t-1)\,\text{lr\_decay})$;  $d = g + \lambda\theta$;  $s \leftarrow s + d^2$;
    $\theta \leftarrow \theta - \eta_t\, d / (\sqrt{s} + \epsilon)$.
RMSprop (torch.optim.RMSprop, no momentum, not centered):
    $d = g + \lambda\theta$;  $v \leftarrow \alpha v + (1-\alpha) d^2$;  $\theta \leftarrow \theta - \eta\, d / (\sqrt{v} + \epsilon)$.
Adam / AdamW (torch.optim.Adam, torch.optim.AdamW):
    Adam: $d = g + \lambda\theta$;  AdamW: $d = g$ and $\theta \leftarrow \theta(1 - \eta\lambda)$ first;
    $m \leftarrow \beta_1 m + (1-\beta_1) d$;  $v \leftarrow \beta_2 v + (1-\beta_2) d^2$;
    $\theta \leftarrow \theta - \frac{\eta}{1-\beta_1^t}\, m / (\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon)$.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sgd_momentum_step(param: Tensor, grad: Tensor, buf: Tensor | None, lr: float, momentum: float = 0.0,
                      dampening: float = 0.0, nesterov: bool = False,
                      weight_decay: float = 0.0) -> tuple[Tensor, Tensor | None]:
    d = grad + weight_decay * param if weight_decay else grad.clone()
    if momentum != 0.0:
        buf = d.clone() if buf is None else momentum * buf + (1.0 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    return param - lr * d, buf


def adagrad_step(param: Tensor, grad: Tensor, state_sum: Tensor, step: int, lr: float, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, eps: float = 1e-10) -> tuple[Tensor, Tensor]:
    clr = lr / (1.0 + (step - 1) * lr_decay)
    d = grad + weight_decay * param if weight_decay else grad
    state_sum = state_sum + d * d
    return param - clr * d / (state_sum.sqrt() + eps), state_sum


def rmsprop_step(param: Tensor, grad: Tensor, square_avg: Tensor, lr: float, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0) -> tuple[Tensor, Tensor]:
    d = grad + weight_decay * param if weight_decay else grad
    square_avg = alpha * square_avg + (1.0 - alpha) * d * d
    return param - lr * d / (square_avg.sqrt() + eps), square_avg


def adam_step(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: int, lr: float,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
              decoupled: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    if decoupled:
        param = param * (1.0 - lr * weight_decay)
        d = grad
    else:
        d = grad + weight_decay * param if weight_decay else grad
    exp_avg = beta1 * exp_avg + (1.0 - beta1) * d
    exp_avg_sq = beta2 * exp_avg_sq + (1.0 - beta2) * d * d
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    denom = exp_avg_sq.sqrt() / math.sqrt(bc2) + eps
    return param - (lr / bc1) * exp_avg / denom, exp_avg, exp_avg_sq


def in_float64(fn, *args, **kwargs):
    """Run a reference on float64 copies of its tensor arguments; results stay float64."""
    conv = [a.detach().to(torch.float64) if isinstance(a, Tensor) else a for a in args]
    kw = {k: v.detach().to(torch.float64) if isinstance(v, Tensor) else v for k, v in kwargs.items()}
    return fn(*conv, **kw)


class AdamW(torch.optim.Optimizer):
    """AdamW built on `adam_step` (decoupled), for checks of the functional form against
    torch.optim.AdamW; the state is kept in the parameters' dtype, as torch does.

    Variants (the Triton kernel, a float64 one in the tests) override `_new_state` and
    `_update` only: the loop over groups, the closure and the skipping of parameters
    without gradient live here once."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _new_state(self, p: Tensor) -> dict:
        return {"step": 0, "exp_avg": torch.zeros_like(p, memory_format=torch.contiguous_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.contiguous_format)}

    def _update(self, p: Tensor, st: dict, lr, beta1, beta2, eps, weight_decay) -> None:
        new_p, st["exp_avg"], st["exp_avg_sq"] = adam_step(
            p, p.grad, st["exp_avg"], st["exp_avg_sq"], st["step"], lr, beta1, beta2, eps, weight_decay,
            decoupled=True)
        p.copy_(new_p)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not self.state[p]:
                    self.state[p] = self._new_state(p)
                st = self.state[p]
                st["step"] += 1
                self._update(p, st, group["lr"], b1, b2, group["eps"], group["weight_decay"])
        return loss
