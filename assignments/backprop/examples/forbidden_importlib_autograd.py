"""Hostile (issue 13): softmax_cross_entropy takes torch's cross_entropy through a computed
name and __wrapped__; layer_norm_backward imports torch.autograd by a computed name and
turns inference mode off to use it. Both raise inside the sandbox (the operators behind
cross_entropy at the dispatcher; autograd at the engine), so those functions earn
nothing; both constructs are flagged for review. The rest is the correct alternative."""
import importlib

import torch
import torch.nn.functional as F


def softmax_cross_entropy(logits, labels):
    ce = getattr(F, "cross_" + "entropy")
    ce = getattr(ce, "__wrapped__", ce)
    loss = ce(logits, labels)
    p = torch.exp(logits - logits.logsumexp(dim=1, keepdim=True))
    p[torch.arange(len(labels)), labels] -= 1
    return loss, p / len(labels)


def layer_norm_backward(dy, x, gamma, beta, eps=1e-5):
    ag = importlib.import_module("torch.auto" + "grad")
    with torch.inference_mode(False), torch.enable_grad():
        x_, g_, b_ = (t.detach().clone().requires_grad_() for t in (x, gamma, beta))
        mu = x_.mean(-1, keepdim=True)
        var = ((x_ - mu) ** 2).mean(-1, keepdim=True)
        y = (x_ - mu) / torch.sqrt(var + eps) * g_ + b_
        return tuple(t.detach() for t in ag.grad(y, (x_, g_, b_), dy))


def linear_forward(x, W, b):
    return torch.einsum("nd,de->ne", x, W) + b

def linear_backward(dout, x, W, b):
    return torch.einsum("ne,de->nd", dout, W), torch.einsum("nd,ne->de", x, dout), torch.einsum("ne->e", dout)

def relu_backward(dout, x):
    return torch.where(x > 0, dout, torch.zeros_like(dout))

def layer_norm_forward(x, gamma, beta, eps=1e-5):
    var, mu = torch.var_mean(x, dim=-1, keepdim=True, unbiased=False)
    return torch.addcmul(beta, (x - mu) * torch.rsqrt(var + eps), gamma)

def mlp_loss_and_grads(params, x, labels):
    names = sorted({k[1:] for k in params}, key=int)
    hs, zs = [x], []
    for j, i in enumerate(names):
        z = linear_forward(hs[-1], params["W" + i], params["b" + i])
        zs.append(z)
        hs.append(z if j == len(names) - 1 else z.relu())
    loss, d = softmax_cross_entropy(hs[-1], labels)
    grads = {}
    for j in reversed(range(len(names))):
        i = names[j]
        if j < len(names) - 1:
            d = relu_backward(d, zs[j])
        d, grads["W" + i], grads["b" + i] = linear_backward(d, hs[j], params["W" + i], params["b" + i])
    return loss, grads
