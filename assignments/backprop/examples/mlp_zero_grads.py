"""Degenerate: mlp_loss_and_grads returns the right loss but every gradient is zeros of the
right shape (no backward pass). The keys-and-shapes test pays only right gradients. Found
by the review in docs/known-gaps (it kept 2 points)."""
import torch
import torch.nn.functional as F


def softmax_cross_entropy(logits, labels):
    x = logits.double()
    lse = torch.logsumexp(x, dim=1)
    onehot = F.one_hot(labels, num_classes=x.shape[1]).to(x.dtype)
    loss = (lse - (x * onehot).sum(1)).mean()
    d = (torch.exp(x - lse[:, None]) - onehot) / x.shape[0]
    return loss.to(logits.dtype), d.to(logits.dtype)


def linear_forward(x, W, b):
    return torch.einsum("nd,de->ne", x, W) + b


def linear_backward(dout, x, W, b):
    return torch.einsum("ne,de->nd", dout, W), torch.einsum("nd,ne->de", x, dout), torch.einsum("ne->e", dout)


def relu_backward(dout, x):
    return torch.where(x > 0, dout, torch.zeros_like(dout))


def layer_norm_forward(x, gamma, beta, eps=1e-5):
    var, mu = torch.var_mean(x, dim=-1, keepdim=True, unbiased=False)
    return torch.addcmul(beta, (x - mu) * torch.rsqrt(var + eps), gamma)


def layer_norm_backward(dy, x, gamma, beta, eps=1e-5):
    d = x.shape[-1]
    mu = x.mean(-1, keepdim=True)
    rstd = ((x - mu).pow(2).sum(-1, keepdim=True) / d + eps).rsqrt()
    xhat = (x - mu) * rstd
    dxhat = dy * gamma
    dx = (d * dxhat - dxhat.sum(-1, keepdim=True) - xhat * (dxhat * xhat).sum(-1, keepdim=True)) * rstd / d
    return dx, (dy * xhat).sum(0), dy.sum(0)


def mlp_loss_and_grads(params, x, labels):
    names = sorted({k[1:] for k in params}, key=int)
    hs, zs = [x], []
    for j, i in enumerate(names):
        z = linear_forward(hs[-1], params["W" + i], params["b" + i])
        zs.append(z)
        hs.append(z if j == len(names) - 1 else z.relu())
    loss, d = softmax_cross_entropy(hs[-1], labels)
    return loss, {k: torch.zeros_like(v) for k, v in params.items()}  # DEGENERATE: no backward
    grads = {}
    for j in reversed(range(len(names))):
        i = names[j]
        if j < len(names) - 1:
            d = relu_backward(d, zs[j])
        d, grads["W" + i], grads["b" + i] = linear_backward(d, hs[j], params["W" + i], params["b" + i])
    return loss, grads
