"""Importance weights, but indices drawn uniformly: biased."""
import math
import torch
def sample_batches(n, batch_size, num_batches, scheme, seed):
    """int64[num_batches, batch_size] of indices in 0..n-1."""
    if scheme not in ("uniform", "random_reshuffling", "shuffle_once", "cyclic"):
        raise ValueError(f"unknown scheme {scheme!r}")
    if batch_size > n:
        raise ValueError("batch_size must not exceed n")
    g = torch.Generator().manual_seed(seed)
    if scheme == "uniform":
        return torch.randint(0, n, (num_batches, batch_size), generator=g)
    per_epoch = n // batch_size
    fixed = torch.randperm(n, generator=g) if scheme == "shuffle_once" else torch.arange(n)
    out = []
    while len(out) < num_batches:
        perm = torch.randperm(n, generator=g) if scheme == "random_reshuffling" else fixed
        out.extend(perm[: per_epoch * batch_size].reshape(per_epoch, batch_size))
    return torch.stack(out[:num_batches]) if num_batches else torch.empty(0, batch_size, dtype=torch.int64)
def importance_probabilities(lipschitz):
    if not torch.isfinite(lipschitz).all() or (lipschitz <= 0).any():
        raise ValueError("Lipschitz constants must be positive and finite")
    return lipschitz / lipschitz.sum()
def importance_sampled_gradient(per_sample_grads, probs, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    n = per_sample_grads.shape[0]
    idx = torch.randint(0, n, (batch_size,), generator=g)
    return (per_sample_grads[idx] / (n * probs[idx]).unsqueeze(1)).mean(dim=0)
def sgd_least_squares(A, y, x0, lr, num_epochs, batch_size, scheme, seed):
    n = A.shape[0]
    per_epoch = n // batch_size
    batches = sample_batches(n, batch_size, num_epochs * per_epoch, scheme, seed)
    A, y, x = A.double(), y.double(), x0.double().clone()

    def f(x):
        r = A @ x - y
        return (r @ r / (2 * n)).item()

    losses = [f(x)]
    for t, S in enumerate(batches):
        step = lr[t] if isinstance(lr, (list, tuple)) else lr
        x = x - step * A[S].T @ (A[S] @ x - y[S]) / len(S)
        if (t + 1) % per_epoch == 0:
            losses.append(f(x))
    return torch.tensor(losses, dtype=torch.float64)
n, d = 64, 8
A = torch.randn(n, d, generator=g, dtype=torch.float64)
y = A @ torch.randn(d, generator=g, dtype=torch.float64) + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
x_star = torch.linalg.lstsq(A, y).solution
x0 = torch.zeros(d, dtype=torch.float64)
