r"""Reference forward and backward passes, written as the math (float64 by default).

Softmax cross-entropy over $N$ rows of $C$ logits $x$ with labels $y$:
    $\ell = \frac1N \sum_i \big(\operatorname{lse}(x_i) - x_{i, y_i}\big)$, with
    $\operatorname{lse}(x_i) = m_i + \log \sum_j e^{x_{ij} - m_i}$, $m_i = \max_j x_{ij}$ (stable for any $|x|$);
    $\partial \ell / \partial x_{ij} = \big(\operatorname{softmax}(x_i)_j - [j = y_i]\big) / N$.
Linear layer $o = xW + b$:  $dx = d o\, W^\top$, $dW = x^\top d o$, $db = \sum_i d o_i$.
ReLU: $dx = d o \cdot [x > 0]$ (0 at exactly 0).
Layer norm over the last dimension ($D$ features, biased variance):
    $\mu = \bar x$, $\sigma^2 = \overline{(x-\mu)^2}$, $r = (\sigma^2 + \epsilon)^{-1/2}$, $\hat x = (x - \mu) r$,
    $y = \gamma \hat x + \beta$;
    $d\beta = \sum_i dy_i$, $d\gamma = \sum_i dy_i \hat x_i$, $g = dy\,\gamma$,
    $dx = r\,\big(g - \bar g - \hat x\, \overline{g \hat x}\big)$ (means over the $D$ features of a row).
"""

from __future__ import annotations

import torch
from torch import Tensor


def softmax_cross_entropy(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    n = logits.shape[0]
    m = logits.max(dim=1, keepdim=True).values
    shifted = logits - m
    lse = shifted.exp().sum(dim=1, keepdim=True).log()
    rows = torch.arange(n, device=logits.device)
    loss = (lse.squeeze(1) - shifted[rows, labels]).mean()
    probs = (shifted - lse).exp()
    dlogits = probs
    dlogits[rows, labels] -= 1.0
    return loss, dlogits / n


def linear_forward(x: Tensor, W: Tensor, b: Tensor) -> Tensor:
    return x @ W + b


def linear_backward(dout: Tensor, x: Tensor, W: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return dout @ W.T, x.T @ dout, dout.sum(dim=0)


def relu_backward(dout: Tensor, x: Tensor) -> Tensor:
    return dout * (x > 0).to(dout.dtype)


def layer_norm_forward(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    return (x - mu) * torch.rsqrt(var + eps) * gamma + beta


def layer_norm_backward(dy: Tensor, x: Tensor, gamma: Tensor, beta: Tensor,
                        eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    xhat = (x - mu) * rstd
    g = dy * gamma
    dx = rstd * (g - g.mean(dim=-1, keepdim=True) - xhat * (g * xhat).mean(dim=-1, keepdim=True))
    return dx, (dy * xhat).sum(dim=0), dy.sum(dim=0)


def mlp_loss_and_grads(params: dict[str, Tensor], x: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Forward through linear+ReLU layers (linear last), mean softmax cross-entropy, backward."""
    depth = len(params) // 2
    acts, pre = [x], []
    h = x
    for i in range(1, depth + 1):
        z = linear_forward(h, params[f"W{i}"], params[f"b{i}"])
        pre.append(z)
        h = z.clamp_min(0) if i < depth else z
        acts.append(h)
    loss, d = softmax_cross_entropy(h, labels)
    grads: dict[str, Tensor] = {}
    for i in range(depth, 0, -1):
        if i < depth:
            d = relu_backward(d, pre[i - 1])
        d_in, grads[f"W{i}"], grads[f"b{i}"] = linear_backward(d, acts[i - 1], params[f"W{i}"], params[f"b{i}"])
        d = d_in
    return loss, {k: grads[k] for k in params}
