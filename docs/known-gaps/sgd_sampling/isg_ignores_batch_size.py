"""DEGENERATE: importance_sampled_gradient ignores `batch_size`: it always draws ONE index
from probs and returns that single weighted gradient g_i / (n p_i), whatever batch_size is
(variance batch_size times too large; a minibatch never averages anything).

Passes wrongly:
- test_importance_sampled_gradient_shape_and_seed (3): shape [d] and reproducible;
- test_importance_sampled_gradient_is_unbiased (5): one draw is still unbiased; with the
  test's seeds 0..2999 the mean is off by 0.012 / 0.021, against Bernstein radii 0.154 / 0.075
  (the radius is computed for 12000 draws but the check only looks at the mean);
- the two batch_size = 1 tests (single draws, variance: 9 points) are unaffected by the bug.
Expected score: 100 (17 points of importance_sampled_gradient, of which the batch behaviour is
never checked).
Sharper check: a variance check at batch_size > 1 (e.g. batch_size 8: mean squared error near
var_imp / 8, between var_imp / 16 and var_imp / 4), or at batch_size 2 check that every
estimate is one of the n(n+1)/2 averages (X_i + X_j) / 2.
"""
import torch

SCHEMES = {"uniform", "random_reshuffling", "shuffle_once", "cyclic"}


def _perm(n, g):
    return torch.argsort(torch.rand(n, generator=g))


def sample_batches(n, batch_size, num_batches, scheme, seed):
    if scheme not in SCHEMES or batch_size > n:
        raise ValueError("bad scheme or batch size")
    g = torch.Generator().manual_seed(seed)
    per_epoch = n // batch_size
    once = _perm(n, g) if scheme == "shuffle_once" else None
    rows = []
    for k in range(num_batches):
        if scheme == "uniform":
            rows.append(torch.randint(n, (batch_size,), generator=g))
            continue
        if k % per_epoch == 0:
            order = {"random_reshuffling": lambda: _perm(n, g), "shuffle_once": lambda: once,
                     "cyclic": lambda: torch.arange(n)}[scheme]()
        j = k % per_epoch
        rows.append(order[j * batch_size:(j + 1) * batch_size])
    return torch.stack(rows).long() if rows else torch.zeros(0, batch_size, dtype=torch.long)


def importance_probabilities(lipschitz):
    if not bool(torch.all(torch.isfinite(lipschitz) & (lipschitz > 0))):
        raise ValueError("need positive, finite constants")
    return lipschitz / torch.sum(lipschitz)


def importance_sampled_gradient(per_sample_grads, probs, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    cdf = torch.cumsum(probs, 0)
    # DEGENERATE: one draw, whatever batch_size says
    idx = torch.searchsorted(cdf, torch.rand(1, generator=g, dtype=cdf.dtype) * cdf[-1]).clamp(max=len(probs) - 1)
    weights = 1.0 / (len(probs) * probs[idx])
    return (weights[:, None] * per_sample_grads[idx]).sum(0)


def sgd_least_squares(A, y, x0, lr, num_epochs, batch_size, scheme, seed):
    n = len(y)
    steps = n // batch_size
    B = sample_batches(n, batch_size, num_epochs * steps, scheme, seed)
    lrs = list(lr) if isinstance(lr, (list, tuple)) else [lr] * len(B)
    x = x0.to(torch.float64).clone()
    loss = lambda x: 0.5 * torch.mean((A.double() @ x - y.double()) ** 2)
    out = [loss(x)]
    for e in range(num_epochs):
        for s in range(steps):
            t = e * steps + s
            S = B[t]
            r = A[S].double() @ x - y[S].double()
            x -= lrs[t] * torch.einsum("bd,b->d", A[S].double(), r) / batch_size
        out.append(loss(x))
    return torch.stack(out).double()
