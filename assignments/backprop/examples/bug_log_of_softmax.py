"""log(softmax(x)) in two steps: a probability that underflows to 0 gives -inf."""
import math
import torch
def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy over the batch and its gradient w.r.t. logits: (loss[], dlogits[N, C])."""
    n = logits.shape[0]
    shifted = logits - logits.max(dim=1, keepdim=True).values
    probs = shifted.exp() / shifted.exp().sum(dim=1, keepdim=True)
    log_probs = probs.log()
    rows = torch.arange(n, device=logits.device)
    loss = -log_probs[rows, labels].mean()
    dlogits = log_probs.exp()
    dlogits[rows, labels] -= 1
    return loss, dlogits / n
def linear_forward(x, W, b):
    return x @ W + b
def linear_backward(dout, x, W, b):
    """(dx, dW, db) for out = x @ W + b."""
    return dout @ W.T, x.T @ dout, dout.sum(dim=0)
def relu_backward(dout, x):
    return dout * (x > 0).to(dout.dtype)
def layer_norm_forward(x, gamma, beta, eps=1e-5):
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * gamma + beta
def layer_norm_backward(dy, x, gamma, beta, eps=1e-5):
    """(dx, dgamma, dbeta) of layer_norm_forward."""
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    rstd = 1 / torch.sqrt(var + eps)
    xhat = (x - mu) * rstd
    g = dy * gamma
    dx = rstd * (g - g.mean(dim=-1, keepdim=True) - xhat * (g * xhat).mean(dim=-1, keepdim=True))
    return dx, (dy * xhat).sum(dim=0), dy.sum(dim=0)
def mlp_loss_and_grads(params, x, labels):
    depth = len(params) // 2
    inputs, pre = [], []
    h = x
    for i in range(1, depth + 1):
        inputs.append(h)
        z = linear_forward(h, params[f"W{i}"], params[f"b{i}"])
        pre.append(z)
        h = torch.clamp(z, min=0) if i < depth else z
    loss, d = softmax_cross_entropy(h, labels)
    grads = {}
    for i in range(depth, 0, -1):
        if i < depth:
            d = relu_backward(d, pre[i - 1])
        d, grads[f"W{i}"], grads[f"b{i}"] = linear_backward(d, inputs[i - 1], params[f"W{i}"], params[f"b{i}"])
    return loss, {k: grads[k] for k in params}
def finite_difference_check(f, x, analytic, h=1e-6, samples=20):
    """Largest relative error between `analytic` (df/dx) and central differences of the
    scalar function f at `samples` random coordinates of x (float64)."""
    worst = 0.0
    flat = x.reshape(-1)
    for k in torch.randperm(flat.numel())[:samples].tolist():
        old = flat[k].item()
        flat[k] = old + h
        up = float(f(x))
        flat[k] = old - h
        down = float(f(x))
        flat[k] = old
        numeric = (up - down) / (2 * h)
        exact = analytic.reshape(-1)[k].item()
        worst = max(worst, abs(numeric - exact) / max(1e-8, abs(numeric) + abs(exact)))
    return worst
logits = torch.randn(4, 6, dtype=torch.float64)
labels = torch.randint(0, 6, (4,))
x = torch.randn(3, 5, dtype=torch.float64)
gamma, beta, dy = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
