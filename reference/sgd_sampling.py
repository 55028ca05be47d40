r"""Reference samplers for SGD and minibatch SGD on least squares (float64).

Schemes for `sample_batches(n, b, K, scheme, seed)` (an epoch is $\lfloor n/b \rfloor$ batches):
- uniform: every index i.i.d. uniform on $\{0..n-1\}$, with replacement;
- random_reshuffling: a fresh uniform permutation each epoch, cut into consecutive
  batches, its last $n \bmod b$ entries dropped;
- shuffle_once: one uniform permutation, reused every epoch;
- cyclic: $0, 1, \dots, n-1$ every epoch.
Importance sampling: $p_i = L_i / \sum_j L_j$; draw $i_1..i_b$ i.i.d. from $p$ and return
$\frac1b \sum_k g_{i_k} / (n p_{i_k})$, an unbiased estimate of $\frac1n \sum_i g_i$
(its variance is minimal among such $p$ when $p_i \propto \lVert g_i \rVert$).
Least squares: $f(x) = \lVert Ax - y\rVert^2 / (2n)$, step $x \leftarrow x - \eta_t A_S^\top (A_S x - y_S) / |S|$.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SCHEMES = ("uniform", "random_reshuffling", "shuffle_once", "cyclic")


def sample_batches(n: int, batch_size: int, num_batches: int, scheme: str, seed: int) -> Tensor:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}")
    if batch_size > n:
        raise ValueError("batch_size > n")
    g = torch.Generator().manual_seed(seed)
    if scheme == "uniform":
        return torch.randint(0, n, (num_batches, batch_size), generator=g, dtype=torch.int64)
    per_epoch = n // batch_size
    epochs = math.ceil(num_batches / per_epoch)
    once = torch.randperm(n, generator=g) if scheme == "shuffle_once" else torch.arange(n)
    rows = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g) if scheme == "random_reshuffling" else once
        rows.append(perm[: per_epoch * batch_size].reshape(per_epoch, batch_size))
    return torch.cat(rows)[:num_batches].to(torch.int64)


def importance_probabilities(lipschitz: Tensor) -> Tensor:
    if not bool(torch.isfinite(lipschitz).all()) or bool((lipschitz <= 0).any()):
        raise ValueError("Lipschitz constants must be positive and finite")
    return lipschitz / lipschitz.sum()


def importance_sampled_gradient(per_sample_grads: Tensor, probs: Tensor, batch_size: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    n = per_sample_grads.shape[0]
    idx = torch.multinomial(probs, batch_size, replacement=True, generator=g)
    return (per_sample_grads[idx] / (n * probs[idx, None])).mean(0)


def least_squares_loss(A: Tensor, y: Tensor, x: Tensor) -> float:
    r = A @ x - y
    return float(r @ r) / (2 * A.shape[0])


def sgd_on_batches(A: Tensor, y: Tensor, x0: Tensor, lr, batches: Tensor, steps_per_epoch: int) -> Tensor:
    """Minibatch SGD along given batches; f at x0 and after every epoch (float64)."""
    A, y, x = A.double(), y.double(), x0.double().clone()
    losses = [least_squares_loss(A, y, x)]
    for t, S in enumerate(batches):
        step = lr[t] if isinstance(lr, list | tuple) else lr
        As = A[S]
        x = x - step * (As.T @ (As @ x - y[S])) / len(S)
        if (t + 1) % steps_per_epoch == 0:
            losses.append(least_squares_loss(A, y, x))
    return torch.tensor(losses, dtype=torch.float64)


def sgd_least_squares(A: Tensor, y: Tensor, x0: Tensor, lr, num_epochs: int, batch_size: int, scheme: str,
                      seed: int) -> Tensor:
    n = A.shape[0]
    per_epoch = n // batch_size
    batches = sample_batches(n, batch_size, num_epochs * per_epoch, scheme, seed)
    return sgd_on_batches(A, y, x0, lr, batches, per_epoch)
