"""Red team (issue 25): mlp_loss_and_grads hands its tensors to a second Python started
inside the sandbox, where F.linear, F.cross_entropy and .backward() run without the
child's guard. The sandbox refuses every new program (seccomp on execve): the MLP loses
its points, as forbidden_autograd.py does."""
import io
import subprocess
import sys

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



WORKER = r'''
import io, sys, torch
import torch.nn.functional as F
params, x, labels = torch.load(io.BytesIO(sys.stdin.buffer.read()))
ps = {k: v.clone().requires_grad_(True) for k, v in params.items()}
h = x
n = len(ps) // 2
for i in range(1, n + 1):
    h = F.linear(h, ps[f"W{i}"].T, ps[f"b{i}"])
    if i < n:
        h = F.relu(h)
loss = F.cross_entropy(h, labels)
loss.backward()
b = io.BytesIO()
torch.save((loss.detach(), {k: v.grad for k, v in ps.items()}), b)
sys.stdout.buffer.write(b.getvalue())
'''


def mlp_loss_and_grads(params, x, labels):
    b = io.BytesIO()
    torch.save((params, x, labels), b)
    out = subprocess.run([sys.executable, "-c", WORKER], input=b.getvalue(), capture_output=True, check=True)
    return torch.load(io.BytesIO(out.stdout))
